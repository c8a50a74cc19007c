"""Which stage counters have stood still: the evidence path A needs.

Path A raises a stage's counter from the number of items in the job's
collection document. A consumer pushes its item to the collection and then
``$inc``s the counter: between the two, the collection is one ahead, and
raising the counter to it would count that item twice (the consumer's own
``$inc`` lands on top). So path A only touches a stage whose counter and
whose collection count have both stood still for ``quiet_s``: a consumer
that is still working moves them, and one whose increments were lost (the
seed's stuck jobs) leaves them still. A consumer between its push and its
increment shows a collection count younger than ``quiet_s``.

Observations come from the stream (every event of a job with a
``collectionId``: path A never applies to one without) and from every
sweep's read. Pure: the caller passes ``now``. It holds the open jobs only: a
job seen finished (Completed, Failed or Cancelled, in any spelling) is
forgotten at once, since path A never touches it again; without that every
job the stream ever saw stayed remembered, and the watcher's memory grew with
the events (about 34 MB per million events at 10,000 busy jobs) up to the
cap. Bounded besides: beyond ``max_jobs`` open jobs the oldest are forgotten
first (a forgotten stage just waits one more quiet period).
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Mapping
from typing import Any

from rules import status as job_status

#: Jobs remembered at most (an OrderedDict, oldest dropped first).
MAX_JOBS = 100_000


class CounterWatch:
    def __init__(self, *, quiet_s: float, max_jobs: int = MAX_JOBS) -> None:
        self._quiet_s = quiet_s
        self._max_jobs = max_jobs
        # job -> stage -> (counter as stored: a plain int, else its repr; first seen at that value)
        self._seen: collections.OrderedDict[Hashable, dict[str, tuple[int | str, float]]] = collections.OrderedDict()
        # job -> stage -> (collection count, first seen at that count)
        self._counts: dict[Hashable, dict[str, tuple[int, float]]] = {}

    def observe(self, key: Hashable, doc: Mapping[str, Any], now: float) -> None:
        """Remember ``doc``'s stage counters; a changed counter restarts its
        quiet period. A finished job is forgotten instead."""
        if job_status.parse(doc.get("status")) in job_status.TERMINAL:
            self.forget(key)
            return
        stages = doc.get("stages")
        if not isinstance(stages, Mapping):
            return
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = {}
            if len(self._seen) > self._max_jobs:
                old, _ = self._seen.popitem(last=False)
                self._counts.pop(old, None)
        for name, stage in stages.items():
            if not isinstance(name, str) or not (type(stage) is dict or isinstance(stage, Mapping)):
                continue
            counter = stage.get("completedItems")
            # repr: any BSON type compares (1, 1.0, True, Int64(1) and "1" all differ); a plain
            # int, the common case, as itself: it equals only the same int, as its repr would.
            value = counter if type(counter) is int else repr(counter)
            before = seen.get(name)
            if before is None or before[0] != value:
                seen[name] = (value, now)

    def settled(self, key: Hashable, doc: Mapping[str, Any], counts: Mapping[str, int], now: float) -> frozenset[str]:
        """The stages of ``counts`` whose counter (in ``doc``) and collection
        count have both stood still for ``quiet_s``; this read counts as an
        observation of both."""
        self.observe(key, doc, now)
        seen = self._seen.get(key)
        if seen is None:  # finished, or no stages to watch: nothing settles, nothing is kept
            return frozenset()
        known = self._counts.setdefault(key, {})
        for name, count in counts.items():
            before = known.get(name)
            if before is None or before[0] != count:
                known[name] = (count, now)
        return frozenset(
            name
            for name in counts
            if name in seen and now - seen[name][1] >= self._quiet_s and now - known[name][1] >= self._quiet_s
        )

    def forget(self, key: Hashable) -> None:
        self._seen.pop(key, None)
        self._counts.pop(key, None)

    def __len__(self) -> int:
        """Jobs remembered."""
        return len(self._seen)
