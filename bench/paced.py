"""The watcher alone: its own stream reader and dispatcher, the database removed.

With a database in the loop a rate says how fast the database and the
consumers go, not how fast the watcher can go. Here the product's hot path
(``watcher.group.pipeline.hot_path``: ``StreamReader``, ``JobQueue``,
``Dispatcher``, path A's ``CounterWatch``, the rules, the progress budget,
update building, metrics, its long-lived workers) runs exactly as
``Watcher`` wires it; only the server is replaced, by a process of its own
that plays it over two pipes:

- it keeps the jobs' documents, applies the consumers' increments at the
  asked rate (each due at ``start + n / rate``; rate 0: as fast as they are
  read) and writes each change event, BSON-encoded as a server sends it,
  into the watcher's pipe. A read takes everything the pipe holds (up to
  1 MiB, what a ``getMore`` would have ready), decodes it as the driver
  decodes a reply (``bson.decode_all``) and hands it over as one batch; with
  nothing there it waits up to max-await, like a ``getMore``;
- every guarded update the watcher makes is encoded and written to the
  server's pipe (one write call, as a driver sends it) and answered
  "matched" after one trip through the event loop; the server applies it
  and its change event comes back to the watcher with the others, as the
  watcher's own writes do on MongoDB.

The server's work (documents, events, encoding) costs the watcher's process
nothing; reading, decoding, deciding and sending its writes are the
watcher's, and are counted: CPU is this process's (``time.process_time``),
the watcher's on one core.

The events: a mix of jobs that receive many increments (``busy``: two stages
of ``items`` items, round-robin over ``busy_jobs`` jobs, so their events
coalesce) and jobs that receive one (``single``: inserted with one item,
incremented once: their events never coalesce with another job's).
``single_share`` is the share of increments that go to single jobs.

The server falls behind its schedule exactly when the watcher does (the
pipe fills and the server waits): the backlog is the consumers' events due
minus those read, and "kept up" means read >= 95 % of due over the window
and the backlog not growing over its second half.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import fcntl
import os
import random
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import anyio
import bson
from bson import ObjectId, Timestamp
from prometheus_client import Counter

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import load  # noqa: E402
from watcher.ops.metrics import Metrics  # noqa: E402
from watcher.group.pipeline import hot_path  # noqa: E402
from watcher.settings import Settings  # noqa: E402
from watcher.storage import backoff  # noqa: E402
from watcher.storage.position import Token  # noqa: E402

#: What one read takes at most: about what a getMore has ready at these rates.
READ_BYTES = 1 << 20
F_SETPIPE_SZ = 1031  # fcntl on Linux: grow the pipe, so a batch can be as large as a read
KEEP_UP_RATIO = 0.95
BUSY_JOBS = 100
ITEMS = 60
SINGLE_SHARE = 0.5
#: Whose write an event is (the first character of its token).
CONSUMER, WATCHER = "c", "w"


# -- the server's side (runs in its own process) ----------------------------


class Jobs:
    """The server's documents (projected to what the watcher's pipeline
    keeps) and the change events their writes cause."""

    def __init__(self) -> None:
        self.docs: dict[ObjectId, dict[str, Any]] = {}
        self._n = 0

    def _event(self, operation: str, job_id: ObjectId, kind: str = CONSUMER) -> dict[str, Any]:
        self._n += 1
        doc = self.docs[job_id]
        now = time.time()
        return {
            "_id": {"_data": f"{kind}{self._n:015x}"},  # the kind only tells the benchmark whose write it was
            "operationType": operation,
            "clusterTime": Timestamp(int(now), self._n % 4_000_000_000 + 1),
            "wallTime": dt.datetime.fromtimestamp(now, dt.UTC),
            "documentKey": {"_id": job_id},
            "fullDocument": {**doc, "stages": {name: dict(stage) for name, stage in doc["stages"].items()}},
        }

    def insert(self, job_id: ObjectId, stages: Mapping[str, int]) -> dict[str, Any]:
        """A new job (stage -> items). Three in ten are legacy jobs without a
        collection, as ``jobwatch simulate`` makes them."""
        self.docs[job_id] = {
            "_id": job_id,
            "jobType": "resume-collection",
            "status": "InProgress",
            "progress": 0,
            "totalItems": 0,
            "completedItems": 0,
            "collectionId": None if job_id.binary[-1] % 10 < 3 else job_id,
            "stages": {
                name: {"status": "InProgress", "progress": 0, "totalItems": n, "completedItems": 0}
                for name, n in stages.items()
            },
        }
        return self._event("insert", job_id)

    def inc(self, job_id: ObjectId, stage: str) -> dict[str, Any]:
        self.docs[job_id]["stages"][stage]["completedItems"] += 1
        return self._event("update", job_id)

    def write(self, job_id: ObjectId, update: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
        """The watcher's update ($set, $max, $currentDate on top-level and
        ``stages.<name>.<field>`` paths), answered "matched" already."""
        doc = self.docs.get(job_id)
        if doc is None:
            return None
        now = dt.datetime.now(dt.UTC)
        for operator, fields in update.items():
            for path, value in fields.items():
                head, _, rest = path.partition(".")
                target, leaf = (
                    (doc, head)
                    if not rest
                    else (doc[head].setdefault(rest.partition(".")[0], {}), rest.partition(".")[2])
                )
                if operator == "$currentDate":
                    value = now
                elif operator == "$max" and isinstance(target.get(leaf), int | float) and target[leaf] >= value:
                    continue
                target[leaf] = value
        event = self._event("update", job_id, WATCHER)
        if doc.get("status") == "Completed":
            del self.docs[job_id]  # nobody writes to it again
        return event


def consumers(
    jobs: Jobs, *, single_share: float = SINGLE_SHARE, busy_jobs: int = BUSY_JOBS, items: int = ITEMS, seed: int = 7
) -> Iterator[dict[str, Any]]:
    """The consumers' change events, forever."""
    rng = random.Random(seed)
    busy: list[list[Any]] = [[ObjectId(), 0, 0] for _ in range(busy_jobs)]  # id, thumbnail done, cache done
    slot = 0
    while True:
        if rng.random() < single_share:
            job_id = ObjectId()
            yield jobs.insert(job_id, {"thumbnail": 1})
            yield jobs.inc(job_id, "thumbnail")
            continue
        job = busy[slot]
        if job[1] == 0 and job[2] == 0:
            yield jobs.insert(job[0], {"thumbnail": items, "cache": items})
        stage = 1 if job[1] < items else 2
        job[stage] += 1
        yield jobs.inc(job[0], "thumbnail" if stage == 1 else "cache")
        if job[2] == items:
            busy[slot] = [ObjectId(), 0, 0]
        slot = (slot + 1) % busy_jobs


def serve(rate: float, start: float, single_share: float, busy_jobs: int, items: int) -> None:
    """Play the server: consumers' events on schedule into stdout (rate 0: as
    fast as they are read), and each write the watcher sends on stdin
    applied, its event after them."""
    out, inp = sys.stdout.buffer.fileno(), sys.stdin.buffer.fileno()
    os.set_blocking(inp, False)
    jobs = Jobs()
    events = consumers(jobs, single_share=single_share, busy_jobs=busy_jobs, items=items)
    pending, requests = bytearray(), b""
    n = 0
    while True:
        if n % 32 == 0 or pending == b"":
            with contextlib.suppress(BlockingIOError):
                requests += os.read(inp, READ_BYTES)
            documents, requests = _complete(requests)
            for request in bson.decode_all(documents):
                echo = jobs.write(request["_id"], request["u"])
                if echo is not None:
                    pending += bson.encode(echo)
        if rate > 0:
            ahead_s = start + n / rate - time.monotonic()
            if ahead_s > 0:
                if pending:
                    os.write(out, pending)
                    pending.clear()
                select.select([inp], [], [], ahead_s)  # a write may come meanwhile
                continue
        pending += bson.encode(next(events))
        n += 1
        if len(pending) >= 1 << 16:  # a full pipe blocks here: the server waits for its reader
            os.write(out, pending)
            pending.clear()


def _complete(data: bytes) -> tuple[bytes, bytes]:
    """The complete BSON documents at the start of ``data``, and the rest."""
    end = 0
    while end + 4 <= len(data) and end + int.from_bytes(data[end : end + 4], "little") <= len(data):
        end += int.from_bytes(data[end : end + 4], "little")
    return data[:end], data[end:]


# -- the watcher's side ------------------------------------------------------


class PipeStream:
    """Batches read from the server process's pipe."""

    def __init__(self, fd: int, max_await_ms: int) -> None:
        self._fd = fd
        self._max_await_s = max_await_ms / 1000
        self._rest = b""
        self._token: Token | None = None
        self.read = 0  # events, the watcher's own writes' too
        self.consumers = 0  # events of the consumers' writes
        self.batches = 0
        self.largest = 0

    async def next_batch(self) -> Sequence[Mapping[str, Any]]:
        with anyio.move_on_after(self._max_await_s):
            await anyio.wait_readable(self._fd)
        try:
            data = self._rest + os.read(self._fd, READ_BYTES)
        except BlockingIOError:
            return ()
        documents, self._rest = _complete(data)
        batch = bson.decode_all(documents)
        if batch:
            self._token = batch[-1]["_id"]
            self.read += len(batch)
            self.consumers += sum(1 for event in batch if event["_id"]["_data"][0] == CONSUMER)
            self.batches += 1
            self.largest = max(self.largest, len(batch))
        return batch

    @property
    def resume_token(self) -> Token | None:
        return self._token

    async def close(self) -> None:
        return None


class PipeSource:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.stream: PipeStream | None = None

    async def open(
        self, pipeline: Sequence[Mapping[str, Any]], *, resume_after: Token | None, max_await_ms: int
    ) -> PipeStream:
        self.stream = PipeStream(self._fd, max_await_ms)
        return self.stream


class PipeStore:
    """Every guarded update is sent to the server process (encoded, one
    write call, as a driver sends it) and answered "matched" after one trip
    through the event loop, without waiting for the server."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._unsent = bytearray()
        self.writes = 0

    async def apply(self, job_id: Any, query: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
        self._unsent += bson.encode({"_id": job_id, "u": update})
        try:
            sent = os.write(self._fd, self._unsent)
            del self._unsent[:sent]
        except BlockingIOError:
            pass  # the server is busy writing events; this goes with the next write
        await anyio.lowlevel.checkpoint()
        self.writes += 1
        return True

    async def open_jobs(
        self, *, full: bool, job_types: Iterable[str] = (), fields: Iterable[str] = ()
    ) -> AsyncIterator[list[dict[str, Any]]]:
        return
        yield []

    async def collection_counts(self, collection_ids: Iterable[Any]) -> dict[Any, dict[str, int]]:
        return {}


def _total(metric: Counter) -> float:
    return sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith("_total"))


async def step(
    rate: float,
    window_s: float,
    *,
    single_share: float = SINGLE_SHARE,
    busy_jobs: int = BUSY_JOBS,
    items: int = ITEMS,
    profiler: cProfile.Profile | None = None,
    on_sample: Callable[[int], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """One window of ``window_s`` at ``rate`` consumer events/s (0: as fast as
    the watcher reads) through the watcher's own hot path, or until
    ``stop_after`` consumer events were read; ``on_sample(events_read)``
    about every 0.1 s."""
    settings = Settings(health_port=0)
    metrics = Metrics()
    start = time.monotonic() + 0.5  # the server process's clock: CLOCK_MONOTONIC is the machine's
    server = subprocess.Popen(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--serve",
            str(rate),
            str(start),
            str(single_share),
            str(busy_jobs),
            str(items),
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
    )
    assert server.stdout is not None and server.stdin is not None
    for fd in (server.stdout.fileno(), server.stdin.fileno()):
        with contextlib.suppress(OSError):  # else the default pipe: smaller batches, the same events
            fcntl.fcntl(fd, F_SETPIPE_SZ, READ_BYTES)
        os.set_blocking(fd, False)
    source = PipeSource(server.stdout.fileno())
    store = PipeStore(server.stdin.fileno())
    path = hot_path(settings, store, source, metrics, stream_backoff=backoff.Backoff(base_s=0.5, max_s=30))
    samples: list[tuple[float, float]] = []
    watch = load.LoadWatch()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(path.dispatcher.run)
            stream = await path.reader.open(None)
            tg.start_soon(path.reader.consume, stream)
            piped = source.stream
            assert piped is not None
            await anyio.sleep(max(start - time.monotonic(), 0))
            started, cpu_started = time.monotonic(), time.process_time()
            read_started, consumers_started, batches_started = piped.read, piped.consumers, piped.batches
            if profiler is not None:
                profiler.enable()
            ticks = 0
            while (now := time.monotonic()) < started + window_s:
                await anyio.sleep(min(0.1, started + window_s - now))
                now, ticks = time.monotonic(), ticks + 1
                served = piped.consumers - consumers_started
                if on_sample is not None:
                    on_sample(served)
                if stop_after is not None and served >= stop_after:
                    break
                if ticks % 5:
                    continue
                due = (now - started) * rate if rate > 0 else served
                samples.append((now - started, due - served))
                path.queue.advance(now)  # the position keeper's call, twice a second here
                if len(samples) % 10 == 0:
                    watch.sample()
            if profiler is not None:
                profiler.disable()
            ended = time.monotonic()
            cpu_s = time.process_time() - cpu_started
            read = piped.read - read_started
            served = piped.consumers - consumers_started
            pending = path.queue.pending_jobs
            batches, largest = piped.batches - batches_started, piped.largest
            tg.cancel_scope.cancel()
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
        server.stdin.close()
    elapsed = ended - started
    due = elapsed * rate if rate > 0 else served
    half = [b for b in samples if b[0] >= elapsed / 2]
    growth_per_s = (
        (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) if len(half) >= 2 and half[-1][0] > half[0][0] else 0.0
    )
    handled_ratio = served / due if due else 1.0
    growing = rate > 0 and growth_per_s > 0.05 * rate
    evaluations = _total(metrics.evaluations)
    return {
        "rate_asked": rate,
        "rate_achieved": round(served / elapsed, 1) if elapsed else 0.0,
        "window_s": round(elapsed, 2),
        "events_due": int(due),
        "events_read": served,  # the consumers' events
        "events_with_own_writes": read,  # with those of the watcher's own writes, which come back too
        "handled_ratio": round(handled_ratio, 3),
        "backlog_growth_events_per_s": round(growth_per_s, 1),
        "backlog_growing": growing,
        "backlog_events_at_end": int(due - served),
        "pending_jobs_at_end": pending,
        "evaluations": int(evaluations),
        "evaluations_per_event": round(evaluations / max(_total(metrics.events), 1), 3),
        "writes": store.writes,
        "batches_read": batches,
        "mean_batch_events": round(read / batches, 1) if batches else None,
        "largest_batch_events": largest,
        "kept_up": handled_ratio >= KEEP_UP_RATIO and not growing,
        "process_cpu_s": round(cpu_s, 3),
        "process_cpu_share": round(cpu_s / elapsed, 3) if elapsed else None,
        "cpu_us_per_event": round(1e6 * cpu_s / read, 1) if read else None,  # per event the stream delivered
        "cpu_us_per_consumer_event": round(1e6 * cpu_s / served, 1) if served else None,
        "single_share": single_share,
        "busy_jobs": busy_jobs,
        "items": items,
        "load_avg_1m": watch.summary(),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="the server's side of bench/paced.py (internal)")
    parser.add_argument(
        "--serve", nargs=5, metavar=("RATE", "START", "SINGLE_SHARE", "BUSY_JOBS", "ITEMS"), required=True
    )
    args = parser.parse_args(argv)
    rate, start, share, jobs, items = args.serve
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # the benchmark is done with it
        serve(float(rate), float(start), float(share), int(jobs), int(items))


if __name__ == "__main__":
    main(sys.argv[1:])
