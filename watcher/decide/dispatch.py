"""The hot path's second half: take coalesced work, evaluate, write once.

``Dispatcher`` wraps the pure ``JobQueue`` with anyio signalling: the stream
hands it each batch of events (``accept``, waiting while the queue is full),
the sweep ``submit``s (and waits for the outcome), ``run`` keeps ``workers``
long-lived workers taking work, one evaluation per job at a time. One write
policy for both: the guard, the progress rate limit and budget, retries with
backoff, skips logged once.

Progress writes the stream's events ask for are held back, never dropped:
one the rate limit or the budget refuses waits beside the queue (a trailing
write, see ``watcher.decide.coalesce``) and is made once due, ahead of new
progress writes. Completions are never held back.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

import rules
from rules import Evaluation, Outcome
from watcher.decide import budget, updates
from watcher.decide.coalesce import JobQueue, Work
from watcher.ops import logs
from watcher.ops.metrics import Metrics
from watcher.storage import backoff, errors
from watcher.storage.position import Token
from watcher.storage.store import JobStore

Clock = Callable[[], float]
#: Jobs whose rejection was already logged (oldest forgotten first).
MAX_REMEMBERED_REJECTIONS = 1000
#: One batch of the stream's jobs: (job key, newest document, the event's server time).
Offer = tuple[Hashable, Mapping[str, Any], float | None]


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


class Signal:
    """Wakes tasks waiting on it: all of them, or the first ``n``. Costs
    nothing when nobody waits (the hot path fires it once per batch and per
    finished job), and wakes no more workers than there is work for."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: collections.deque[anyio.Event] = collections.deque()

    async def wait(self) -> None:
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        finally:
            if not event.is_set():
                self._waiters.remove(event)  # cancelled (a timed wait ended): not a waiter any more

    def fire(self, n: int | None = None) -> None:
        waiters = self._waiters
        count = len(waiters) if n is None else min(n, len(waiters))
        for _ in range(count):
            waiters.popleft().set()


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
        progress_budget: budget.ProgressBudget | None = None,
        progress_interval_s: float = 1.0,
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
        self._work = Signal()  # idle workers wait here for news
        self._room = Signal()  # the stream, the sweep and ``drained`` wait here for finished work
        self._rejected: dict[Hashable, str] = {}
        self.running = False
        #: Progress-only writes across all jobs, as a share of the events seen.
        self._budget = progress_budget or budget.ProgressBudget()
        self._progress_interval_s = progress_interval_s
        #: When the stream last handed over events, and the budget was last
        #: refilled: a quiet stream refills it once per interval (see budget).
        self._last_events_at = -math.inf
        self._refilled_at = -math.inf

    # -- intake ------------------------------------------------------------

    async def accept(
        self, jobs: Iterable[Offer], token: Token | None, received_s: float, events: int | None = None
    ) -> None:
        """Queue one batch of the stream: each job's newest document in order,
        then the batch's position (``token``: handled once every job before it
        is). Waits while the queue is full (every finished evaluation makes
        room). ``events`` (default: the jobs) credits the progress budget."""
        queue, count = self._queue, 0
        for key, doc, event_time_s in jobs:
            count += 1
            while not queue.offer(key, doc, None, event_time_s, received_s):
                await self._wait_for_room()
        if token is not None:
            while not queue.has_room(None):
                await self._wait_for_room()
            queue.record(token)
        credited = count if events is None else events
        if credited:
            self._budget.credit(credited)
            self._last_events_at = received_s
        if count:
            self._work.fire(count)  # at most a worker per job handed over

    async def record(self, token: Token) -> None:
        """A position with nothing to evaluate (an idle batch's post-batch token)."""
        await self.accept((), token, self._clock(), 0)

    async def submit(self, key: Hashable, doc: Mapping[str, Any], counts: Mapping[str, int] | None) -> Ticket | None:
        """Queue a job the sweep read and wait for its outcome. None when the
        job was already queued by the stream (its newer document is evaluated)."""
        ticket = Ticket()
        while (offered := self._queue.offer_swept(key, doc, counts, ticket)) == "full":
            await self._wait_for_room()
        if offered == "covered":
            return None
        self._work.fire(1)
        await ticket.done.wait()
        return ticket

    async def _wait_for_room(self) -> None:
        self._work.fire()  # what is queued already must go on while we wait
        while not self._queue.roomy:
            await self._room.wait()

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
        logs.event(
            "job_skipped",
            "WARNING",
            "job skipped; nothing written, the next sweep tries again",
            job_id=key,
            reason=reason,
            category=category,
        )

    async def drained(self) -> None:
        """Returns once nothing is pending or in flight (held-back progress
        writes aside: they wait beside the queue)."""
        while not self._queue.idle:
            await self._room.wait()

    # -- the workers -------------------------------------------------------

    async def run(self, *, give_up_after: int | None = None) -> None:
        """Evaluate and write until cancelled. ``give_up_after``: consecutive
        failed writes after which this raises ``errors.StoreUnavailable``
        instead of retrying (a one-shot caller such as ``jobwatch sweep``
        says so rather than waiting forever); None retries until the server
        is back, as the service does."""
        if self.running:
            raise RuntimeError("this Dispatcher is already running")
        self.running = True
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self._workers):
                    tg.start_soon(self._worker, give_up_after)
        finally:
            self.running = False

    async def _worker(self, give_up_after: int | None) -> None:
        queue = self._queue
        while True:
            now = self._clock()
            work = queue.take(now) or self._take_trailing(now)
            if work is None:
                await self._idle(now)
                continue
            try:
                await self._process(work, give_up_after)
            finally:
                if queue.roomy:  # the stream waits for the low-water mark, ``drained`` for idle
                    self._room.fire()

    async def _idle(self, now: float) -> None:
        """Wait for news, or until the next deferred job or held-back write is due."""
        ready_at = self._queue.next_ready_at()
        wake_at = min(math.inf if ready_at is None else ready_at, self._trailing_wake_at(now))
        if wake_at == math.inf:
            await self._work.wait()
        elif wake_at <= now:
            await anyio.lowlevel.checkpoint()
        else:
            with anyio.move_on_after(wake_at - now):
                await self._work.wait()

    def _trailing_wake_at(self, now: float) -> float:
        due_at = self._queue.next_trailing_at()
        if due_at is None or self._queue.full:
            return math.inf  # a full queue has work enough; finishing it wakes nobody here
        if self._budget.tokens >= 1.0:
            return due_at
        # No token: events will bring one (each wakes the workers), else the
        # quiet-stream refill will.
        return max(due_at, self._refill_at())

    def _refill_at(self) -> float:
        return max(self._last_events_at, self._refilled_at) + self._progress_interval_s

    def _take_trailing(self, now: float) -> Work | None:
        due_at = self._queue.next_trailing_at()
        if due_at is None or due_at > now:
            return None
        if self._budget.tokens < 1.0:
            if now < self._refill_at():
                return None
            self._budget.refill()  # a quiet stream: no event will ever pay for these
            self._refilled_at = now
        return self._queue.take_trailing(now)

    async def _process(self, work: Work, give_up_after: int | None) -> None:
        source = "stream" if work.ticket is None else "sweep"
        result = rules.evaluate(work.doc, collection_counts=work.counts, policy=self._policy)
        self._count_evaluation(source, result.outcome)
        if result.outcome is Outcome.REJECTED:
            self.note_skipped(work.key, result.rejection or "unreadable")
        if not result.writes:
            self._queue.finish(work)
            _resolve(work, result, skipped=result.rejection if result.outcome is Outcome.REJECTED else None)
            return
        if result.outcome is Outcome.PROGRESS and not self._progress_may_go(work, source):
            return
        try:
            matched = await self._store.apply(result.job_id, *updates.for_evaluation(result))
        except errors.StoreUnavailable as exc:
            if give_up_after is not None and self._retry_backoff.attempt + 1 >= give_up_after:
                raise  # a one-shot caller (``jobwatch sweep``) says so instead of waiting forever
            delay_s = self._retry_backoff.next_delay_s()
            logs.event(
                "write_retry",
                "WARNING",
                "store unavailable; will evaluate the job again",
                job_id=work.key,
                error=exc.error,
                retry_in_s=round(delay_s, 3),
            )
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
        now = self._clock()
        if result.outcome is Outcome.PROGRESS:
            self._queue.progress_written(work.key, now)
        self._queue.finish(work)
        self._count_applied(result, matched, source, work.event_time_s)
        if work.received_s is not None:
            self._metrics.series(self._metrics.decision, _kind(result)).observe(max(now - work.received_s, 0.0))
        _resolve(work, result, applied=matched)

    def _progress_may_go(self, work: Work, source: str) -> bool:
        """Whether a progress-only write may be sent now; if not, the work is
        deferred (a sweep's) or held back as a trailing write (the stream's)."""
        now = self._clock()
        allowed_at = self._queue.progress_allowed_at(work.key, now)
        if source == "sweep":
            if allowed_at > now:
                self._queue.defer(work, allowed_at)  # the sweep waits for this job's outcome
                return False
            return True  # the budget is for the stream's events; a sweep's writes are few
        if allowed_at > now:
            self._queue.trail(work, allowed_at)
            return False
        # Held-back writes come first: a job that stopped moving has no later
        # event to bring its progress. Otherwise the budget decides.
        due_at = self._queue.next_trailing_at()
        waiting = not work.trailing and due_at is not None and due_at <= now
        if waiting or not self._budget.try_spend():
            received_s = now if work.received_s is None else work.received_s
            self._queue.trail(work, received_s + self._progress_interval_s)
            return False
        return True

    def _count_evaluation(self, source: str, outcome: Outcome) -> None:
        self._metrics.series(self._metrics.evaluations, source, outcome.value).inc()

    def _count_applied(self, result: Evaluation, matched: bool, source: str, event_time_s: float | None) -> None:
        """Count and log one applied evaluation (the stream's and the sweep's)."""
        metrics = self._metrics
        metrics.series(metrics.writes, source, _kind(result), "applied" if matched else "stale").inc()
        if not matched:
            logs.event(
                "update_stale",
                "DEBUG",
                "guard no longer held; the newer state is evaluated next",
                job_id=result.job_id,
                outcome=result.outcome.value,
            )
            return
        latency_s = None if event_time_s is None else max(self._wall_clock() - event_time_s, 0.0)
        if result.completes_stage or result.completes_job:
            metrics.completed(
                source, stages=len(result.completed_stages), job=result.completes_job, latency_s=latency_s
            )
        for stage in result.completed_stages:
            logs.event("stage_completed", job_id=result.job_id, stage=stage, source=source)
        if result.completes_job:
            logs.event(
                "job_completed",
                job_id=result.job_id,
                job_type=result.job_type,
                source=source,
                latency_ms=None if latency_s is None else round(latency_s * 1000, 1),
            )


def _resolve(work: Work, result: Evaluation, *, applied: bool = False, skipped: str | None = None) -> None:
    if isinstance(work.ticket, Ticket):
        work.ticket.resolve(result, applied=applied, skipped=skipped)


_KINDS = {Outcome.JOB_COMPLETED: "job", Outcome.STAGE_COMPLETED: "stage"}


def _kind(result: Evaluation) -> str:
    return _KINDS.get(result.outcome, "progress")
