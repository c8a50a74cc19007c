"""The shared workload of the latency and cost benchmarks, and the keepers
(jobwatch or the seed's poller) that turn its counters into status.

The load is the CLI's own simulator (``jobwatch simulate``,
``watcher/cli/simulate.py``): ``jobs`` jobs of ``len(stages)`` stages x
``items`` items, at most ``active`` of them receiving increments at a time (a
finished job's slot goes to a new one), ``rate`` increments per second in
total, round-robin over the active jobs (so each job sees one increment
every ``active / rate`` seconds). Consumers only ``$inc`` (no collection
pushes). The same seed gives the same jobs and order for every keeper.

The database comes from the test suite's resolver (``tests/support/
backends.py``: ``MONGODB_URI``, a ``mongod`` on PATH, Docker, else the
embedded server), in this process or, for the embedded server, as
``jobwatch embedded-server`` in a process of its own.

Latency is "from the acknowledgement of a job's last ``$inc`` to the moment a
reader sees the job ``Completed``". The reader is a change stream of its own
(``fullDocument: updateLookup``), in the benchmark's process, timed on the same
monotonic clock as the consumers. The start is the earlier of two moments:
the consumer's ``update_one`` returning for the job's last ``$inc``, and the
reader seeing that increment's event (every item counted). Both are late
estimates of the server's acknowledgement: a consumer coroutine resumes only
when the event loop gets to it, and the reader sees the event after the
commit. Taking the earlier one keeps the figure from going negative.

The reader also keeps, per job, the server's own times (``wallTime``) of the
last increment and of the completing write, and when it received the last
increment's event: the outside view of the watcher's two steps (the event's
lag, and deciding plus writing), to set beside the watcher's own histograms.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from pymongo import AsyncMongoClient

if __package__ in (None, ""):  # run as the consumers' process
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.poller import POLL_INTERVAL_S, VARIANTS, SeedPoller
from tests.support import backends, served
from tests.support.served import free_port
from watcher.cli import simulate
from watcher.intake import stream as stream_events
from watcher.intake.source import PyMongoChangeSource
from watcher.settings import Settings

JOBS = "background_jobs"
OBSERVED = [{"$match": {"operationType": {"$in": ["update", "replace", "insert"]}}}]
#: Keepers: the watcher and the two seed pollers.
#: The load and the reader alone: what the backend sustains without a keeper.
NO_KEEPER = "none"
STARTUP_DEADLINE_S = 60.0
#: Consumers of the load: more only thrash the embedded engine.
CONSUMERS = 4


def plan(*, jobs: int = 200, active: int = 100, items: int = 10, rate: float = 200.0, seed: int = 42) -> simulate.Plan:
    """The benchmarks' load, as the simulator plays it."""
    return simulate.Plan(
        jobs=jobs,
        items=items,
        rate=rate,
        consumers=CONSUMERS,
        legacy_fraction=0.3,
        job_type="resume-collection",
        seed=seed,
        active=active,
        push_items=False,
    )


def describe(load: simulate.Plan) -> dict[str, Any]:
    active = load.active or load.jobs
    return {
        "jobs": load.jobs,
        "active_jobs": active,
        "stages": list(load.stages),
        "items_per_stage": load.items,
        "rate_asked": load.rate,
        "consumers": load.consumers,
        "legacy_fraction": load.legacy_fraction,
        "increments": load.increments,
        "seconds_between_increments_per_job": round(active / load.rate, 3) if load.rate else None,
        "simulator": "watcher/cli/simulate.py",
    }


def achieved_rate(outcome: simulate.Outcome) -> float:
    return outcome.increments / outcome.elapsed_s if outcome.elapsed_s else 0.0


@dataclass
class Seen:
    """What the benchmark's own change-stream reader saw, per job."""

    counted: dict[Any, float] = field(default_factory=dict)  # monotonic: first seen with every item counted
    done: dict[Any, float] = field(default_factory=dict)  # monotonic: first seen Completed
    counted_server_s: dict[Any, float] = field(default_factory=dict)  # wallTime of that last increment
    counted_received_s: dict[Any, float] = field(default_factory=dict)  # unix time the reader got it
    done_server_s: dict[Any, float] = field(default_factory=dict)  # wallTime of the completing write


async def observe(stream: Any, seen: Seen) -> None:
    while True:
        batch = await stream.next_batch()
        now, wall = time.monotonic(), time.time()
        for event in batch:
            doc = event.get("fullDocument") or {}
            job_id = doc.get("_id", event.get("documentKey", {}).get("_id"))
            server_s = stream_events.event_time_s(event)  # the product's own reading of the server's time
            if doc.get("status") == "Completed":
                if job_id not in seen.done and server_s is not None:
                    seen.done_server_s[job_id] = server_s
                seen.done.setdefault(job_id, now)
                seen.counted.setdefault(job_id, now)
                continue
            stages = list((doc.get("stages") or {}).values())
            if stages and all(
                isinstance(s, dict) and s.get("completedItems", 0) >= s.get("totalItems", 1) for s in stages
            ):
                if job_id not in seen.counted and server_s is not None:
                    seen.counted_server_s[job_id] = server_s
                    seen.counted_received_s[job_id] = wall
                seen.counted.setdefault(job_id, now)


async def settle(done: dict[Any, float], job_ids: list[Any], deadline_s: float) -> None:
    with anyio.move_on_after(deadline_s):
        while not all(j in done for j in job_ids):
            await anyio.sleep(0.02)


# -- backends --------------------------------------------------------------


@dataclass
class Backend:
    """Where the database is. ``server`` is the embedded server when this
    process runs it; ``separate`` when the watcher runs as a process too."""

    uri: str
    server: Any | None = None
    separate: bool = False
    kind: str = "embedded"

    @property
    def mode(self) -> str:
        return "separate-process" if self.separate else "in-process"

    def local_database(self, database: str) -> Any | None:
        """The engine's own (async, PyMongo-like) database when it is in this
        process: filling through it skips the wire, which is not what is measured."""
        return self.server.engine.client[database] if self.server is not None else None

    def info(self) -> dict[str, Any]:
        return common.backend(self.mode, self.kind)


@contextlib.asynccontextmanager
async def backend(separate: bool = False) -> AsyncIterator[Backend]:
    """The test suite's backend: a real server when one is configured, else the
    embedded server, in this process or (``separate``) in one of its own."""
    server = backends.resolve()
    try:
        if server.uri is not None:
            yield Backend(server.uri, separate=separate, kind=server.kind)
        elif server.is_embedded and separate:
            with served.embedded_server() as process:  # as an operator runs it: `jobwatch embedded-server`
                yield Backend(process.uri, separate=True)
        elif server.is_embedded:
            from jobwatch_embedded import server as embedded_server

            async with embedded_server.start() as running:
                yield Backend(running.uri, running)
        else:
            raise RuntimeError(f"no MongoDB for the benchmarks: {server.detail}")
    finally:
        server.close()


def jobwatch_command() -> list[str]:
    exe = Path(sys.executable).with_name("jobwatch")
    return [str(exe)] if exe.exists() else ["jobwatch"]


@dataclass
class WatcherProcess:
    proc: subprocess.Popen[str]
    metrics_url: str
    #: ``/metrics`` as scraped just before the process was stopped.
    metrics: str = ""


@contextlib.asynccontextmanager
async def watcher_process(uri: str, database: str, client: AsyncMongoClient[Any]) -> AsyncIterator[WatcherProcess]:
    """``jobwatch run --uri`` as a subprocess; ready once its heartbeat
    document exists; its ``/metrics`` scraped when the block ends."""
    port = free_port()
    env = {**os.environ, "JOBWATCH_LOG_LEVEL": "WARNING", "JOBWATCH_LOG_JSON": "true"}
    cmd = [
        *jobwatch_command(),
        "run",
        "--uri",
        uri,
        "--database",
        database,
        "--health-port",
        str(port),
        "--sweep-interval-s",
        "3600",
    ]
    # A file, not a pipe: a chatty watcher must never block on it.
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env)
        running = WatcherProcess(proc, f"http://127.0.0.1:{port}/metrics")
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
            yield running
            running.metrics = await anyio.to_thread.run_sync(_scrape, running.metrics_url)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


# -- the consumers, in a process of their own ------------------------------

#: How often (increments) the consumers' process says how far it got.
REPORT_EVERY = 100


async def play_elsewhere(
    uri: str,
    database: str,
    load: simulate.Plan,
    outcome: simulate.Outcome,
    on_increment: Callable[[int], None] | None = None,
) -> None:
    """The plan's consumers in a process of their own (``simulate.play``), so
    the benchmark's reader never waits behind them for its own event loop;
    ``outcome`` gets the jobs as they start, the increments as they are
    acknowledged and, at the end, each job's last acknowledgement (monotonic
    time: the machine's clock, the same in both processes). Cancelling this
    stops the consumers and still collects what they did."""
    from bson import ObjectId

    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--play",
        uri,
        database,
        json.dumps(dataclasses.asdict(load)),
    ]
    async with await anyio.open_process(command, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        lines = BufferedByteReceiveStream(proc.stdout)

        async def follow() -> None:
            while True:
                kind, _, value = (await lines.receive_until(b"\n", 1 << 24)).decode().partition(" ")
                if kind == "job":
                    outcome.job_ids.append(ObjectId(value))
                elif kind == "done":
                    outcome.increments = int(value)
                    if on_increment is not None:
                        on_increment(outcome.increments)
                elif kind == "end":
                    end = json.loads(value)
                    outcome.last_increment_at.update({ObjectId(k): t for k, t in end["last_increment_at"].items()})
                    outcome.increments, outcome.lost, outcome.elapsed_s = (
                        end["increments"],
                        end["lost"],
                        end["elapsed_s"],
                    )
                    return

        try:
            await follow()
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await proc.stdin.send(b"stop\n")  # cancelled: the consumers stop and say what they did
                with anyio.move_on_after(30), contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead):
                    await follow()


async def _play_here(uri: str, database: str, plan: dict[str, Any]) -> None:
    """The consumers' process: play, say how far, stop when told."""
    load = simulate.Plan(**{**plan, "stages": tuple(plan["stages"])})
    outcome = simulate.Outcome()
    out = sys.stdout
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri)
    seen_jobs = 0

    def progress(done: int) -> None:
        nonlocal seen_jobs
        for job_id in outcome.job_ids[seen_jobs:]:
            out.write(f"job {job_id}\n")
        seen_jobs = len(outcome.job_ids)
        out.write(f"done {done}\n")
        out.flush()

    started = time.monotonic()
    try:
        async with anyio.create_task_group() as tg:

            async def until_told() -> None:
                await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                tg.cancel_scope.cancel()

            async def consume() -> None:
                settings = Settings(database=database)
                await simulate.play(
                    client[database],
                    settings,
                    load,
                    outcome=outcome,
                    on_increment=progress,
                    progress_every=REPORT_EVERY,
                )
                tg.cancel_scope.cancel()

            tg.start_soon(until_told)
            tg.start_soon(consume)
    finally:
        await client.close()
    progress(outcome.increments + outcome.lost)
    end = {
        "last_increment_at": {str(k): t for k, t in outcome.last_increment_at.items()},
        "increments": outcome.increments,
        "lost": outcome.lost,
        "elapsed_s": outcome.elapsed_s or time.monotonic() - started,
    }
    out.write("end " + json.dumps(end) + "\n")
    out.flush()


# -- one keeper under one workload -----------------------------------------


@dataclass
class Run:
    keeper: str
    plan: simulate.Plan
    outcome: simulate.Outcome
    seen: Seen
    commands: common.CommandCounter | None
    metrics: str = ""  # the watcher's /metrics at the end (separate process)
    polls: int = 0  # the poller's cycles

    def _start(self, job: Any) -> float | None:
        moments = [t for t in (self.outcome.last_increment_at.get(job), self.seen.counted.get(job)) if t is not None]
        return min(moments) if moments else None

    @property
    def latencies_ms(self) -> list[float]:
        out = []
        for job in self.outcome.job_ids:
            start = self._start(job)
            if job in self.seen.done and start is not None:
                out.append((self.seen.done[job] - start) * 1000)
        return out

    @property
    def delivery_ms(self) -> list[float]:
        """The server's event delivery: the consumer's acknowledgement of a
        job's last ``$inc`` to the reader seeing that increment's event."""
        acked, counted = self.outcome.last_increment_at, self.seen.counted
        return [(counted[j] - acked[j]) * 1000 for j in self.outcome.job_ids if j in counted and j in acked]

    @property
    def lag_outside_ms(self) -> list[float]:
        """The last increment's server time to this reader receiving its event."""
        s = self.seen
        return [
            (s.counted_received_s[j] - s.counted_server_s[j]) * 1000
            for j in self.outcome.job_ids
            if j in s.counted_received_s
        ]

    @property
    def decision_outside_ms(self) -> list[float]:
        """This reader receiving the last increment's event to the server's
        time on the completing write: a reader beside the watcher, deciding
        and writing, seen from outside (the completion's own delivery left out)."""
        s = self.seen
        return [
            (s.done_server_s[j] - s.counted_received_s[j]) * 1000
            for j in self.outcome.job_ids
            if j in s.done_server_s and j in s.counted_received_s
        ]

    @property
    def reaction_outside_ms(self) -> list[float]:
        """The server's time on the last increment to its time on the
        completing write: all of the watcher's share, on the server's clock."""
        s = self.seen
        return [
            (s.done_server_s[j] - s.counted_server_s[j]) * 1000
            for j in self.outcome.job_ids
            if j in s.done_server_s and j in s.counted_server_s
        ]

    @property
    def completed(self) -> int:
        return sum(j in self.seen.done for j in self.outcome.job_ids)


async def run_keeper(
    backend: Backend,
    keeper: str,
    load: simulate.Plan,
    *,
    label: str,
    poller_cycles: int | None = None,
) -> Run:
    """One keeper, the plan's load, on a database of its own. Commands are
    counted on the keeper's own client (in this process only). A poller with
    ``poller_cycles`` gets load until it has polled that many times (the plan
    must hold jobs enough)."""
    from watcher.service import Watcher

    database = f"bench_{label}_{keeper}_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    counter = common.CommandCounter()
    load_client: AsyncMongoClient[Any] = AsyncMongoClient(backend.uri)
    keeper_client: AsyncMongoClient[Any] = AsyncMongoClient(backend.uri, event_listeners=[counter])
    db = load_client[database]
    settings = Settings(uri=backend.uri, database=database, health_port=0, sweep_interval_s=3600)
    seen = Seen()
    progress = common.Progress(f"{label} {keeper}", load.increments)
    settle_s = POLL_INTERVAL_S * 2.5 if keeper.startswith("poller") else 10.0
    outcome = simulate.Outcome()
    metrics = ""
    polls = 0

    async def play() -> None:
        await play_elsewhere(backend.uri, database, load, outcome, progress.update)

    stream = await PyMongoChangeSource(db[JOBS]).open(OBSERVED, resume_after=None, max_await_ms=50)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(observe, stream, seen)
            commands: common.CommandCounter | None = counter
            if keeper == NO_KEEPER:
                await play()
                commands = None
            elif keeper == "jobwatch" and backend.separate:
                async with watcher_process(backend.uri, database, load_client) as process:
                    await play()
                    await settle(seen.done, outcome.job_ids, settle_s)
                metrics = process.metrics
                commands = None
            elif keeper == "jobwatch":
                watcher = Watcher(keeper_client, settings)
                async with watcher:
                    counter.reset()  # start-up (index, first sweep, position) is not per-job cost
                    await play()
                    await settle(seen.done, outcome.job_ids, settle_s)
            else:
                poller = SeedPoller(keeper_client[database], require_collection=VARIANTS[keeper])
                tg.start_soon(poller.run)
                if poller_cycles is None:
                    await play()
                else:
                    # The load goes on until the poller has polled that often (a
                    # poll under load takes seconds: its cycle is longer than its
                    # interval); the jobs whose items were not all counted then
                    # are left out (they cannot complete).
                    started = time.monotonic()
                    async with anyio.create_task_group() as loading:
                        loading.start_soon(play)
                        while poller.polls < poller_cycles:
                            await anyio.sleep(0.1)
                        loading.cancel_scope.cancel()
                    outcome.elapsed_s = outcome.elapsed_s or time.monotonic() - started
                    # Only the jobs the reader saw every item of counted can complete.
                    outcome.job_ids[:] = [job for job in outcome.job_ids if job in seen.counted]
                await settle(seen.done, outcome.job_ids, settle_s)
                polls = poller.polls
            tg.cancel_scope.cancel()
    finally:
        progress.close()
        await stream.close()
        # The next run starts on a server that holds no earlier run's jobs
        # (the embedded engine keeps them as Python objects its collector scans).
        with contextlib.suppress(Exception):
            await load_client.drop_database(database)
        await load_client.close()
        await keeper_client.close()
    return Run(keeper, load, outcome, seen, commands, metrics, polls)


async def capacity(backend: Backend, load: simulate.Plan) -> Run:
    """The backend's own ceiling under this load: the same consumers and
    reader, increments sent as fast as they are acknowledged, no keeper."""
    return await run_keeper(backend, NO_KEEPER, dataclasses.replace(load, rate=0.0), label="capacity")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--play":
        anyio.run(_play_here, sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
