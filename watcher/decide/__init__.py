"""From a job's newest document to one conditional update: coalescing, dispatch, update documents."""
