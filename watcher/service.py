"""The service: wires stream supervisor, dispatcher, sweeps, position keeper
and health into one ``run()`` that owns one task group.

What happens where: the supervisor (``watcher.intake.supervisor``) owns the
stream's life and its catch-up sweeps; the position keeper
(``watcher.storage.keeper``) loads and saves the resume position; every
driver error was already translated at the storage boundary
(``watcher.storage.errors``). This module only starts them in order and stops
them in order: stop intake, drain, save the position (shielded, with a
deadline), close.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

import rules
from watcher.decide import budget
from watcher.decide.coalesce import JobQueue
from watcher.decide.dispatch import Dispatcher
from watcher.intake import stream
from watcher.intake.counter_watch import CounterWatch
from watcher.intake.source import ChangeSource, PyMongoChangeSource
from watcher.intake.stream import StreamReader
from watcher.intake.supervisor import Supervisor, Sweeps
from watcher.intake.sweep import Sweeper, SweepReport
from watcher.ops import logs
from watcher.ops.health import HealthServer
from watcher.ops.metrics import Metrics
from watcher.settings import Settings
from watcher.storage import backoff, census, errors
from watcher.storage.keeper import PositionKeeper
from watcher.storage.position import MongoPositionStore, PositionStore
from watcher.storage.store import JobStore, MongoJobStore

# The deliberate fatal outcomes, where callers have always found them.
ConfigurationProblem = errors.ConfigurationProblem
Unreachable = errors.Unreachable
#: A one-shot sweep (``jobwatch sweep``) retries a failed pass this often before giving up.
ONE_SHOT_ATTEMPTS = 5
T = TypeVar("T")


async def check_server(client: Any, settings: Settings) -> None:
    """One ping, so a wrong URI or a down server is said at once, clearly."""
    try:
        with errors.translated("ping", "retry"):
            await client.admin.command("ping")
    except errors.StoreUnavailable as exc:
        raise Unreachable(
            f"MongoDB at {settings.uri_redacted} is unreachable or not answering: {exc.error} "
            f"within {settings.server_selection_timeout_ms} ms"
        ) from None


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
    clock: Callable[[], float] = time.monotonic,
) -> HotPath:
    """The hot path as ``Watcher`` wires it (the benchmarks drive the same one
    with the database removed)."""
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
        pipeline=stream.pipeline(settings),
        max_await_ms=settings.max_await_ms,
        server_selection_s=settings.server_selection_timeout_ms / 1000,
        healthy=stream_backoff,
        counters=counters,
        clock=clock,
    )
    return HotPath(reader, queue, dispatcher, counters, policy)


class Watcher:
    """jobwatch's watcher, embeddable in any asyncio application.

    Give it a connected ``AsyncMongoClient`` (it does not close it) and
    ``Settings``. ``run()`` works until ``stop()``; or use it as an async
    context manager, which runs it in the background and stops it on exit.
    The change source defaults to PyMongo's ``collection.watch()``.

    ``run()`` raises only ``ConfigurationProblem`` (exit code 2: bad
    settings, missing privileges, a standalone server without degraded mode,
    a busy health port) or ``Unreachable`` (exit code 3), each with a
    one-line message; everything else foreseeable is retried inside.
    """

    def __init__(
        self,
        client: Any,
        settings: Settings | None = None,
        *,
        change_source: ChangeSource | None = None,
        position_store: PositionStore | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings = settings or Settings()
        db = client[settings.database]
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._client = client
        self._store = MongoJobStore.from_settings(db, settings)
        stream_backoff = self._new_backoff()
        path = hot_path(
            settings, self._store, change_source or PyMongoChangeSource(db[settings.jobs_collection]), self.metrics,
            stream_backoff=stream_backoff, clock=clock,
        )
        self._queue, self._dispatcher, self._reader = path.queue, path.dispatcher, path.reader
        self._sweeper = Sweeper(
            self._store, self.metrics, policy=path.policy, counters=path.counters, dispatcher=self._dispatcher,
            clock=clock,
        )
        self._keeper = PositionKeeper(
            position_store
            or MongoPositionStore(
                db, settings.positions_collection, settings.watcher_name,
                save_interval_s=settings.position_save_interval_s, state=self._heartbeat_state,
            ),
            self._queue.advance,
            self.metrics,
            interval_s=settings.position_save_interval_s,
            retry=self._new_backoff(),
            clock=clock,
        )
        self._sweeps = Sweeps(self._periodic_pass, settings, self.metrics, retry=self._new_backoff(), after=self._after_sweep)
        self._supervisor = Supervisor(self._reader, self._sweeps, settings, self.metrics, retry=stream_backoff)
        self._stop = anyio.Event()
        self._started = anyio.Event()
        self._finished = anyio.Event()
        self._settled = anyio.Event()
        self._running = False
        self._fatal: ConfigurationProblem | Unreachable | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.last_sweep: SweepReport | None = None
        self.health: HealthServer | None = None

    def _new_backoff(self) -> backoff.Backoff:
        return backoff.Backoff(base_s=self.settings.backoff_base_s, max_s=self.settings.max_backoff_s)

    # -- public API ------------------------------------------------------

    async def sweep(
        self,
        *,
        dry_run: bool = False,
        job_types: Iterable[str] = (),
        full: bool = True,
        on_job: Callable[[rules.Evaluation], None] | None = None,
        settle: bool | None = None,
    ) -> SweepReport:
        """One reconciliation pass now (also while ``run()`` is going).

        Path A raises only counters that stood still for ``path_a_quiet_s``.
        With ``settle`` (the default when the service is not running, as for
        ``jobwatch sweep``), a candidate not seen before is looked at once,
        the pass waits that long and then makes the pass it reports; a
        running service remembers what its stream and earlier sweeps saw
        instead. Transient failures are retried a few times; then
        ``errors.StoreUnavailable``.
        """
        if settle is None:
            settle = not self._running
        if settle and self.settings.path_a_quiet_s > 0:
            waiting = await self._retrying(lambda: self._sweeper.look(full=full, job_types=job_types))
            if waiting:
                logs.event("sweep_waiting_for_path_a", "INFO", "collection counts ahead of counters: checking they stand still", jobs=waiting, wait_s=self.settings.path_a_quiet_s)
                await anyio.sleep(self.settings.path_a_quiet_s)
        async with self._dispatching():
            report = await self._retrying(lambda: self._sweeper.sweep(full=full, dry_run=dry_run, job_types=job_types, on_job=on_job))
        if not dry_run:
            self.last_sweep = report
        return report

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
            raise _sole(group) from None

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        retry = self._new_backoff()
        while True:
            try:
                return await attempt()
            except errors.StoreUnavailable:
                if retry.attempt + 1 >= ONE_SHOT_ATTEMPTS:
                    raise
                await anyio.sleep(retry.next_delay_s())

    async def run(self) -> None:
        """Run until ``stop()``. Raises ``ConfigurationProblem`` or ``Unreachable``
        (one line each) for what no retry can fix."""
        if self._running:
            raise RuntimeError("this Watcher is already running")
        self._running = True
        try:
            await self._run()
        except BaseExceptionGroup as group:
            raise _sole(group) from None
        finally:
            self.metrics.streaming.set(0)
            self._finished.set()
            self._settled.set()

    async def stop(self) -> None:
        """Ask ``run()`` to stop and wait until it has (safe to call twice)."""
        self.request_stop()
        if self._running:
            await self._finished.wait()

    def request_stop(self) -> None:
        """Ask ``run()`` to stop without waiting (e.g. from a signal handler task)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def wait_started(self) -> None:
        """Returns once the stream is open and the first sweep has finished."""
        await self._started.wait()

    @property
    def streaming(self) -> bool:
        """The change stream is open."""
        return self._reader.health.open

    @property
    def degraded(self) -> bool:
        return self._supervisor.degraded

    @property
    def ready(self) -> bool:
        """What ``/readyz`` says: started and not stopping; the stream open and
        answering (a batch, even empty, within the stall bound) or degraded
        mode on purpose; the backlog below its cap; sweeps succeeding or
        being retried."""
        if not self._started.is_set() or self._stop.is_set():
            return False
        reading = self._reader.health.reading(self._clock(), self._reader.stall_s)
        return (reading or self.degraded) and not self._dispatcher.full and self._sweeps.state != "never"

    def not_ready_reason(self) -> str | None:
        """Why ``ready`` is False, in a few words (None when ready)."""
        if self.ready:
            return None
        if not self._started.is_set():
            return "starting"
        if self._stop.is_set():
            return "stopping"
        if self._dispatcher.full:
            return "backlog at its cap"
        return "change stream not reading"

    async def __aenter__(self) -> Watcher:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.run)
        try:
            await self._settled.wait()  # started, or run() ended during start-up
        except BaseException as exc:  # cancelled because run() failed: surface run()'s error
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if not self._started.is_set():
            await self.__aexit__(None, None, None)  # raises run()'s error, if it had one
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> bool | None:
        # Not stop(): if run() failed, this task is being cancelled and must not
        # wait; the task group's exit waits for run() and raises its error.
        self._stop.set()
        assert self._tg is not None
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The caller did not start a task group; give it run()'s error, not ours.
            raise _sole(group) from None

    # -- the service -----------------------------------------------------

    async def _run(self) -> None:
        settings = self.settings
        logs.event("watcher_starting", database=settings.database, collection=settings.jobs_collection, watcher=settings.watcher_name)
        async with anyio.create_task_group() as tg:
            if settings.health_port:
                await self._start_health(tg)  # first: probes answer during a long start-up
            intake = anyio.CancelScope()
            tg.start_soon(self._stops_on_fatal, self._intake, intake, tg)
            await self._stop.wait()
            await self._shutdown(intake, tg)
        if self._fatal is not None:
            raise self._fatal

    async def _stops_on_fatal(self, task: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``task``; a deliberate fatal outcome becomes an orderly stop
        (drain, save the position) after which ``run()`` raises it."""
        try:
            await task(*args)
        except (ConfigurationProblem, Unreachable) as exc:
            if self._fatal is None:
                self._fatal = exc
                logs.event("watcher_fatal", "ERROR", str(exc), error=type(exc).__name__)
            self._stop.set()

    async def _intake(self, scope: anyio.CancelScope, tg: anyio.abc.TaskGroup) -> None:
        """Start-up, then the stream's life; all of it inside ``scope``, so a
        stop cancels it wherever it is waiting (even a first open that fails)."""
        with scope:
            await check_server(self._client, self.settings)
            self.metrics.observe_mode.set(1 if self.settings.observe else 0)
            if self.settings.create_index and not self.settings.observe:  # --observe writes nothing to the jobs
                await self._ensure_index()
            token = await self._keeper.load()
            tg.start_soon(self._stops_on_fatal, self._dispatcher.run)
            tg.start_soon(self._stops_on_fatal, self._keeper.run)
            await self._supervisor.run(token, started=lambda: self._on_started(tg))

    def _on_started(self, tg: anyio.abc.TaskGroup) -> None:
        tg.start_soon(self._stops_on_fatal, self._sweeps.periodic, lambda: self._supervisor.degraded)
        # After the start-up sweep, so the first census counts what that sweep left open.
        tg.start_soon(census.run, self._client[self.settings.database], self.settings, self.metrics)
        self._started.set()
        self._settled.set()
        logs.event("watcher_started", streaming=self.streaming, degraded=self.degraded)

    async def _ensure_index(self) -> None:
        try:
            if await self._store.ensure_sweep_index():
                logs.event("index_created", "INFO", "created the sweep's index on (status, jobType)")
        except (errors.StorageProblem, errors.ConfigurationProblem) as exc:
            # Sweeps work without it, only slower: never a reason to stop.
            logs.event("index_not_created", "WARNING", "could not create the sweep's index; sweeping without it", error=errors.name(exc))

    async def _periodic_pass(self, full: bool) -> SweepReport:
        report = await self._sweeper.sweep(full=full)
        self.last_sweep = report
        return report

    async def _after_sweep(self, report: SweepReport) -> None:
        self.metrics.sweep_succeeded()
        await self._keeper.heartbeat(report.summary())
        # After a start-up or catch-up sweep the stream's position is worth
        # keeping at once: a watcher killed before its first interval then
        # resumes instead of sweeping everything again.
        self._keeper.save_soon()

    def _heartbeat_state(self) -> dict[str, Any]:
        """What ``jobwatch status`` reads about this watcher (saved with each heartbeat)."""

        def at(unix_s: float | None) -> dt.datetime | None:
            return dt.datetime.fromtimestamp(unix_s, dt.UTC) if unix_s is not None else None

        return {
            "pendingJobs": self._queue.pending_jobs,
            "streaming": self.streaming,
            "degraded": self.degraded,
            "observe": self.settings.observe,
            "lastEventAt": at(self.metrics.last_event_at),
            "lastSweepAt": at(self.metrics.last_sweep_at),
        }

    async def _start_health(self, tg: anyio.abc.TaskGroup) -> None:
        self.health = HealthServer(
            self.metrics, ready=lambda: self.ready, why_not_ready=self.not_ready_reason, host=self.settings.health_host, port=self.settings.health_port
        )
        try:
            await tg.start(self.health.serve)
        except OSError as exc:
            raise ConfigurationProblem(
                f"cannot listen on {self.settings.health_host}:{self.settings.health_port} for health/metrics "
                f"({exc.strerror}); set JOBWATCH_HEALTH_PORT (0 disables the endpoint)"
            ) from None

    async def _shutdown(self, intake: anyio.CancelScope, tg: anyio.abc.TaskGroup) -> None:
        logs.event("shutdown_started", "INFO", "stopping intake")
        intake.cancel()
        deadline_s = self.settings.shutdown_deadline_s
        with anyio.move_on_after(deadline_s / 2) as drain:
            await self._dispatcher.drained()
        if drain.cancelled_caught:
            logs.event("shutdown_drain_incomplete", "WARNING", "jobs still pending at the deadline; the saved position keeps them", pending=self._queue.pending_jobs)
        if self._started.is_set():  # before that, nothing was read that a save could keep
            await self._keeper.save_at_stop(deadline_s / 2)
        tg.cancel_scope.cancel()
        logs.event("watcher_stopped")


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error ``run()`` stands for: a deliberate fatal outcome if there is
    one anywhere in the group, else the one error inside nested
    single-member groups, else the group itself (a bug: all of it)."""
    fatal = group.subgroup(lambda exc: isinstance(exc, ConfigurationProblem | Unreachable))
    if fatal is not None:
        group = fatal
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) >= 1:
        if len(error.exceptions) > 1 and fatal is None:
            break
        error = error.exceptions[0]
    return error
