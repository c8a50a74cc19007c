"""One partition's work while this instance holds its lease: stream,
dispatcher, sweeps and position, built fresh at each take (so nothing of a
previous term's state survives into the next).

What happens where: the supervisor (``watcher.intake.supervisor``) owns the
stream's life and its catch-up sweeps; the position keeper
(``watcher.storage.keeper``) loads the position after the lease was taken
and saves it, fenced by the lease. ``run()`` starts them in order and, on
``request_stop()``, stops them in order: stop intake, drain, save the
position (shielded, with a deadline). Cancelling ``run()`` from outside (the
lease is lost) stops everything at once and saves nothing.

Under ``run --observe`` one pipeline covers every job, with no lease and no
position.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from pymongo.asynchronous.database import AsyncDatabase

import rules
from watcher.decide import budget
from watcher.decide.coalesce import JobQueue
from watcher.decide.dispatch import Dispatcher
from watcher.group.stopping import Stop
from watcher.intake import stream
from watcher.intake.counter_watch import CounterWatch
from watcher.intake.source import ChangeSource
from watcher.intake.stream import StreamReader
from watcher.intake.supervisor import Supervisor, Sweeps
from watcher.intake.sweep import Sweeper, SweepReport
from watcher.ops import logs
from watcher.ops.metrics import Metrics
from watcher.settings import Settings
from watcher.storage import backoff, errors
from watcher.storage.keeper import PositionKeeper
from watcher.storage.partitions import EVERYTHING, Slice
from watcher.storage.position import PositionStore
from watcher.storage.store import JobStore, MongoJobStore

#: A one-shot sweep (``jobwatch sweep``) retries a failed pass this often before giving up.
ONE_SHOT_ATTEMPTS = 5
T = TypeVar("T")


@dataclass(frozen=True)
class HotPath:
    """The stream's way through the watcher: reader -> queue -> dispatcher,
    with path A's evidence (``counters``) and the rules' policy."""

    reader: StreamReader
    queue: JobQueue
    dispatcher: Dispatcher
    counters: CounterWatch
    policy: rules.Policy


def hot_path(
    settings: Settings,
    store: JobStore,
    source: ChangeSource,
    metrics: Metrics,
    *,
    stream_backoff: backoff.Backoff,
    partition: Slice = EVERYTHING,
    clock: Callable[[], float] = time.monotonic,
) -> HotPath:
    """One partition's hot path as the service wires it (the benchmarks drive
    the same one with the database removed)."""
    policy = rules.Policy(scan_stage=settings.scan_stage)
    queue = JobQueue(max_jobs=settings.max_pending_jobs, progress_interval_s=settings.progress_interval_s)
    dispatcher = Dispatcher(
        store,
        queue,
        metrics,
        workers=settings.workers,
        policy=policy,
        retry_backoff=backoff.Backoff(base_s=settings.backoff_base_s, max_s=settings.max_backoff_s),
        progress_budget=budget.ProgressBudget(fraction=settings.progress_write_share),
        progress_interval_s=settings.progress_interval_s,
        clock=clock,
    )
    counters = CounterWatch(quiet_s=settings.path_a_quiet_s)
    reader = StreamReader(
        source,
        dispatcher,
        metrics,
        pipeline=stream.pipeline(settings, partition),
        max_await_ms=settings.max_await_ms,
        server_selection_s=settings.server_selection_timeout_ms / 1000,
        healthy=stream_backoff,
        counters=counters,
        clock=clock,
    )
    return HotPath(reader, queue, dispatcher, counters, policy)


class Pipeline:
    """Partition ``index``'s work (``partition``: the jobs it covers), with its
    position in ``positions`` (None: keeps none, as ``--observe`` and a
    one-shot sweep). Runs as an elector's ``Leadership``."""

    def __init__(
        self,
        db: AsyncDatabase[Any],
        settings: Settings,
        metrics: Metrics,
        source: ChangeSource,
        *,
        partition: Slice = EVERYTHING,
        index: int = 0,
        positions: PositionStore | None = None,
        on_sweep: Callable[[SweepReport], None] = lambda report: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.index = index
        self._metrics = metrics
        self._clock = clock
        self._on_sweep = on_sweep
        self._store = MongoJobStore.from_settings(db, settings, partition=partition)
        stream_backoff = self._new_backoff()
        path = hot_path(
            settings, self._store, source, metrics, stream_backoff=stream_backoff, partition=partition, clock=clock
        )
        self._queue, self._dispatcher, self._reader = path.queue, path.dispatcher, path.reader
        self._sweeper = Sweeper(
            self._store, metrics, policy=path.policy, counters=path.counters, dispatcher=self._dispatcher, clock=clock
        )
        self._keeper = None
        if positions is not None:
            self._keeper = PositionKeeper(
                positions,
                self._queue.advance,
                metrics,
                interval_s=settings.position_save_interval_s,
                retry=self._new_backoff(),
                partition=index,
                clock=clock,
            )
        self._sweeps = Sweeps(
            self._periodic_pass,
            metrics,
            interval_s=settings.sweep_interval_s,
            degraded_interval_s=settings.degraded_sweep_interval_s,
            full_every=settings.full_sweep_every,
            retry=self._new_backoff(),
            after=self._after_sweep,
        )
        self._supervisor = Supervisor(
            self._reader,
            self._sweeps,
            metrics,
            retry=stream_backoff,
            allow_degraded=settings.allow_degraded,
            degraded_sweep_interval_s=settings.degraded_sweep_interval_s,
            recheck_s=settings.max_backoff_s,
        )
        self._stop = Stop()
        #: Set once the stream is open (or degraded) and the start-up sweep succeeded.
        self.started = anyio.Event()
        #: Set once ``run()`` ended, however.
        self.ended = anyio.Event()
        self._running = False

    def _new_backoff(self) -> backoff.Backoff:
        return backoff.Backoff(base_s=self.settings.backoff_base_s, max_s=self.settings.max_backoff_s)

    # -- what the watcher reads ---------------------------------------------------

    @property
    def streaming(self) -> bool:
        return self._reader.health.open

    @property
    def degraded(self) -> bool:
        return self._supervisor.degraded

    @property
    def pending_jobs(self) -> int:
        return self._queue.pending_jobs

    @property
    def backlog_tokens(self) -> int:
        return self._queue.backlog_tokens

    def readiness(self, now: float) -> str | None:
        """Why this partition is not doing its job, in a few words (None: it is)."""
        if not self.started.is_set():
            return "starting: opening the stream, then the catch-up sweep"
        if self._dispatcher.full:
            return "backlog at its cap"
        reading = self._reader.health.reading(now, self._reader.stall_s)
        if not (reading or self.degraded) or self._sweeps.state == "never":
            return "change stream not reading"
        return None

    def state(self) -> dict[str, Any]:
        """What ``jobwatch status`` reads about this partition (saved with each
        heartbeat). Times as durations before the heartbeat, on this process's
        clock, so no two hosts' clocks are ever compared."""
        return {
            "pendingJobs": self._queue.pending_jobs,
            "streaming": self.streaming,
            "degraded": self.degraded,
            "observe": self.settings.observe,
            "lastEventAgoS": _ago_s(self._metrics.last_event_at),
            "lastSweepAgoS": _ago_s(self._metrics.last_sweep_at),
        }

    # -- a pass on demand ------------------------------------------------------------

    async def sweep(
        self,
        *,
        dry_run: bool = False,
        job_types: Iterable[str] = (),
        full: bool = True,
        on_job: Callable[[rules.Evaluation], None] | None = None,
        settle: bool | None = None,
        on_wait: Callable[[SweepReport, float], None] | None = None,
    ) -> SweepReport:
        """One pass over this pipeline's jobs (see ``Watcher.sweep``)."""
        if settle is None:
            settle = not self._dispatcher.running and not dry_run
        if settle and self.settings.path_a_quiet_s > 0:
            looked = await self._retrying(lambda: self._sweeper.look(full=full, job_types=job_types))
            if looked.path_a_waiting:
                wait_s = self.settings.path_a_quiet_s
                said = "collection counts ahead of counters: checking they stand still"
                logs.event("sweep_waiting_for_path_a", "INFO", said, jobs=looked.path_a_waiting, wait_s=wait_s)
                if on_wait is not None:
                    on_wait(looked, wait_s)
                await anyio.sleep(wait_s)
        async with self._dispatching():
            return await self._retrying(
                lambda: self._sweeper.sweep(full=full, dry_run=dry_run, job_types=job_types, on_job=on_job)
            )

    @contextlib.asynccontextmanager
    async def _dispatching(self) -> AsyncIterator[None]:
        """The sweep writes through the dispatcher: run it for the sweep's
        duration when ``run()`` is not running it already."""
        if self._dispatcher.running:
            yield
            return
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(self._dispatcher.run, give_up_after=ONE_SHOT_ATTEMPTS))
                yield
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise errors.sole(group) from None

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        retry = self._new_backoff()
        while True:
            try:
                return await attempt()
            except errors.StoreUnavailable:
                if retry.attempt + 1 >= ONE_SHOT_ATTEMPTS:
                    raise
                await anyio.sleep(retry.next_delay_s())

    # -- the partition's life -----------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Until ``request_stop()`` has been honoured in order. Raises
        ``errors.Deposed`` (a fenced write found the lease gone), or a fatal
        outcome after stopping in order."""
        if self._running:
            raise RuntimeError("this Pipeline is already running")
        self._running = True
        try:
            async with anyio.create_task_group() as tg:
                intake = anyio.CancelScope()
                tg.start_soon(self._stop.guard, self._intake, intake, tg)
                await self._stop.wait()
                await self._shutdown(intake, tg)
        except BaseExceptionGroup as group:
            raise errors.sole(group) from None
        finally:
            self._running = False
            self.ended.set()
        self._stop.raise_fatal()

    async def _intake(self, scope: anyio.CancelScope, tg: anyio.abc.TaskGroup) -> None:
        """Load the position, then the stream's life; all of it inside ``scope``,
        so a stop cancels it wherever it is waiting (even a first open that fails)."""
        with scope:
            token = await self._keeper.load() if self._keeper is not None else None
            tg.start_soon(self._stop.guard, self._dispatcher.run)
            if self._keeper is not None:
                tg.start_soon(self._stop.guard, self._keeper.run)
            await self._supervisor.run(token, started=lambda: self._on_started(tg))

    def _on_started(self, tg: anyio.abc.TaskGroup) -> None:
        tg.start_soon(self._stop.guard, self._sweeps.periodic, lambda: self._supervisor.degraded)
        self.started.set()
        logs.event("partition_started", partition=self.index, streaming=self.streaming, degraded=self.degraded)

    async def _periodic_pass(self, full: bool) -> SweepReport:
        report = await self._sweeper.sweep(full=full)
        self._on_sweep(report)
        return report

    async def _after_sweep(self, report: SweepReport) -> None:
        self._metrics.sweep_succeeded()
        if self._keeper is None:
            return
        await self._keeper.heartbeat(report.summary())
        # After a start-up or catch-up sweep the stream's position is worth
        # keeping at once: a watcher killed before its first interval then
        # resumes instead of sweeping everything again.
        self._keeper.save_soon()

    async def _shutdown(self, intake: anyio.CancelScope, tg: anyio.abc.TaskGroup) -> None:
        logs.event("partition_stopping", "INFO", "stopping intake", partition=self.index)
        intake.cancel()
        deadline_s = self.settings.shutdown_deadline_s
        with anyio.move_on_after(deadline_s / 2) as drain:
            await self._dispatcher.drained()
        if drain.cancelled_caught:
            logs.event(
                "shutdown_drain_incomplete",
                "WARNING",
                "jobs still pending at the deadline; the saved position keeps them",
                pending=self._queue.pending_jobs,
                partition=self.index,
            )
        if self.started.is_set() and self._keeper is not None:  # before that, nothing was read that a save could keep
            await self._keeper.save_at_stop(deadline_s / 2)
        tg.cancel_scope.cancel()


def _ago_s(unix_s: float | None) -> float | None:
    return None if unix_s is None else round(max(time.time() - unix_s, 0.0), 3)


def merged(reports: list[SweepReport]) -> SweepReport:
    """One report for passes over several partitions (the sum of their totals)."""
    if len(reports) == 1:
        return reports[0]
    total = SweepReport(dry_run=any(r.dry_run for r in reports), full=all(r.full for r in reports))
    for report in reports:
        # Every count, list and duration (the passes ran one after another) adds up.
        for name in (f.name for f in dataclasses.fields(SweepReport) if f.name not in ("dry_run", "full")):
            setattr(total, name, getattr(total, name) + getattr(report, name))
    return total
