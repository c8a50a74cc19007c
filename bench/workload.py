"""The shared workload of the latency and cost benchmarks, and the keepers
(jobwatch or the seed's poller) that turn its counters into status.

The load: ``jobs`` jobs of ``len(stages)`` stages x ``items`` items, at most
``concurrency`` of them receiving increments at a time (a finished job's
slot goes to a new one), ``rate`` increments per second in total, spread
round-robin over the active jobs (so each job sees one increment every
``concurrency / rate`` seconds). Consumers only ``$inc``; jobs are inserted
when their slot opens. The same seed gives the same jobs and order for every
keeper.

Latency is "from the acknowledgement of a job's last ``$inc`` to the moment a
reader sees the job ``Completed``". The reader is a change stream of its own
(``fullDocument: updateLookup``), in the benchmark's process, timed on the same
monotonic clock as the consumers. The start is the earlier of two moments:
the consumer's ``update_one`` returning for the job's last ``$inc``, and the
reader seeing that increment's event (every item counted). Both are late
estimates of the server's acknowledgement: a consumer coroutine resumes only
when the event loop gets to it (in-process, after whatever the watcher is
doing), and the reader sees the event after the commit. Taking the earlier
one keeps the figure from going negative, which the consumer's clock alone
did in-process (the watcher's completion was seen before the consumer's task
resumed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from bson import ObjectId
from pymongo import AsyncMongoClient

from bench import common
from bench.poller import POLL_INTERVAL_S, VARIANTS, SeedPoller
from watcher.cli import simulate

JOBS = "background_jobs"
OBSERVED = [{"$match": {"operationType": {"$in": ["update", "replace", "insert"]}}}]
#: Keepers: the watcher and the two seed pollers.
KEEPERS = ("jobwatch", "poller_fixed", "poller_original")
#: The load and the reader alone: what the backend sustains without a keeper.
NO_KEEPER = "none"
STARTUP_DEADLINE_S = 60.0


@dataclass(frozen=True)
class Plan:
    jobs: int = 200
    concurrency: int = 100
    stages: tuple[str, ...] = ("thumbnail", "cache")
    items: int = 10
    rate: float = 200.0  # increments per second, all jobs together
    consumers: int = 4  # more only thrash the embedded engine: its wire proxy runs in a thread of this process
    legacy_fraction: float = 0.3  # collectionId null: the original poller never completes these
    job_type: str = "resume-collection"
    seed: int = 42

    @property
    def increments(self) -> int:
        return self.jobs * len(self.stages) * self.items

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "concurrency": self.concurrency,
            "stages": list(self.stages),
            "items_per_stage": self.items,
            "rate_asked": self.rate,
            "consumers": self.consumers,
            "legacy_fraction": self.legacy_fraction,
            "increments": self.increments,
            "seconds_between_increments_per_job": round(self.concurrency / self.rate, 3) if self.rate else None,
        }


@dataclass
class Outcome:
    job_ids: list[Any] = field(default_factory=list)
    increments: int = 0
    elapsed_s: float = 0.0
    last_ack: dict[Any, float] = field(default_factory=dict)  # job -> monotonic time its last $inc was acknowledged

    @property
    def achieved_rate(self) -> float:
        return self.increments / self.elapsed_s if self.elapsed_s else 0.0


def _new_job(plan: Plan, rng: random.Random) -> dict[str, Any]:
    """A job as the image service creates it (the simulator's builder)."""
    shape = simulate.Plan(stages=plan.stages, items=plan.items, job_type=plan.job_type)
    return simulate.new_job(shape, legacy=rng.random() < plan.legacy_fraction, collection_id=ObjectId())


async def play(db: Any, plan: Plan, progress: common.Progress | None = None, outcome: Outcome | None = None) -> Outcome:
    """Run the plan's consumers against ``db``; returns when every increment is
    acknowledged. ``outcome`` (optional) is filled as the load runs."""
    rng = random.Random(plan.seed)
    jobs = db[JOBS]
    outcome = outcome if outcome is not None else Outcome()
    remaining: dict[Any, int] = {}
    per_job = len(plan.stages) * plan.items
    send, receive = anyio.create_memory_object_stream[tuple[Any, str]](max_buffer_size=plan.consumers * 2)

    async def consumer() -> None:
        async with receive.clone() as items:
            async for job_id, stage in items:
                await jobs.update_one({"_id": job_id}, {"$inc": {f"stages.{stage}.completedItems": 1}})
                outcome.increments += 1
                remaining[job_id] -= 1
                if remaining[job_id] == 0:
                    outcome.last_ack[job_id] = time.monotonic()
                if progress is not None:
                    progress.advance()

    async def start_job() -> list[tuple[Any, str]]:
        doc = _new_job(plan, rng)
        await jobs.insert_one(doc)
        outcome.job_ids.append(doc["_id"])
        remaining[doc["_id"]] = per_job
        work = [(doc["_id"], stage) for stage in plan.stages for _ in range(plan.items)]
        rng.shuffle(work)
        return work

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(plan.consumers):
            tg.start_soon(consumer)
        async with send:
            active: list[list[tuple[Any, str]]] = []
            created = 0
            while created < min(plan.concurrency, plan.jobs):
                active.append(await start_job())
                created += 1
            started = time.monotonic()
            sent = 0
            slot = 0
            while active:
                if plan.rate > 0:
                    due = started + sent / plan.rate
                    ahead_s = due - time.monotonic()
                    if ahead_s > 0.001:
                        await anyio.sleep(ahead_s)
                slot %= len(active)
                work = active[slot]
                await send.send(work.pop())
                sent += 1
                if not work:
                    if created < plan.jobs:
                        active[slot] = await start_job()
                        created += 1
                    else:
                        active.pop(slot)
                        continue
                slot += 1
        receive.close()
    outcome.elapsed_s = time.monotonic() - started
    return outcome


async def observe(stream: Any, counted: dict[Any, float], done: dict[Any, float]) -> None:
    """Record when each job is first seen with every item counted, and first
    seen Completed (monotonic seconds)."""
    while True:
        event = await stream.try_next()
        if event is None:
            await anyio.sleep(0)
            continue
        now = time.monotonic()
        doc = event.get("fullDocument") or {}
        job_id = doc.get("_id", event.get("documentKey", {}).get("_id"))
        if doc.get("status") == "Completed":
            done.setdefault(job_id, now)
            counted.setdefault(job_id, now)
            continue
        stages = list((doc.get("stages") or {}).values())
        if stages and all(isinstance(s, dict) and s.get("completedItems", 0) >= s.get("totalItems", 1) for s in stages):
            counted.setdefault(job_id, now)


async def settle(done: dict[Any, float], job_ids: list[Any], deadline_s: float) -> None:
    with anyio.move_on_after(deadline_s):
        while not all(j in done for j in job_ids):
            await anyio.sleep(0.02)


# -- backends --------------------------------------------------------------


class Backend:
    """Where the database is and how change streams are read from it.

    Every keeper and the reader use PyMongo's ``collection.watch()`` over the
    wire: the embedded server serves real change streams, so there is no
    in-process shortcut left. ``server`` is the embedded server when this
    process runs it (``None`` against ``MONGODB_URI`` or a subprocess).
    """

    mode = "in-process"

    def __init__(self, uri: str, server: Any | None = None) -> None:
        self.uri = uri
        self.server = server

    def change_source(self, database: str) -> Any | None:
        """The watcher's source: None, so it uses PyMongo's default."""
        return None

    def local_database(self, database: str) -> Any | None:
        """The engine's own (async, PyMongo-like) database when it is in this
        process: filling through it skips the wire, which is not what is measured."""
        return self.server.engine.client[database] if self.server is not None else None

    async def observer(self, client: AsyncMongoClient[Any], database: str) -> Any:
        from watcher.intake.source import PyMongoChangeSource

        return await PyMongoChangeSource(client[database][JOBS]).open(OBSERVED, resume_after=None, max_await_ms=50)

    def info(self) -> dict[str, Any]:
        return common.backend(self.mode)


@contextlib.asynccontextmanager
async def in_process() -> AsyncIterator[Backend]:
    """The embedded server in this process (or ``MONGODB_URI``)."""
    uri = common.mongodb_uri()
    if uri is not None:
        yield Backend(uri)
        return
    from jobwatch_embedded import server

    async with server.start() as embedded:
        yield Backend(embedded.uri, embedded)


def jobwatch_command() -> list[str]:
    exe = Path(sys.executable).with_name("jobwatch")
    return [str(exe)] if exe.exists() else [shutil.which("jobwatch") or "jobwatch"]


def embedded_server_available() -> tuple[bool, str]:
    """Whether this tree has ``jobwatch embedded-server`` (the wire server with change streams)."""
    try:
        out = subprocess.run([*jobwatch_command(), "embedded-server", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run jobwatch: {exc}"
    if out.returncode != 0:
        return False, "`jobwatch embedded-server` is not in this tree (" + (out.stderr.strip().splitlines() or ["?"])[-1][:160] + ")"
    return True, "available"


class SeparateProcess(Backend):
    """``jobwatch embedded-server`` (or ``MONGODB_URI``) as the database; the
    watcher is ``jobwatch run --uri`` in a process of its own."""

    mode = "separate-process"

    def change_source(self, database: str) -> Any | None:
        return None


@contextlib.asynccontextmanager
async def separate_process() -> AsyncIterator[Backend]:
    uri = common.mongodb_uri()
    if uri is not None:
        yield SeparateProcess(uri)
        return
    proc = subprocess.Popen([*jobwatch_command(), "embedded-server"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        if not line.startswith("mongodb://"):
            raise RuntimeError(f"jobwatch embedded-server did not print its URI first (got {line!r})")
        # Keep reading what it prints next, so a full pipe never blocks the server.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield SeparateProcess(line.strip())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def watcher_process(uri: str, database: str, client: AsyncMongoClient[Any], completions: dict[Any, float] | None = None) -> AsyncIterator[subprocess.Popen[str]]:
    """``jobwatch run --uri`` as a subprocess; ready once its heartbeat document exists.
    ``completions`` is filled, when it stops, with each job's own latency as
    its log reports it (see ``WatcherLatencies``)."""
    env = {**os.environ, "JOBWATCH_LOG_LEVEL": "INFO", "JOBWATCH_LOG_JSON": "true"}
    cmd = [*jobwatch_command(), "run", "--uri", uri, "--database", database, "--health-port", "0", "--sweep-interval-s", "3600"]
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty watcher must never block on it
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env)
    try:
        positions = client[database]["jobwatch_positions"]
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while await positions.find_one({}) is None:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"jobwatch run exited with {proc.returncode}: {log.read()[-500:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("jobwatch run did not start within the deadline")
            await anyio.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if completions is not None:
            log.seek(0)
            for line in log:
                WatcherLatencies.parse(line, completions)
        log.close()


class WatcherLatencies:
    """The watcher's own share of each completion: its ``job_completed`` log
    line's ``latency_ms``, from the server's time on the event that finished
    the job (``wallTime``) to the watcher's write being acknowledged. The
    rest of the end-to-end figure is the server's: delivering that event, and
    then the ``Completed`` one to the reader."""

    ACTION = "job_completed"

    @staticmethod
    def parse(line: str, into: dict[Any, float]) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return
        if isinstance(record, dict) and record.get("action") == WatcherLatencies.ACTION and isinstance(record.get("latency_ms"), int | float):
            into.setdefault(str(record.get("job_id")), float(record["latency_ms"]))

    @staticmethod
    @contextlib.contextmanager
    def captured(into: dict[Any, float]) -> Iterator[None]:
        """The same, from a watcher in this process (a log sink of its own)."""
        from loguru import logger

        def sink(message: Any) -> None:
            extra = message.record["extra"]
            if isinstance(extra.get("latency_ms"), int | float):
                into.setdefault(str(extra.get("job_id")), float(extra["latency_ms"]))

        handle = logger.add(sink, level="INFO", filter=lambda record: record["extra"].get("action") == WatcherLatencies.ACTION)
        try:
            yield
        finally:
            logger.remove(handle)


# -- one keeper under one workload -----------------------------------------


@dataclass
class Run:
    keeper: str
    plan: Plan
    outcome: Outcome
    done: dict[Any, float]
    counted: dict[Any, float]
    commands: common.CommandCounter | None
    settle_s: float
    watcher_ms: dict[Any, float] = field(default_factory=dict)  # job id (as text) -> the watcher's own latency

    def _start(self, job: Any) -> float | None:
        moments = [t for t in (self.outcome.last_ack.get(job), self.counted.get(job)) if t is not None]
        return min(moments) if moments else None

    @property
    def latencies_ms(self) -> list[float]:
        out = []
        for job in self.outcome.job_ids:
            start = self._start(job)
            if job in self.done and start is not None:
                out.append((self.done[job] - start) * 1000)
        return out

    @property
    def latencies_from_consumer_ack_ms(self) -> list[float]:
        """The consumer's clock alone (can be negative in-process; see the module doc)."""
        return [(self.done[j] - self.outcome.last_ack[j]) * 1000 for j in self.outcome.job_ids if j in self.done and j in self.outcome.last_ack]

    @property
    def delivery_ms(self) -> list[float]:
        """The server's event delivery: the consumer's acknowledgement of a
        job's last ``$inc`` to the reader seeing that increment's event."""
        return [(self.counted[j] - self.outcome.last_ack[j]) * 1000 for j in self.outcome.job_ids if j in self.counted and j in self.outcome.last_ack]

    @property
    def watcher_latencies_ms(self) -> list[float]:
        return [self.watcher_ms[str(j)] for j in self.outcome.job_ids if str(j) in self.watcher_ms]

    @property
    def completed(self) -> int:
        return sum(j in self.done for j in self.outcome.job_ids)


async def run_keeper(
    backend: Backend,
    keeper: str,
    plan: Plan,
    *,
    label: str,
    settings_overrides: dict[str, Any] | None = None,
    on_watcher: Callable[[Any], None] | None = None,
) -> Run:
    """One keeper, the plan's load, on a database of its own. Commands are
    counted on the keeper's own client (in this process only)."""
    from watcher.settings import Settings
    from watcher.service import Watcher

    database = f"bench_{label}_{keeper}_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    counter = common.CommandCounter()
    load_client: AsyncMongoClient[Any] = AsyncMongoClient(backend.uri)
    keeper_client: AsyncMongoClient[Any] = AsyncMongoClient(backend.uri, event_listeners=[counter])
    db = load_client[database]
    done: dict[Any, float] = {}
    counted: dict[Any, float] = {}
    progress = common.Progress(f"{label} {keeper}", plan.increments)
    settle_s = POLL_INTERVAL_S * 2.5 if keeper != "jobwatch" else 10.0
    watcher_ms: dict[Any, float] = {}
    stream = await backend.observer(load_client, database)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(observe, stream, counted, done)
            if keeper == NO_KEEPER:
                outcome = await play(db, plan, progress)
                commands = None
            elif keeper == "jobwatch" and isinstance(backend, SeparateProcess):
                async with watcher_process(backend.uri, database, load_client, watcher_ms):
                    outcome = await play(db, plan, progress)
                    await settle(done, outcome.job_ids, settle_s)
                commands = None
            elif keeper == "jobwatch":
                settings = Settings(uri=backend.uri, database=database, health_port=0, sweep_interval_s=3600, **(settings_overrides or {}))
                watcher = Watcher(keeper_client, settings, change_source=backend.change_source(database))
                with WatcherLatencies.captured(watcher_ms):
                    async with watcher:
                        counter.reset()  # start-up (index, first sweep, position) is not per-job cost
                        outcome = await play(db, plan, progress)
                        await settle(done, outcome.job_ids, settle_s)
                        if on_watcher is not None:
                            on_watcher(watcher)
                commands = counter
            else:
                poller = SeedPoller(keeper_client[database], require_collection=VARIANTS[keeper])
                tg.start_soon(poller.run)
                outcome = await play(db, plan, progress)
                await settle(done, outcome.job_ids, settle_s)
                commands = counter
            tg.cancel_scope.cancel()
    finally:
        progress.close()
        await stream.close()
        await load_client.close()
        await keeper_client.close()
    return Run(keeper, plan, outcome, done, counted, commands, settle_s, watcher_ms)


async def capacity(backend: Backend, plan: Plan) -> Run:
    """The backend's own ceiling under this load: the same consumers and
    reader, increments sent as fast as they are acknowledged, no keeper."""
    unthrottled = dataclasses.replace(plan, rate=0.0)
    return await run_keeper(backend, NO_KEEPER, unthrottled, label="capacity")
