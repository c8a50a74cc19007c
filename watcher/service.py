"""The service: one instance of a group that shares a watcher name. It
wires the lease loop, the pipelines of the partitions it holds, the census
and the health endpoint into one ``run()`` that owns one task group.

What happens where: the elector (``watcher.group.elector``) keeps this
instance's heartbeat, takes, renews and releases the partitions' leases and
runs a pipeline (``watcher.group.pipeline``: stream, dispatcher, sweeps,
position) for each partition it holds; every driver error was already
translated at the storage boundary (``watcher.storage.errors``). This module
only starts them in order and stops them in order: each partition stops
intake, drains, saves its position (shielded, with a deadline) and releases
its lease; then the instance says goodbye and closes.
"""

from __future__ import annotations

import os
import socket
import time
import types
from collections.abc import Callable, Iterable
from typing import Any

import anyio

import rules
from watcher.group.elector import GOODBYE_DEADLINE_S, Elector
from watcher.group.pipeline import Pipeline, merged
from watcher.group.stopping import Stop
from watcher.group.tenure import Timing
from watcher.intake.source import ChangeSource, PyMongoChangeSource
from watcher.intake.sweep import SweepReport
from watcher.ops import logs
from watcher.ops.health import HealthServer
from watcher.ops.metrics import Metrics, version
from watcher.settings import Settings
from watcher.storage import backoff, census, errors, reachability
from watcher.storage.lease import Grant, MongoLeases
from watcher.storage.members import MongoMembers, new_instance_id
from watcher.storage.partitions import EVERYTHING, Slice, check_hashing
from watcher.storage.position import MongoPositionStore, PositionStore
from watcher.storage.store import MongoJobStore

# The deliberate fatal outcomes, where callers have always found them.
ConfigurationProblem = errors.ConfigurationProblem
Unreachable = errors.Unreachable


class Watcher:
    """jobwatch's watcher, embeddable in any asyncio application.

    Give it a connected ``AsyncMongoClient`` (it does not close it) and
    ``Settings``. ``run()`` works until ``stop()``; or use it as an async
    context manager, which runs it in the background and stops it on exit.
    The change source defaults to PyMongo's ``collection.watch()``.

    Any number of watchers may run with one ``watcher_name`` (in one process
    or many): they share its partitions, one leader each, by leases in
    MongoDB; the others stand by, ready to take over.

    ``run()`` raises only ``ConfigurationProblem`` (exit code 2: bad
    settings, missing privileges, a standalone server without degraded mode,
    a busy health port, instances of the name with other partitions) or
    ``Unreachable`` (exit code 3), each with a one-line message; everything
    else foreseeable is retried inside.
    """

    def __init__(
        self,
        client: Any,
        settings: Settings | None = None,
        *,
        change_source: ChangeSource | None = None,
        position_store: Callable[[Grant], PositionStore] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings = settings or Settings()
        self._db = db = client[settings.database]
        self.metrics = metrics or Metrics()
        self.metrics.sweep_interval.set(settings.sweep_interval_s)  # the periodic sweeps keep it current
        self._clock = clock
        self._client = client
        self._source = change_source or PyMongoChangeSource(db[settings.jobs_collection])
        self._positions = db[settings.positions_collection]
        self._position_store = position_store or self._mongo_positions
        #: This process's identity in the group: host:pid:random.
        self.instance = new_instance_id()
        self._timing = Timing(lease_s=settings.lease_s, renew_s=settings.renew_s)
        self._elector = Elector(
            MongoLeases(
                self._positions,
                watcher=settings.watcher_name,
                partitions=settings.partitions,
                holder=self.instance,
                lease_s=settings.lease_s,
            ),
            MongoMembers(self._positions, watcher=settings.watcher_name, instance=self.instance),
            partitions=settings.partitions,
            timing=self._timing,
            lead=self._lead,
            about=self._about,
            metrics=self.metrics,
            job_types=settings.job_types,
            observe=settings.observe,
            retry=backoff.Backoff(base_s=settings.backoff_base_s, max_s=settings.renew_s),
            clock=clock,
        )
        self._pipelines: dict[int, Pipeline] = {}
        self._observer: Pipeline | None = None
        self._one_shot: Pipeline | None = None
        self._stop = Stop()
        self._started = anyio.Event()
        self._finished = anyio.Event()
        self._settled = anyio.Event()
        self._in_group = anyio.Event()
        self._intake_done = anyio.Event()
        self._running = False
        self._tg: anyio.abc.TaskGroup | None = None
        self.last_sweep: SweepReport | None = None
        self.health: HealthServer | None = None
        self._metrics_from_pipelines()

    def _metrics_from_pipelines(self) -> None:
        """Instance-wide gauges over the pipelines running now, read at each scrape."""
        self.metrics.streaming.set_function(lambda: float(self.streaming))
        self.metrics.degraded.set_function(lambda: float(self.degraded))
        self.metrics.pending_jobs.set_function(lambda: float(sum(p.pending_jobs for p in self._active().values())))
        self.metrics.backlog_tokens.set_function(lambda: float(sum(p.backlog_tokens for p in self._active().values())))

    # -- public API ------------------------------------------------------

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
        """One reconciliation pass now (also while ``run()`` is going: then
        over the partitions this instance holds, through their pipelines;
        otherwise over every job).

        Path A raises only counters that stood still for ``path_a_quiet_s``.
        With ``settle`` (the default when the service is not running and
        this is no dry run, as for ``jobwatch sweep``), a candidate not seen
        before is looked at once, the pass waits that long (``on_wait`` hears
        of it first: the look's report, listing the jobs waited for, and the
        seconds) and then makes the pass it reports; a running service
        remembers what its stream and earlier sweeps saw instead. A dry run
        never waits: its report lists the jobs path A would wait for
        (``waiting``). Transient failures are retried a few times; then
        ``errors.StoreUnavailable``.
        """
        if settle is None:
            settle = not self._running and not dry_run
        active = self._active()
        if self._running and active:
            reports = []
            for pipeline in active.values():
                reports.append(
                    await pipeline.sweep(
                        dry_run=dry_run, job_types=job_types, full=full, on_job=on_job, settle=settle, on_wait=on_wait
                    )
                )
            report = merged(reports)
        else:
            if self._one_shot is None:
                self._one_shot = Pipeline(self._db, self.settings, self.metrics, self._source, clock=self._clock)
            report = await self._one_shot.sweep(
                dry_run=dry_run, job_types=job_types, full=full, on_job=on_job, settle=settle, on_wait=on_wait
            )
        if not dry_run:
            self.last_sweep = report
        return report

    async def run(self) -> None:
        """Run until ``stop()``. Raises ``ConfigurationProblem`` or ``Unreachable``
        (one line each) for what no retry can fix."""
        if self._running:
            raise RuntimeError("this Watcher is already running")
        self._running = True
        try:
            await self._run()
        except BaseExceptionGroup as group:
            raise errors.sole(group) from None
        finally:
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
        """Returns once this instance joined its group and the partitions it
        took at once have their stream open and their first sweep done (a
        standby: once it joined)."""
        await self._started.wait()

    @property
    def role(self) -> str:
        """``leader`` (holds a partition), ``standby`` or ``observe``."""
        return self._elector.role

    @property
    def partitions_held(self) -> list[int]:
        """The partitions whose lease this instance holds (none under --observe)."""
        return sorted(self._elector.leading())

    @property
    def streaming(self) -> bool:
        """The change stream of every partition held is open (False when none is held)."""
        active = self._active()
        return bool(active) and all(p.streaming for p in active.values())

    @property
    def degraded(self) -> bool:
        return any(p.degraded for p in self._active().values())

    def readiness(self) -> str | None:
        """What ``/readyz`` says, in one place: None when ready, else why not,
        in a few words. Ready: started and not stopping; in touch with MongoDB
        for its leases; for each partition held, the stream open and answering
        (a batch, even empty, within the stall bound) or degraded mode on
        purpose, the backlog below its cap, sweeps succeeding or being
        retried. A standby holding nothing is ready: standing by is its job."""
        if not self._started.is_set():
            return "starting"
        if self._stop.is_set():
            return "stopping"
        now = self._clock()
        if not self.settings.observe and not self._elector.in_touch(now):
            return "cannot reach MongoDB to keep its leases"
        for partition, pipeline in sorted(self._active().items()):
            reason = pipeline.readiness(now)
            if reason is not None:
                return reason if self.settings.partitions == 1 else f"partition {partition}: {reason}"
        return None

    @property
    def ready(self) -> bool:
        return self.readiness() is None

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
            raise errors.sole(group) from None

    # -- the service -----------------------------------------------------

    def _active(self) -> dict[int, Pipeline]:
        """The pipelines doing their partition's work now (the observer's, under --observe)."""
        if self._observer is not None:
            return {0: self._observer}
        return {k: self._pipelines[k] for k in self._elector.leading() if k in self._pipelines}

    def _lead(self, grant: Grant) -> Pipeline:
        """The elector took ``grant``: a fresh pipeline for its partition."""
        settings = self.settings
        pipeline = Pipeline(
            self._db,
            settings,
            self.metrics,
            self._source,
            partition=Slice.of(settings.partitions, grant.partition),
            index=grant.partition,
            positions=self._position_store(grant),
            on_sweep=self._swept,
            clock=self._clock,
        )
        self._pipelines[grant.partition] = pipeline
        return pipeline

    def _mongo_positions(self, grant: Grant) -> PositionStore:
        return MongoPositionStore(
            self._positions,
            grant,
            lease_s=self.settings.lease_s,
            save_interval_s=self.settings.position_save_interval_s,
            state=lambda: self._pipelines[grant.partition].state(),
        )

    def _swept(self, report: SweepReport) -> None:
        self.last_sweep = report

    def _about(self) -> dict[str, Any]:
        """This instance, as its heartbeat tells ``jobwatch status`` and the group."""
        active = self._active()
        settings = self.settings
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": version(),
            "partitions": settings.partitions,
            "jobTypes": list(settings.job_types),
            "leaseS": settings.lease_s,
            "renewS": settings.renew_s,
            "state": {
                "pendingJobs": sum(p.pending_jobs for p in active.values()),
                "streaming": self.streaming,
                "degraded": self.degraded,
            },
        }

    async def _run(self) -> None:
        settings = self.settings
        logs.event(
            "watcher_starting",
            database=settings.database,
            collection=settings.jobs_collection,
            watcher=settings.watcher_name,
            instance=self.instance,
            role="observe" if settings.observe else "member",
            partitions=settings.partitions,
        )
        async with anyio.create_task_group() as tg:
            if settings.health_port:
                await self._start_health(tg)  # first: probes answer during a long start-up
            intake = anyio.CancelScope()
            tg.start_soon(self._stop.guard, self._intake, intake)
            await self._stop.wait()
            await self._shutdown(intake)
            tg.cancel_scope.cancel()
        self._stop.raise_fatal()

    async def _intake(self, scope: anyio.CancelScope) -> None:
        """Start-up, then the group's life; all of it inside ``scope``, so a
        stop during start-up cancels it wherever it is waiting."""
        settings = self.settings
        try:
            with scope:
                await reachability.check(self._client, settings)  # a wrong URI or a down server, said at once
                self.metrics.observe_mode.set(1 if settings.observe else 0)
                if settings.create_index and not settings.observe:  # --observe writes nothing to the jobs
                    await self._ensure_index()
                if settings.partitions > 1 and not settings.observe:
                    await check_hashing([self._db[settings.jobs_collection], self._positions], settings.partitions)
                async with anyio.create_task_group() as tg:
                    self._in_group.set()  # from here a stop is honoured in order
                    if settings.observe:
                        self._observer = Pipeline(
                            self._db, settings, self.metrics, self._source, on_sweep=self._swept, clock=self._clock
                        )
                        tg.start_soon(self._observer.run)

                    def joined() -> None:
                        tg.start_soon(self._announce_started, tg)

                    await self._elector.run(joined=joined)
                    if self._observer is not None:
                        await self._observer.ended.wait()
                    tg.cancel_scope.cancel()
        finally:
            self._intake_done.set()

    def _census_slice(self) -> Slice:
        if self.settings.observe:
            return EVERYTHING
        return Slice.of(self.settings.partitions, *self._elector.leading())

    async def _announce_started(self, tg: anyio.abc.TaskGroup) -> None:
        """Started: in the group, and every pipeline it took at once has its
        stream open and its start-up sweep done (or has ended)."""
        for pipeline in list(self._active().values()):
            await _first_of(pipeline.started, pipeline.ended)
        if self._stop.is_set():
            return  # a fatal outcome (or a stop) came first: run() ends with it, never "started"
        # After the start-up sweeps, so the first census counts what they left open.
        tg.start_soon(census.run, self._db, self.settings, self.metrics, self._census_slice)
        self._started.set()
        self._settled.set()
        held = ",".join(map(str, self.partitions_held)) or "none"
        logs.event(
            "watcher_started",
            instance=self.instance,
            role=self.role,
            partitions=held,
            streaming=self.streaming,
            degraded=self.degraded,
        )

    async def _ensure_index(self) -> None:
        try:
            if await MongoJobStore.from_settings(self._db, self.settings).ensure_sweep_index():
                logs.event("index_created", "INFO", "created the sweep's index on (status, jobType)")
        except (errors.StorageProblem, errors.ConfigurationProblem) as exc:
            # Sweeps work without it, only slower: never a reason to stop.
            logs.event(
                "index_not_created",
                "WARNING",
                "could not create the sweep's index; sweeping without it",
                error=errors.name(exc),
            )

    async def _start_health(self, tg: anyio.abc.TaskGroup) -> None:
        self.health = HealthServer(
            self.metrics,
            ready=lambda: self.ready,
            why_not_ready=self.readiness,
            host=self.settings.health_host,
            port=self.settings.health_port,
        )
        try:
            await tg.start(self.health.serve)
        except OSError as exc:
            raise ConfigurationProblem(
                f"cannot listen on {self.settings.health_host}:{self.settings.health_port} for health/metrics "
                f"({exc.strerror}); set JOBWATCH_HEALTH_PORT (0 disables the endpoint)"
            ) from None

    async def _shutdown(self, intake: anyio.CancelScope) -> None:
        logs.event("shutdown_started", "INFO", "stopping intake")
        self._elector.request_stop()
        if self._observer is not None:
            self._observer.request_stop()
        if self._in_group.is_set():
            # Each partition stops in order (drain, save: bounded by the
            # shutdown deadline) and releases its lease; then the goodbye.
            with anyio.move_on_after(self.settings.shutdown_deadline_s + self.settings.renew_s + GOODBYE_DEADLINE_S):
                await self._intake_done.wait()
        intake.cancel()
        logs.event("watcher_stopped", instance=self.instance)


async def _first_of(*events: anyio.Event) -> None:
    """Returns once any of ``events`` is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)
