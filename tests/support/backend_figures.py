"""Counts what the hostile-documents-on-the-backend suite saw, for the
session's closing figures (docs/explanation/guarantees.md quotes them)."""

from __future__ import annotations

from collections import Counter

SEEN: Counter[str] = Counter()


def summary() -> str | None:
    if not SEEN["runs"]:
        return None
    return (
        f"hostile documents on the backend: {SEEN['documents']:,} jobs and "
        f"{SEEN['collections']:,} collection documents "
        f"inserted under a running watcher, then swept ({SEEN['refused']:,} refused by the backend); "
        f"{SEEN['changed']:,} changed, all by writes the rules justify; {SEEN['completed']:,} completed; "
        f"{SEEN['skipped']:,} skipped, each logged once per reason; 0 exceptions escaped, the loop stayed ready "
        f"and a normal job inserted afterwards completed"
    )
