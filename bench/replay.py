"""The watcher's hot path with the database removed: change events replayed
through decode, coalescing (``JobQueue``), rules and update building.

Used by ``throughput`` (CPU per event), ``memory`` (RSS over a million
events) and ``--profile`` (where the time goes). The events have the shape
the watcher's pipeline gives it (``documentKey``, ``clusterTime``,
``fullDocument`` projected to what the rules read); ``record()`` takes real
ones from the embedded engine so the shape can be checked against them.

The loop does per event what ``StreamReader`` and ``Dispatcher`` do: decode,
note the stage counters for path A (``CounterWatch.observe``), ``offer``,
then ``take`` until nothing is ready (evaluate, rate-limit
progress with ``progress_allowed_at``/``defer``, ask the progress budget,
build the update, ``finish``),
then ``next_ready_at`` as the dispatcher does before it sleeps. A simulated
clock advances by ``1 / events_per_s`` per event, so rate-limited (deferred)
jobs pile up in the queue as they do in the service. Every update the loop
builds comes back as a change event (the document with its writes applied),
as the watcher's own writes do through the stream: a completed job is last
seen ``Completed``, and its events are counted with the consumers'.
"""

from __future__ import annotations

import cProfile
import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bson import ObjectId, Timestamp

import rules
from rules import Outcome
from watcher.decide import budget, updates
from watcher.decide.coalesce import JobQueue
from watcher.intake import stream
from watcher.intake.counter_watch import CounterWatch
from watcher.storage import store

STAGES = ("thumbnail", "cache")


def events(jobs: int, count: int, *, items: int = 60, seed_time_s: int = 1_760_000_000) -> Iterator[dict[str, Any]]:
    """``count`` update events spread round-robin over ``jobs`` jobs, each a
    fresh document (as the driver decodes one per event): counters grow by
    one per event, a job completes after ``2 * items`` events and starts over
    under a new ``_id`` (so jobs stay busy, as in a steady load)."""
    ids = [ObjectId() for _ in range(jobs)]
    counts = [0] * jobs
    created = dt.datetime(2025, 10, 12, 18, 0, tzinfo=dt.UTC)
    for n in range(count):
        j = n % jobs
        done = counts[j]
        if done >= 2 * items:
            ids[j], counts[j], done = ObjectId(), 0, 0
        counts[j] = done + 1
        first = min(done + 1, items)
        second = max(done + 1 - items, 0)
        job_id = ids[j]
        yield {
            "_id": {"_data": f"{n:016x}"},
            "operationType": "update",
            "documentKey": {"_id": job_id},
            "clusterTime": Timestamp(seed_time_s + n // 1000, n % 1000 + 1),
            "fullDocument": {
                "_id": job_id,
                "jobType": "resume-collection",
                "status": "InProgress",
                "progress": 0,
                "totalItems": 0,
                "completedItems": 0,
                "collectionId": None,
                "createdAt": created,
                "stages": {
                    "thumbnail": {"status": "Completed" if first >= items and second > 0 else "InProgress", "progress": 0, "totalItems": items, "completedItems": first},
                    "cache": {"status": "InProgress", "progress": 0, "totalItems": items, "completedItems": second},
                },
            },
        }


@dataclass
class Tally:
    events: int = 0
    evaluations: int = 0
    updates_built: int = 0
    deferred: int = 0
    over_budget: int = 0  # progress writes the budget refused (the work is finished unwritten)
    echo_events: int = 0  # of ``events``: the watcher's own writes seen back through the stream
    jobs_completed: int = 0  # completion updates built: each finished job makes room for a new one
    cpu_s: float = 0.0
    wall_s: float = 0.0
    max_pending_jobs: int = 0

    @property
    def cpu_us_per_event(self) -> float:
        return 1e6 * self.cpu_s / self.events if self.events else float("nan")


class HotPath:
    """The replay loop's state: one queue, one policy, a simulated clock."""

    def __init__(self, *, events_per_s: float, max_jobs: int = 100_000, progress_interval_s: float = 1.0, quiet_s: float = 60.0) -> None:
        self.queue = JobQueue(max_jobs=max_jobs, progress_interval_s=progress_interval_s)
        self.policy = rules.Policy()
        self.budget = budget.ProgressBudget()
        self.counters = CounterWatch(quiet_s=quiet_s)
        self._echoes: list[dict[str, Any]] = []
        self._echo_seq = 0
        self.step_s = 1.0 / events_per_s
        self.now = 0.0
        self.tally = Tally()

    def feed(self, event: dict[str, Any]) -> None:
        self._feed(event)
        while self._echoes:
            echo = self._echoes.pop()
            self.tally.echo_events += 1
            self._feed(echo)

    def _feed(self, event: dict[str, Any]) -> None:
        # decode: as StreamReader._handle
        when = stream.event_time_s(event)
        doc = event.get("fullDocument")
        key = store.job_key(event.get("documentKey", {}).get("_id"))
        if doc is None or key is None:
            self.queue.record(event["_id"])
            return
        self.counters.observe(key, doc, self.now)
        if not self.queue.offer(key, doc, event["_id"], when):
            raise RuntimeError("queue full: raise max_jobs for this replay")
        self.tally.events += 1
        self.budget.credit()
        # dispatch: as Dispatcher._next_work / _process, with the write removed
        queue, now = self.queue, self.now
        while (work := queue.take(now)) is not None:
            result = rules.evaluate(work.doc, policy=self.policy)
            self.tally.evaluations += 1
            if result.writes:
                if result.outcome is Outcome.PROGRESS:
                    allowed_at = queue.progress_allowed_at(work.key, now)
                    if allowed_at > now:
                        queue.defer(work, allowed_at)
                        self.tally.deferred += 1
                        continue
                    if not self.budget.try_spend():
                        self.tally.over_budget += 1
                        queue.finish(work)
                        continue
                updates.for_evaluation(result)
                self.tally.updates_built += 1
                self._echo(event, work.doc, result.writes)
                if result.outcome is Outcome.JOB_COMPLETED:
                    self.tally.jobs_completed += 1
                if result.outcome is Outcome.PROGRESS:
                    queue.progress_written(work.key, now)
            queue.finish(work)
        queue.next_ready_at()
        pending = queue.pending_jobs
        if pending > self.tally.max_pending_jobs:
            self.tally.max_pending_jobs = pending
        self.now = now + self.step_s
        if self.tally.events % 1000 == 0:
            queue.advance(self.now)  # the position saver's call, so tokens do not pile up


    def _echo(self, event: dict[str, Any], doc: Any, writes: Any) -> None:
        """The change event the write just built would cause (its document with the writes applied)."""
        written = _apply(doc, writes)
        self._echo_seq += 1
        token = {"_data": f"{event['_id']['_data']}e{self._echo_seq}"}  # after the event being fed
        self._echoes.append(
            {"_id": token, "operationType": "update", "documentKey": {"_id": doc["_id"]}, "clusterTime": event.get("clusterTime"), "fullDocument": written}
        )


def _apply(doc: Any, writes: Any) -> dict[str, Any]:
    """``doc`` with ``writes`` (dotted paths) applied, sharing what did not change."""
    out = dict(doc)
    for path, value in writes.items():
        if value is rules.SERVER_NOW:
            value = dt.datetime.now(dt.UTC)
        elif isinstance(value, rules.Raise):
            value = value.value
        head, _, rest = path.partition(".")
        if not rest:
            out[head] = value
            continue
        stages = out[head] = dict(out[head])
        name, _, leaf = rest.partition(".")
        stages[name] = {**stages[name], leaf: value}
    return out


def run(source: Iterator[dict[str, Any]], *, events_per_s: float, on_event: Callable[[int], None] | None = None) -> Tally:
    """Replay ``source`` (pre-built or lazy); CPU and wall time cover the loop only
    when ``source`` is a list (a generator's own cost is then counted too)."""
    path = HotPath(events_per_s=events_per_s)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for n, event in enumerate(source, 1):
        path.feed(event)
        if on_event is not None and n % 1000 == 0:
            on_event(n)
    path.tally.cpu_s = time.process_time() - cpu0
    path.tally.wall_s = time.perf_counter() - wall0
    return path.tally


def busy(jobs: int, count: int, *, events_per_job_s: float = 2.0, profiler: cProfile.Profile | None = None) -> Tally:
    """Time ``count`` events over ``jobs`` busy jobs, each receiving
    ``events_per_job_s`` events per simulated second (above the 1/s progress
    interval, so about half its evaluations are deferred and wait in the
    queue). Two rounds over every job come first, untimed, so the queue is in
    its steady state when the clock starts. With ``profiler``, the timed part
    (only) runs under it, so a profile shows the same work the figure times."""
    warm = 2 * jobs
    prepared = list(events(jobs, warm + count))
    path = HotPath(events_per_s=jobs * events_per_job_s)
    for event in prepared[:warm]:
        path.feed(event)
    path.tally = Tally()
    timed = prepared[warm:]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for event in timed:
        path.feed(event)
    if profiler is not None:
        profiler.disable()
    path.tally.cpu_s = time.process_time() - cpu0
    path.tally.wall_s = time.perf_counter() - wall0
    return path.tally


def take_count(source: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return list(itertools.islice(source, n))
