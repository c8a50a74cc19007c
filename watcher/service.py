"""The service: wires stream, dispatcher, sweeps, position and health into one
``run()`` that owns one task group.

Start-up order matters: the stream is opened (from the saved position) before
the first sweep, and consumed after it, so no change falls between the two.
Shutdown is a sequence: stop intake, drain, save the position (shielded,
with a deadline), close.
"""

from __future__ import annotations

import datetime as dt
import time
import types
from collections.abc import Callable, Iterable
from typing import Any

import anyio
from pymongo import AsyncMongoClient
from pymongo import errors as pymongo_errors

import rules
from watcher.storage import backoff
from watcher.storage import census
from watcher.storage import errors
from watcher.ops import logs
from watcher.decide.coalesce import JobQueue
from watcher.decide.dispatch import Dispatcher
from watcher.ops.health import HealthServer
from watcher.ops.metrics import Metrics
from watcher.storage.position import MongoPositionStore, PositionStore
from watcher.settings import Settings
from watcher.intake.source import ChangeSource, ChangeStream, PyMongoChangeSource
from watcher.storage.position import Token
from watcher.storage.store import JobStore
from watcher.intake.stream import StreamReader
from watcher.intake.sweep import Sweeper, SweepReport

CLOSE_DEADLINE_S = 2.0


class ConfigurationProblem(Exception):
    """The watcher cannot run as configured; the message says how to fix it."""


class Unreachable(Exception):
    """No MongoDB server answered within the server-selection timeout."""


async def check_server(client: AsyncMongoClient[Any], settings: Settings) -> None:
    """One ping, so a wrong URI or a down server is said at once, clearly."""
    try:
        await client.admin.command("ping")
    except pymongo_errors.ServerSelectionTimeoutError as exc:
        raise Unreachable(
            f"MongoDB at {settings.uri_redacted} is unreachable: no server answered within "
            f"{settings.server_selection_timeout_ms} ms ({logs.redacted(str(exc)).split(',')[0][:200]})"
        ) from None
    except pymongo_errors.OperationFailure as exc:
        if errors.classify(exc) is errors.Action.FATAL:
            raise ConfigurationProblem(f"MongoDB refused jobwatch: {errors.name(exc)}") from None
        raise


class Watcher:
    """jobwatch's watcher, embeddable in any asyncio application.

    Give it a connected ``AsyncMongoClient`` (it does not close it) and
    ``Settings``. ``run()`` works until ``stop()``; or use it as an async
    context manager, which runs it in the background and stops it on exit.
    The change source defaults to PyMongo's ``collection.watch()``.
    """

    def __init__(
        self,
        client: AsyncMongoClient[Any],
        settings: Settings | None = None,
        *,
        change_source: ChangeSource | None = None,
        position_store: PositionStore | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or Settings()
        db = client[self.settings.database]
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._policy = rules.Policy(scan_stage=self.settings.scan_stage)
        self._client = client
        self._store = JobStore(db, self.settings)
        self._source = change_source or PyMongoChangeSource(db[self.settings.jobs_collection])
        self._positions = position_store or MongoPositionStore(
            db, self.settings.positions_collection, self.settings.watcher_name,
            save_interval_s=self.settings.position_save_interval_s, state=self._heartbeat_state,
        )
        self._queue = JobQueue(max_jobs=self.settings.max_pending_jobs, progress_interval_s=self.settings.progress_interval_s)
        self._dispatcher = Dispatcher(
            self._store,
            self._queue,
            self.metrics,
            workers=self.settings.workers,
            policy=self._policy,
            retry_backoff=self._new_backoff(),
            clock=clock,
        )
        self._stream_backoff = self._new_backoff()
        self._reader = StreamReader(self._source, self._dispatcher, self.metrics, self.settings, healthy=self._stream_backoff)
        self._sweeper = Sweeper(self._store, self.metrics, policy=self._policy, clock=clock)
        self._stop = anyio.Event()
        self._started = anyio.Event()
        self._finished = anyio.Event()
        self._settled = anyio.Event()
        self._running = False
        self._saved_at: float | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.last_sweep: SweepReport | None = None
        self.streaming = False
        self.degraded = False
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
    ) -> SweepReport:
        """One reconciliation pass now (also while ``run()`` is going)."""
        report = await self._sweeper.sweep(full=full, dry_run=dry_run, job_types=job_types, on_job=on_job)
        if not dry_run:
            self.last_sweep = report
        return report

    async def run(self) -> None:
        """Run until ``stop()``. Raises ``ConfigurationProblem`` for what no
        retry can fix (standalone server, bad credentials)."""
        if self._running:
            raise RuntimeError("this Watcher is already running")
        self._running = True
        try:
            await self._run()
        except BaseExceptionGroup as group:
            raise _sole(group) from None
        finally:
            self.streaming = False
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
    def ready(self) -> bool:
        return self._started.is_set() and (self.streaming or self.degraded) and not self._stop.is_set()

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
                await self._start_health(tg)  # first: probes answer during a long start-up sweep
            await check_server(self._client, self.settings)
            self.metrics.observe_mode.set(1 if settings.observe else 0)
            if settings.create_index and not settings.observe and await self._store.ensure_sweep_index():
                logs.event("index_created", "INFO", "created the sweep's partial index on open statuses")
            saved = await self._positions.load()
            stream = await self._open_first(saved.token if saved else None)
            await self._sweep_now(full=True)
            tg.start_soon(self._dispatcher.run)
            tg.start_soon(self._periodic_sweeps)
            tg.start_soon(self._save_positions)
            tg.start_soon(census.run, self._client[settings.database], settings, self.metrics)
            intake = anyio.CancelScope()
            tg.start_soon(self._intake, intake, stream)
            self._started.set()
            self._settled.set()
            logs.event("watcher_started", streaming=self.streaming, degraded=self.degraded)
            await self._stop.wait()
            await self._shutdown(intake, tg)

    async def _start_health(self, tg: anyio.abc.TaskGroup) -> None:
        self.health = HealthServer(self.metrics, ready=lambda: self.ready, host=self.settings.health_host, port=self.settings.health_port)
        try:
            await tg.start(self.health.serve)
        except OSError as exc:
            raise ConfigurationProblem(
                f"cannot listen on {self.settings.health_host}:{self.settings.health_port} for health/metrics "
                f"({exc.strerror}); set JOBWATCH_HEALTH_PORT (0 disables the endpoint)"
            ) from exc

    async def _open_first(self, token: Token | None) -> ChangeStream | None:
        while True:
            try:
                stream = await self._reader.open(token)
                self._set_streaming(True, resumed=token is not None)
                return stream
            except Exception as exc:
                if errors.is_not_replica_set(exc):
                    self._degrade(exc)  # raises unless degraded mode is allowed
                    return None
                action = self._on_stream_error(exc, "opening")
                if action is errors.Action.RESTART and token is not None:
                    token = None  # history lost: from now, and the first sweep covers the gap
                else:
                    await anyio.sleep(self._stream_backoff.next_delay_s())

    def _degrade(self, exc: BaseException) -> None:
        message = (
            "change streams need a replica set or sharded cluster, and this server is a standalone mongod. "
            "Start it with --replSet rs0 and run rs.initiate() once (see README, 'MongoDB'), "
            "or set JOBWATCH_ALLOW_DEGRADED=true to sweep every "
            f"{self.settings.degraded_sweep_interval_s:g}s instead."
        )
        if not self.settings.allow_degraded:
            raise ConfigurationProblem(message) from exc
        self.degraded = True
        self.metrics.degraded.set(1)
        logs.event("stream_unavailable_degraded", "WARNING", "DEGRADED: no change stream; completions wait for the next sweep. " + message)

    def _set_streaming(self, on: bool, *, resumed: bool = False) -> None:
        self.streaming = on
        self.metrics.streaming.set(1 if on else 0)
        if on:
            logs.event("stream_opened", resumed=resumed)

    def _on_stream_error(self, exc: BaseException, while_: str) -> errors.Action:
        action = errors.classify(exc)
        self.metrics.errors.labels(errors.name(exc), action.value).inc()
        level = "ERROR" if action is errors.Action.FATAL else "WARNING"
        logs.event("stream_error", level, f"change stream error while {while_}", error=errors.name(exc), next_step=action.value, detail=logs.redacted(str(exc))[:300])
        if action is errors.Action.FATAL:
            if not isinstance(exc, pymongo_errors.PyMongoError):
                raise exc  # a bug, not a MongoDB condition: stop loudly with its traceback
            if errors.is_not_replica_set(exc):
                self._degrade(exc)
            raise ConfigurationProblem(f"change stream failed and retrying cannot help: {errors.name(exc)}: {logs.redacted(str(exc))[:300]}") from exc
        return action

    async def _intake(self, scope: anyio.CancelScope, stream: ChangeStream | None) -> None:
        with scope:
            if stream is None:  # degraded: sweeps only
                await anyio.sleep_forever()
            token = self._reader.last_token
            needs_sweep = False
            try:
                while True:
                    try:
                        if stream is None:
                            stream = await self._reader.open(token)
                            self._set_streaming(True, resumed=token is not None)
                            if needs_sweep:  # opened from now first: nothing falls between
                                needs_sweep = False
                                await self._sweep_now(full=True)
                        await self._reader.consume(stream)
                    except Exception as exc:
                        self._set_streaming(False)
                        await _close(stream)
                        stream = None
                        if self._on_stream_error(exc, "streaming") is errors.Action.RESTART:
                            logs.event("stream_restarting", "WARNING", "position unusable: streaming from now, then sweeping", error=errors.name(exc))
                            token, needs_sweep = None, True
                        else:
                            token = self._reader.last_token or token
                        delay_s = self._stream_backoff.next_delay_s()
                        logs.event("stream_reopen_scheduled", "INFO", "reopening the stream", delay_s=round(delay_s, 3), attempt=self._stream_backoff.attempt)
                        await anyio.sleep(delay_s)
            finally:
                await _close(stream)

    async def _sweep_now(self, *, full: bool) -> None:
        try:
            report = await self.sweep(full=full)
        except errors.StoreUnavailable as exc:
            logs.event("sweep_failed", "WARNING", "sweep could not reach MongoDB; the next one will retry", error=str(exc))
            return
        self.metrics.sweep_succeeded()
        try:
            await self._positions.heartbeat(last_sweep=report.summary())
        except errors.StoreUnavailable:
            pass  # the next heartbeat will carry it

    async def _periodic_sweeps(self) -> None:
        count = 0
        while True:
            interval_s = self.settings.degraded_sweep_interval_s if self.degraded else self.settings.sweep_interval_s
            await anyio.sleep(interval_s)
            count += 1
            await self._sweep_now(full=self.degraded or count % self.settings.full_sweep_every == 0)

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

    async def _save_positions(self) -> None:
        while True:
            await anyio.sleep(self.settings.position_save_interval_s)
            await self._save_position()

    async def _save_position(self) -> None:
        token = self._queue.advance(self._clock())
        try:
            if token is not None:
                await self._positions.save(token)
                self._saved_at = self._clock()
                logs.event("position_saved", "DEBUG")
            else:
                await self._positions.heartbeat()
        except errors.StoreUnavailable as exc:
            logs.event("position_save_failed", "WARNING", "could not save the position; will retry", error=str(exc))
        if self._saved_at is not None:
            self.metrics.position_age.set(self._clock() - self._saved_at)

    async def _shutdown(self, intake: anyio.CancelScope, tg: anyio.abc.TaskGroup) -> None:
        logs.event("shutdown_started", "INFO", "stopping intake")
        intake.cancel()
        deadline_s = self.settings.shutdown_deadline_s
        with anyio.move_on_after(deadline_s / 2) as drain:
            await self._dispatcher.drained()
        if drain.cancelled_caught:
            logs.event("shutdown_drain_incomplete", "WARNING", "jobs still pending at the deadline; the saved position keeps them", pending=self._queue.pending_jobs)
        with anyio.CancelScope(shield=True), anyio.move_on_after(deadline_s / 2):
            await self._save_position()
            logs.event("position_saved_at_shutdown")
        tg.cancel_scope.cancel()
        logs.event("watcher_stopped")


async def _close(stream: ChangeStream | None) -> None:
    if stream is None:
        return
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_DEADLINE_S):
        try:
            await stream.close()
        except Exception as exc:  # closing a broken cursor may fail; it is gone either way
            logs.event("stream_close_failed", "DEBUG", error=errors.name(exc))


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside nested single-member task-group errors, else the group."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
