"""The hot path's second half: take coalesced work, evaluate, write once.

``Dispatcher`` wraps the pure ``JobQueue`` with anyio signalling: the stream
``offer``s (waiting when the queue is full), the sweep ``submit``s (and waits
for the outcome), ``run`` keeps up to ``workers`` evaluations in flight, one
per job at a time. One write policy for both: the guard, the progress rate
limit, retries with backoff, skips logged once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

import rules
from rules import Evaluation, Outcome
from watcher.storage import backoff
from watcher.storage import errors
from watcher.ops import logs
from watcher.decide import budget, updates
from watcher.decide.coalesce import JobQueue, Work
from watcher.ops.metrics import Metrics
from watcher.storage.position import Token
from watcher.storage.store import JobStore

Clock = Callable[[], float]
#: Jobs whose rejection was already logged (oldest forgotten first).
MAX_REMEMBERED_REJECTIONS = 1000


@dataclass
class Ticket:
    """A sweep's claim on one job's outcome, resolved when an evaluation of
    the job finishes (after any rate-limit deferrals and retries)."""

    done: anyio.Event = field(default_factory=anyio.Event)
    result: Evaluation | None = None
    applied: bool = False  # the guarded update matched
    skipped: str | None = None  # why the job was skipped, if it was

    def resolve(self, result: Evaluation, *, applied: bool = False, skipped: str | None = None) -> None:
        self.result, self.applied, self.skipped = result, applied, skipped
        self.done.set()


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        metrics: Metrics,
        *,
        workers: int,
        policy: rules.Policy,
        retry_backoff: backoff.Backoff,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._queue = queue
        self._metrics = metrics
        self._workers = workers
        self._policy = policy
        self._retry_backoff = retry_backoff
        self._clock = clock
        self._wall_clock = wall_clock
        self._changed = anyio.Event()
        self._rejected: dict[Hashable, str] = {}
        self.running = False
        #: Consecutive failed writes after which ``run()`` raises instead of
        #: retrying (None: retry until the server is back, as the service does).
        self.give_up_after: int | None = None
        #: Progress-only writes across all jobs, as a share of the events seen.
        self._budget = budget.ProgressBudget()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def offer(self, key: Hashable, doc: Mapping[str, Any], token: Token | None, event_time_s: float | None) -> None:
        """Queue a job's newest document; waits while the queue is full (every
        finished evaluation trims handled tokens and wakes this up)."""
        while not self._queue.offer(key, doc, token, event_time_s):
            await self._changed.wait()
        self._budget.credit()
        self._observe_backlog()
        self._notify()

    async def record(self, token: Token) -> None:
        while not self._queue.has_room(None):
            await self._changed.wait()
        self._queue.record(token)
        self._observe_backlog()
        self._notify()

    async def submit(self, key: Hashable, doc: Mapping[str, Any], counts: Mapping[str, int] | None) -> Ticket | None:
        """Queue a job the sweep read and wait for its outcome. None when the
        job was already queued by the stream (its newer document is evaluated)."""
        ticket = Ticket()
        while (offered := self._queue.offer_swept(key, doc, counts, ticket)) == "full":
            await self._changed.wait()
        if offered == "covered":
            return None
        self._observe_backlog()
        self._notify()
        await ticket.done.wait()
        return ticket

    def _observe_backlog(self) -> None:
        self._metrics.pending_jobs.set(self._queue.pending_jobs)
        self._metrics.backlog_tokens.set(self._queue.backlog_tokens)

    @property
    def full(self) -> bool:
        """The backlog is at its cap (readiness says so)."""
        return self._queue.full

    def note_skipped(self, key: Hashable, reason: str, category: str = "unreadable") -> None:
        """Count and log a skipped job (here, or a sweep's job it could not
        decode), once per job and reason: a consumer still counting on a
        broken job, or a sweep every few minutes, must not turn it into a
        stream of warnings."""
        if self._rejected.get(key) == reason:
            return
        if len(self._rejected) >= MAX_REMEMBERED_REJECTIONS:
            self._rejected.pop(next(iter(self._rejected)))
        self._rejected[key] = reason
        self._metrics.skipped(category)
        logs.event("job_skipped", "WARNING", "job skipped; nothing written, the next sweep tries again", job_id=key, reason=reason, category=category)

    async def drained(self) -> None:
        """Returns once nothing is pending or in flight."""
        while not self._queue.idle:
            await self._changed.wait()

    async def run(self) -> None:
        if self.running:
            raise RuntimeError("this Dispatcher is already running")
        self.running = True
        try:
            slots = anyio.Semaphore(self._workers)
            async with anyio.create_task_group() as tg:
                while True:
                    await slots.acquire()
                    work = await self._next_work()
                    tg.start_soon(self._handle, work, slots)
        finally:
            self.running = False

    async def _next_work(self) -> Work:
        while True:
            now = self._clock()
            work = self._queue.take(now)
            if work is not None:
                return work
            changed = self._changed
            ready_at = self._queue.next_ready_at()
            wait_s = math.inf if ready_at is None else max(ready_at - now, 0.0)
            with anyio.move_on_after(wait_s):
                await changed.wait()

    async def _handle(self, work: Work, slots: anyio.Semaphore) -> None:
        try:
            await self._process(work)
        finally:
            slots.release()
            self._observe_backlog()
            self._notify()

    async def _process(self, work: Work) -> None:
        source = "stream" if work.ticket is None else "sweep"
        result = rules.evaluate(work.doc, collection_counts=work.counts, policy=self._policy)
        self._metrics.evaluations.labels(source, result.outcome.value).inc()
        if result.outcome is Outcome.REJECTED:
            self.note_skipped(work.key, result.rejection or "unreadable")
        if not result.writes:
            self._queue.finish(work)
            _resolve(work, result, skipped=result.rejection if result.outcome is Outcome.REJECTED else None)
            return
        now = self._clock()
        if result.outcome is Outcome.PROGRESS:
            allowed_at = self._queue.progress_allowed_at(work.key, now)
            if allowed_at > now:
                self._queue.defer(work, allowed_at)
                return
            if source == "stream" and not self._budget.try_spend():
                # Over budget: dropped, not deferred (a deferred job would hold the
                # saved position back while it is quiet); its next event or the
                # next sweep writes its progress. Completions never ask.
                self._queue.finish(work)
                return
        try:
            matched = await self._store.apply(result.job_id, *updates.for_evaluation(result))
        except errors.StoreUnavailable as exc:
            if self.give_up_after is not None and self._retry_backoff.attempt + 1 >= self.give_up_after:
                raise  # a one-shot caller (``jobwatch sweep``) says so instead of waiting forever
            delay_s = self._retry_backoff.next_delay_s()
            logs.event("write_retry", "WARNING", "store unavailable; will evaluate the job again", job_id=work.key, error=exc.error, retry_in_s=round(delay_s, 3))
            self._metrics.errors.labels(exc.error, exc.action.value).inc()
            self._queue.retry(work, self._clock() + delay_s)
            return
        except errors.Rejected as exc:
            self._metrics.errors.labels(exc.error, exc.action.value).inc()
            reason = f"the server refused the update: {exc.error}"
            self.note_skipped(work.key, reason, "write_refused")
            self._queue.finish(work)
            _resolve(work, result, skipped=reason)
            return
        self._retry_backoff.reset()
        if result.outcome is Outcome.PROGRESS:
            self._queue.progress_written(work.key, self._clock())
        self._queue.finish(work)
        count_applied(result, matched, self._metrics, source, work.event_time_s, self._wall_clock)
        _resolve(work, result, applied=matched)


def _resolve(work: Work, result: Evaluation, *, applied: bool = False, skipped: str | None = None) -> None:
    if isinstance(work.ticket, Ticket):
        work.ticket.resolve(result, applied=applied, skipped=skipped)


def count_applied(result: Evaluation, matched: bool, metrics: Metrics, source: str, event_time_s: float | None = None, wall_clock: Clock = time.time) -> None:
    """Count and log one applied evaluation (the stream's and the sweep's)."""
    kind = {Outcome.JOB_COMPLETED: "job", Outcome.STAGE_COMPLETED: "stage"}.get(result.outcome, "progress")
    metrics.writes.labels(source, kind, "applied" if matched else "stale").inc()
    if not matched:
        logs.event("update_stale", "DEBUG", "guard no longer held; the newer state is evaluated next", job_id=result.job_id, outcome=result.outcome.value)
        return
    latency_s = None if event_time_s is None else max(wall_clock() - event_time_s, 0.0)
    metrics.completed(source, stages=len(result.completed_stages), job=result.completes_job, latency_s=latency_s)
    for stage in result.completed_stages:
        logs.event("stage_completed", job_id=result.job_id, stage=stage, source=source)
    if result.completes_job:
        logs.event("job_completed", job_id=result.job_id, job_type=result.job_type, source=source, latency_ms=None if latency_s is None else round(latency_s * 1000, 1))
