"""The sweep: the low-frequency full pass that guarantees correctness.

Reads every open job (any type, any ``collectionId``), counts path A items on
the server for jobs that have a collection, and sends each job through the
same ``rules.evaluate`` and the same conditional update as the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import anyio

import rules
from rules import Evaluation, Outcome
from watcher.decide import dispatch
from watcher.intake.counter_watch import CounterWatch
from watcher.ops import logs
from watcher.ops.metrics import Metrics
from watcher.storage.store import JobStore, Unreadable, job_key

#: A report keeps at most this many per-job lines (the totals are always exact).
MAX_REPORTED_JOBS = 10_000


@dataclass(frozen=True)
class PathAWait:
    """A job whose collection holds more items than a stage counter that has
    not yet stood still for ``path_a_quiet_s``: path A waits before raising it."""

    job_id: Any
    stages: tuple[str, ...]


@dataclass(frozen=True)
class JobChange:
    job_id: Any
    job_type: Any
    outcome: str
    completed_stages: tuple[str, ...]
    applied: bool  # False: dry run, or the guard no longer held


@dataclass
class SweepReport:
    """What one sweep did (or, with ``dry_run``, would do): totals, the jobs
    skipped with their reasons, and up to ``MAX_REPORTED_JOBS`` per-job
    changes. ``Watcher.sweep()`` returns it; ``jobwatch sweep`` prints it."""

    dry_run: bool = False
    full: bool = False
    scanned: int = 0
    stages_completed: int = 0
    jobs_completed: int = 0
    progress_updated: int = 0
    stale: int = 0  # the job changed between read and write; the stream has it
    path_a_waiting: int = 0  # jobs whose collection is ahead of a counter that is still moving
    waiting: list[PathAWait] = field(default_factory=list)  # those jobs (at most MAX_REPORTED_JOBS)
    skipped: list[tuple[Any, str]] = field(default_factory=list)
    changes: list[JobChange] = field(default_factory=list)
    duration_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Totals only: what the heartbeat document and metrics keep. Built
        field by field: ``asdict`` would deep-copy every per-job line (up to
        ``MAX_REPORTED_JOBS``) on each pass, only to drop them."""
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("changes", "waiting")}
        doc["skipped"] = len(self.skipped)
        return doc

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["skipped"] = [{"job_id": str(job_id), "reason": reason} for job_id, reason in self.skipped]
        doc["changes"] = [{**asdict(change), "job_id": str(change.job_id)} for change in self.changes]
        doc["waiting"] = [{"job_id": str(wait.job_id), "stages": list(wait.stages)} for wait in self.waiting]
        return doc


class Sweeper:
    def __init__(
        self,
        store: JobStore,
        metrics: Metrics,
        *,
        policy: rules.Policy,
        counters: CounterWatch,
        dispatcher: dispatch.Dispatcher,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._policy = policy
        self._counters = counters
        self._dispatcher = dispatcher
        self._clock = clock

    async def sweep(
        self,
        *,
        full: bool = True,
        dry_run: bool = False,
        job_types: Iterable[str] = (),
        on_job: Callable[[Evaluation], None] | None = None,
    ) -> SweepReport:
        """One pass over the open jobs. ``dry_run`` evaluates and reports
        ("would complete"), writes nothing.

        With a dispatcher (which must be running), every job read goes
        through the same queue and write path as the stream's events: one
        write policy (guard, rate limit, retries, skips); the report counts
        each outcome once it is known. Raises ``errors.StoreUnavailable`` when
        the jobs cannot be read (the caller retries the pass; every write is
        guarded, so a pass that runs twice changes nothing twice)."""
        started = self._clock()
        report = SweepReport(dry_run=dry_run, full=full)
        logs.event("sweep_started", full=full, dry_run=dry_run)
        async for batch in self._store.open_jobs(full=full, job_types=job_types):
            counts = await self._store.collection_counts(collection_ids(batch))
            async with anyio.create_task_group() as tg:
                for doc in batch:
                    report.scanned += 1
                    if isinstance(doc, Unreadable):
                        self._skip(report, doc["_id"], doc.reason)
                        continue
                    settled = self._settled_counts(doc, counts, report)
                    if not dry_run:
                        tg.start_soon(self._through_queue, doc, settled, report, on_job)
                        continue
                    result = rules.evaluate(doc, collection_counts=settled, policy=self._policy)
                    self._would(result, report)
                    if on_job is not None:
                        on_job(result)
        report.duration_s = round(self._clock() - started, 6)
        self._observe(report)
        logs.event("sweep_finished", **{k: v for k, v in report.summary().items() if k != "dry_run"}, dry_run=dry_run)
        return report

    def _settled_counts(
        self, doc: Mapping[str, Any], counts: Mapping[Any, Mapping[str, int]], report: SweepReport
    ) -> Mapping[str, int] | None:
        """Path A's counts for the stages whose counters stood still (see
        ``watcher.intake.counter_watch``); None for path B."""
        found = counts_for(doc, counts)
        if not found:
            return None
        settled = self._counters.settled(job_key(doc.get("_id")), doc, found, self._clock())
        kept = {stage: n for stage, n in found.items() if stage in settled}
        ahead = _ahead(doc, {s: n for s, n in found.items() if s not in kept})
        if ahead:
            report.path_a_waiting += 1
            if len(report.waiting) < MAX_REPORTED_JOBS:
                report.waiting.append(PathAWait(doc.get("_id"), ahead))
        return kept

    def _skip(self, report: SweepReport, job_id: Any, reason: str) -> None:
        report.skipped.append((job_id, reason))
        self._dispatcher.note_skipped(job_key(job_id), reason)

    async def look(self, *, full: bool = True, job_types: Iterable[str] = ()) -> SweepReport:
        """Read the open jobs and their collection counts without deciding
        anything: the observation path A needs before it may act. The report
        counts (``path_a_waiting``) and lists (``waiting``) the jobs whose
        collection is ahead of a counter not yet known to stand still."""
        report = SweepReport(dry_run=True, full=full)
        async for batch in self._store.open_jobs(full=full, job_types=job_types):
            readable = [doc for doc in batch if not isinstance(doc, Unreadable)]
            counts = await self._store.collection_counts(collection_ids(readable))
            for doc in readable:
                self._settled_counts(doc, counts, report)
        return report

    async def _through_queue(
        self,
        doc: Mapping[str, Any],
        counts: Mapping[str, int] | None,
        report: SweepReport,
        on_job: Callable[[Evaluation], None] | None,
    ) -> None:
        ticket = await self._dispatcher.submit(job_key(doc.get("_id")), doc, counts)
        if ticket is None or ticket.result is None:
            report.stale += 1  # the stream had a newer state of this job queued
            return
        result = ticket.result
        if on_job is not None:
            on_job(result)
        if ticket.skipped is not None:
            report.skipped.append((result.job_id, ticket.skipped))  # logged once by the dispatcher
        elif result.writes:
            self._count(result, report, applied=ticket.applied, dry_run=False)

    def _would(self, result: Evaluation, report: SweepReport) -> None:
        """A dry run's verdict: what the write path would do, nothing sent."""
        if result.outcome is Outcome.REJECTED:
            self._skip(report, result.job_id, result.rejection or "unreadable")
        elif result.writes:
            self._count(result, report, applied=False, dry_run=True)

    def _count(self, result: Evaluation, report: SweepReport, *, applied: bool, dry_run: bool) -> None:
        if not applied and not dry_run:
            report.stale += 1
            return
        report.stages_completed += len(result.completed_stages)
        report.jobs_completed += result.completes_job
        report.progress_updated += result.outcome is Outcome.PROGRESS
        if len(report.changes) < MAX_REPORTED_JOBS:
            report.changes.append(
                JobChange(result.job_id, result.job_type, result.outcome.value, result.completed_stages, applied)
            )

    def _observe(self, report: SweepReport) -> None:
        self._metrics.sweep_duration.observe(report.duration_s)
        for kind in ("scanned", "stages_completed", "jobs_completed", "progress_updated", "stale"):
            self._metrics.sweep_findings.labels(kind).inc(getattr(report, kind))
        self._metrics.sweep_findings.labels("skipped").inc(len(report.skipped))


def _ahead(doc: Mapping[str, Any], counts: Mapping[str, int]) -> tuple[str, ...]:
    """The job's stages whose collection count is above the stored counter (or
    beside a counter that is no number). A count for a stage the job does not
    have, or of no items, can raise nothing: path A never waits for it."""
    stages = doc.get("stages")
    if not isinstance(stages, Mapping):
        return ()
    ahead = []
    for stage, count in counts.items():
        raw = stages.get(stage)
        if not isinstance(raw, Mapping) or count <= 0:
            continue
        current = raw.get("completedItems")
        if not isinstance(current, int | float) or isinstance(current, bool) or count > current:
            ahead.append(stage)
    return tuple(ahead)


def collection_ids(docs: Iterable[Any]) -> Iterator[Any]:
    """The collection ids path A counts for a batch: those its readable jobs name."""
    return (
        doc["collectionId"] for doc in docs if not isinstance(doc, Unreadable) and doc.get("collectionId") is not None
    )


def counts_for(doc: Mapping[str, Any], counts: Mapping[Any, Mapping[str, int]]) -> Mapping[str, int] | None:
    """A job's collection counts, looked up as ``collection_counts`` keys them
    (by ``job_key``: an id of any BSON type, a document or an array too)."""
    collection_id = doc.get("collectionId")
    if collection_id is None:
        return None  # path B: the stage counters are all we have
    return counts.get(job_key(collection_id))
