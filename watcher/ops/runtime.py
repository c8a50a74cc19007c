"""How a long-running watcher's process is set up: ``jobwatch run`` calls
``tune()`` once, before the watcher starts (the benchmarks, which run the
watcher's hot path in processes of their own, do the same).

Python's cyclic garbage collector starts a young collection after every
2,000 container objects allocated and not yet freed, and an older one every
tenth of those. The watcher allocates a few containers per change event (the
decoded event's documents) and holds them until the job is evaluated, a few
milliseconds: reference counting frees them, and the collector, walking
every young object each time, finds nothing to free. At 25,000 events/s that
was a young collection every few milliseconds and an older one, walking
every batch still queued, several times a second: about a fifth of the
process's CPU (``bench/paced.py``). With the first threshold at 50,000 the
collections are 25 times rarer and still run: a reference cycle (a caught
exception holding its frame, a task and its callbacks) is freed after at
most 50,000 allocations instead of 2,000 (the memory benchmark runs with
this setting and shows the process flat).
"""

from __future__ import annotations

import gc

#: ``gc.set_threshold``: young collections after this many allocations, then
#: one of the middle generation every 20 of them, the oldest every 10 of those.
GC_THRESHOLDS = (50_000, 20, 10)


def tune() -> None:
    """Set the process up for the watcher's hot path (idempotent)."""
    gc.set_threshold(*GC_THRESHOLDS)
