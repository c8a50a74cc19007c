"""Where work comes from: the change stream (source, reader) and the sweep, both feeding the same queue."""
