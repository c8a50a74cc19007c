"""The watcher alone: its own stream reader and dispatcher, the database removed.

    ./dev bench paced --rate 25000 --window-s 5 --repeats 3     # CPU per event, window by window
    ./dev bench paced --rate 25000 --profile /tmp/paced.prof     # the same under cProfile (pstats file)

With a database in the loop a rate says how fast the database and the
consumers go, not how fast the watcher can go. Here the product's hot path
(``watcher.group.pipeline.hot_path``: ``StreamReader``, ``JobQueue``,
``Dispatcher``, path A's ``CounterWatch``, the rules, the progress budget,
update building, metrics, its long-lived workers) runs exactly as
``Watcher`` wires it, one per partition held, in a process set up as
``jobwatch run`` sets up its own (``watcher.ops.runtime``); only the server
is replaced, by a process of its own that plays it over two pipes per
partition:

- it keeps the jobs' documents, applies the consumers' increments at the
  asked rate (each due at ``start + n / rate``; rate 0: as fast as they are
  read) and writes each change event, BSON-encoded as a server sends it and
  projected as the watcher's stream pipeline asks (its ``$project``), into
  the pipe of the event's partition: with ``partitions`` P > 1, partition k
  gets the events whose ``documentKey._id`` hashes to k, as the partition's
  ``$match`` on ``$toHashedIndexKey`` selects them on MongoDB (the hash
  computed as MongoDB computes it). The events go in frames, a length and
  then the documents, as a reply carries a batch; a read takes everything
  the pipe holds (up to 1 MiB, what a ``getMore`` would have ready), decodes
  the complete frames' documents as the driver decodes a reply
  (``bson.decode_all``) and hands them over as one batch; with nothing
  there it waits up to max-await, like a ``getMore``;
- every guarded update the watcher makes is encoded and written to the
  server's pipe of that partition (one write call, as a driver sends it)
  and answered "matched" after one trip through the event loop; the server
  applies it and its change event comes back to the watcher with the
  others, as the watcher's own writes do on MongoDB.

The server's work (documents, events, encoding, hashing) costs the watcher's
process nothing; reading, decoding, deciding and sending its writes are the
watcher's, and are counted: CPU is this process's (``time.process_time``),
the watcher's on one core. Each event's token says how many of the
consumers' events the partition's stream has carried up to it, so counting
them costs the watcher nothing per event.

The events: a mix of jobs that receive many increments (``busy``: two stages
of ``items`` items, round-robin over ``busy_jobs`` jobs, so their events
coalesce) and jobs that receive one (``single``: inserted with one item,
incremented once: their events never coalesce with another job's).
``single_share`` is the share of increments that go to single jobs.

The server falls behind its schedule exactly when the watcher does (the
pipe fills and the server waits): the backlog is the consumers' events due
minus those read, and "kept up" means read >= 95 % of due over the window
and the backlog not growing over its second half.

``bench/scale.py`` runs the same server with the watcher's partitions
spread over several processes (``watch`` in each).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import fcntl
import json
import os
import random
import select
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import bson
from bson import ObjectId, Timestamp
from prometheus_client import Counter

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common, load  # noqa: E402
from watcher.group.pipeline import HotPath, hot_path  # noqa: E402
from watcher.intake import stream as intake_stream  # noqa: E402
from watcher.ops import runtime  # noqa: E402
from watcher.ops.metrics import Metrics  # noqa: E402
from watcher.settings import Settings  # noqa: E402
from watcher.storage import backoff  # noqa: E402
from watcher.storage.partitions import Slice  # noqa: E402
from watcher.storage.position import Token  # noqa: E402

#: What one read takes at most: about what a getMore has ready at these rates.
READ_BYTES = 1 << 20
#: The server sends what it has once this much is waiting for a partition (one frame)...
FRAME_BYTES = 1 << 16
#: ...and stops making events while a partition's pipe has this much it could not take.
HELD_BYTES = 1 << 20
F_SETPIPE_SZ = 1031  # fcntl on Linux: grow the pipe, so a batch can be as large as a read
KEEP_UP_RATIO = 0.95
BUSY_JOBS = 100
ITEMS = 60
SINGLE_SHARE = 0.5
#: The token's two counters, in hex: events the server made, and consumers' events of the partition up to this one.
TOKEN_DIGITS = 16


# -- the server's side (runs in its own process) ----------------------------


def projection(pipeline: Sequence[Mapping[str, Any]]) -> list[str]:
    """The paths the stream's ``$project`` keeps (the server applies it)."""
    for stage in pipeline:
        if "$project" in stage:
            return [path for path, keep in stage["$project"].items() if keep]
    raise ValueError("the stream's pipeline has no $project")


class Projection:
    """An inclusion ``$project`` of top-level and one-level dotted paths, in
    the document's own field order, ``_id`` always kept (as MongoDB does)."""

    def __init__(self, keep: Iterable[str]) -> None:
        self._whole: set[str] = {"_id"}
        self._inner: dict[str, set[str]] = {}
        for path in keep:
            head, _, rest = path.partition(".")
            if rest:
                self._inner.setdefault(head, set()).add(rest)
            else:
                self._whole.add(head)

    def __call__(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in doc.items():
            if name in self._whole:
                out[name] = value
            elif name in self._inner and isinstance(value, Mapping):
                inner = self._inner[name]
                out[name] = {k: v for k, v in value.items() if k in inner}
        return out


def partition_of(job_id: Any, partitions: int) -> int:
    """The partition the stream's ``$match`` puts ``job_id`` in: ``$abs`` of
    ``$mod`` (which keeps the dividend's sign) of ``$toHashedIndexKey``."""
    if partitions == 1:
        return 0
    from jobwatch_embedded.hashing import hashed_index_key  # MongoDB's hash, bit for bit

    return abs(hashed_index_key(job_id)) % partitions


class Jobs:
    """The server's documents (projected to what the watcher's pipeline
    keeps) and the change events their writes cause, each with the
    partition whose stream carries it."""

    def __init__(self, *, partitions: int = 1, keep: Iterable[str] | None = None) -> None:
        self.docs: dict[ObjectId, dict[str, Any]] = {}
        self.partitions = partitions
        self._partition: dict[ObjectId, int] = {}
        self._project = Projection(keep) if keep is not None else None
        self._n = 0
        self.consumer_events = [0] * partitions

    def _event(self, operation: str, job_id: ObjectId, *, consumer: bool = True) -> tuple[int, dict[str, Any]]:
        self._n += 1
        k = self._partition[job_id]
        if consumer:
            self.consumer_events[k] += 1
        doc = self.docs[job_id]
        now = time.time()
        event = {
            "_id": {"_data": f"{self._n:0{TOKEN_DIGITS}x}{self.consumer_events[k]:0{TOKEN_DIGITS}x}"},
            "operationType": operation,
            "clusterTime": Timestamp(int(now), self._n % 4_000_000_000 + 1),
            "wallTime": dt.datetime.fromtimestamp(now, dt.UTC),
            "documentKey": {"_id": job_id},
            "fullDocument": {**doc, "stages": {name: dict(stage) for name, stage in doc["stages"].items()}},
        }
        return k, event if self._project is None else self._project(event)

    def insert(self, job_id: ObjectId, stages: Mapping[str, int]) -> tuple[int, dict[str, Any]]:
        """A new job (stage -> items). Three in ten are legacy jobs without a
        collection, as ``jobwatch simulate`` makes them."""
        self._partition[job_id] = partition_of(job_id, self.partitions)
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

    def inc(self, job_id: ObjectId, stage: str) -> tuple[int, dict[str, Any]]:
        self.docs[job_id]["stages"][stage]["completedItems"] += 1
        return self._event("update", job_id)

    def write(self, job_id: ObjectId, update: Mapping[str, Mapping[str, Any]]) -> tuple[int, dict[str, Any]] | None:
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
        event = self._event("update", job_id, consumer=False)
        if doc.get("status") == "Completed":
            del self.docs[job_id]  # nobody writes to it again
            del self._partition[job_id]
        return event


def consumers(
    jobs: Jobs, *, single_share: float = SINGLE_SHARE, busy_jobs: int = BUSY_JOBS, items: int = ITEMS, seed: int = 7
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The consumers' change events (partition, event), forever."""
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


@dataclass
class Feed:
    """What the server process is told: the consumers' pace and mix, the
    watcher's projection and, per partition, the file descriptors of its
    two pipes (events out, the watcher's writes in)."""

    rate: float
    start: float  # CLOCK_MONOTONIC, the machine's: the same in every process
    keep: list[str]
    events_fds: list[int]
    requests_fds: list[int]
    single_share: float = SINGLE_SHARE
    busy_jobs: int = BUSY_JOBS
    items: int = ITEMS


def serve(feed: Feed) -> None:
    """Play the server: consumers' events on schedule into each partition's
    pipe (rate 0: as fast as they are read), and each write the watcher
    sends applied, its event after them."""
    outs, ins = feed.events_fds, feed.requests_fds
    for fd in (*outs, *ins):
        os.set_blocking(fd, False)
    jobs = Jobs(partitions=len(outs), keep=feed.keep)
    events = consumers(jobs, single_share=feed.single_share, busy_jobs=feed.busy_jobs, items=feed.items)
    pending = [bytearray() for _ in outs]  # events not yet framed
    unsent = [bytearray() for _ in outs]  # frames the pipe has not taken yet
    requests = [b""] * len(ins)
    rate, start = feed.rate, feed.start
    n = 0

    def take_requests() -> None:
        for j, fd in enumerate(ins):
            with contextlib.suppress(BlockingIOError):
                requests[j] += os.read(fd, READ_BYTES)
            documents, requests[j] = _complete(requests[j])
            for request in bson.decode_all(documents):
                echo = jobs.write(request["_id"], request["u"])
                if echo is not None:
                    pending[echo[0]] += bson.encode(echo[1])

    def send(k: int) -> None:
        if pending[k]:
            unsent[k] += (len(pending[k]) + 4).to_bytes(4, "little") + pending[k]
            pending[k].clear()
        if unsent[k]:
            with contextlib.suppress(BlockingIOError):
                del unsent[k][: os.write(outs[k], unsent[k])]

    while True:
        if n % 32 == 0 or not any(pending):
            take_requests()
        if rate > 0:
            ahead_s = start + n / rate - time.monotonic()
            if ahead_s > 0:
                for k in range(len(outs)):
                    send(k)
                waiting = [outs[k] for k in range(len(outs)) if unsent[k]]
                select.select(ins, waiting, [], ahead_s)  # a write may come meanwhile
                continue
        k, event = next(events)
        pending[k] += bson.encode(event)
        n += 1
        if len(pending[k]) >= FRAME_BYTES:
            send(k)
        while any(len(u) >= HELD_BYTES for u in unsent):  # the server waits for its slowest reader
            full = [outs[j] for j in range(len(outs)) if len(unsent[j]) >= HELD_BYTES]
            select.select(ins, full, [])
            take_requests()
            for j in range(len(outs)):
                send(j)


def _complete(data: bytes) -> tuple[bytes, bytes]:
    """The complete BSON documents at the start of ``data``, and the rest."""
    end = 0
    while end + 4 <= len(data) and end + int.from_bytes(data[end : end + 4], "little") <= len(data):
        end += int.from_bytes(data[end : end + 4], "little")
    return data[:end], data[end:]


def _frames(data: bytes) -> tuple[bytes, bytes]:
    """The documents of the complete frames at the start of ``data``, and the rest."""
    parts, end = [], 0
    while end + 4 <= len(data) and end + (size := int.from_bytes(data[end : end + 4], "little")) <= len(data):
        parts.append(data[end + 4 : end + size])
        end += size
    return b"".join(parts), data[end:]


# -- the watcher's side ------------------------------------------------------


class PipeStream:
    """Batches read from one partition's events pipe."""

    def __init__(self, fd: int, max_await_ms: int) -> None:
        self._fd = fd
        self._max_await_s = max_await_ms / 1000
        self._rest = b""
        self._token: Token | None = None
        self.read = 0  # events, the watcher's own writes' too
        self.consumers = 0  # events of the consumers' writes (the server's count, in the last token)
        self.batches = 0
        self.largest = 0

    async def next_batch(self) -> Sequence[Mapping[str, Any]]:
        with anyio.move_on_after(self._max_await_s):
            await anyio.wait_readable(self._fd)
        try:
            data = self._rest + os.read(self._fd, READ_BYTES)
        except BlockingIOError:
            return ()
        documents, self._rest = _frames(data)
        batch = bson.decode_all(documents)
        if batch:
            self._token = batch[-1]["_id"]
            self.read += len(batch)
            self.consumers = int(self._token["_data"][TOKEN_DIGITS:], 16)
            self.batches += 1
            self.largest = max(self.largest, len(batch))
        return batch

    @property
    def resume_token(self) -> Token | None:
        return self._token

    async def close(self) -> None:
        return None


class PipeSource:
    """One partition's stream: checks that the watcher asks for what the
    server plays (its projection, its partition's ``$match``)."""

    def __init__(self, fd: int, keep: Sequence[str], partition: Slice) -> None:
        self._fd = fd
        self._keep = list(keep)
        self._partition = partition
        self.stream: PipeStream | None = None

    async def open(
        self, pipeline: Sequence[Mapping[str, Any]], *, resume_after: Token | None, max_await_ms: int
    ) -> PipeStream:
        if projection(pipeline) != self._keep:
            raise RuntimeError("the watcher's $project is not what the server process was told to apply")
        mine = self._partition.match("$documentKey._id")
        if mine is not None and not any(mine == condition for condition in _conditions(pipeline)):
            raise RuntimeError(f"the watcher's stream does not select partition {self._partition}")
        self.stream = PipeStream(self._fd, max_await_ms)
        return self.stream


def _conditions(pipeline: Sequence[Mapping[str, Any]]) -> Iterator[Any]:
    """Every ``$expr`` in the pipeline's ``$match`` stages (one level of ``$or``)."""
    for stage in pipeline:
        match = stage.get("$match", {})
        for clause in [match, *match.get("$or", [])]:
            if "$expr" in clause:
                yield clause["$expr"]


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


def keep(settings: Settings) -> list[str]:
    """What the watcher's stream keeps of each event (the server projects to it)."""
    return projection(intake_stream.pipeline(settings))


@dataclass
class Pipes:
    """The pipes of ``partitions`` partitions: the server's ends and the watcher's."""

    partitions: int
    events: list[tuple[int, int]] = field(default_factory=list)  # (watcher reads, server writes)
    requests: list[tuple[int, int]] = field(default_factory=list)  # (server reads, watcher writes)
    _open: set[int] = field(default_factory=set)  # closed once only: a number closed is soon another file's

    @classmethod
    def make(cls, partitions: int) -> Pipes:
        pipes = cls(partitions)
        for _ in range(partitions):
            pipes.events.append(os.pipe())
            pipes.requests.append(os.pipe())
        for fd in (*(w for _, w in pipes.events), *(w for _, w in pipes.requests)):
            with contextlib.suppress(OSError):  # else the default pipe: smaller batches, the same events
                fcntl.fcntl(fd, F_SETPIPE_SZ, READ_BYTES)
        pipes._open = {fd for pair in (*pipes.events, *pipes.requests) for fd in pair}
        return pipes

    def server_fds(self) -> tuple[list[int], list[int]]:
        return [w for _, w in self.events], [r for r, _ in self.requests]

    def watcher_fds(self, k: int) -> tuple[int, int]:
        return self.events[k][0], self.requests[k][1]

    def close(self, fds: Iterable[int] | None = None) -> None:
        """Close this side's copies of ``fds`` (default: every one still open here)."""
        for fd in sorted(self._open) if fds is None else list(fds):
            if fd in self._open:
                self._open.discard(fd)
                os.close(fd)


def start_server(
    pipes: Pipes,
    rate: float,
    start: float,
    keep: list[str],
    *,
    single_share: float = SINGLE_SHARE,
    busy_jobs: int = BUSY_JOBS,
    items: int = ITEMS,
) -> subprocess.Popen[bytes]:
    """The server process (it holds its ends of ``pipes``; close them here after)."""
    outs, ins = pipes.server_fds()
    feed = Feed(rate, start, keep, outs, ins, single_share=single_share, busy_jobs=busy_jobs, items=items)
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", json.dumps(feed.__dict__)], pass_fds=(*outs, *ins)
    )


@dataclass
class Lane:
    """One partition's hot path, reading its pipe, with a registry of its own
    (so its event lag can be read per partition; the service shares one
    registry per instance: the same calls)."""

    index: int
    source: PipeSource
    store: PipeStore
    path: HotPath
    metrics: Metrics

    @property
    def stream(self) -> PipeStream:
        assert self.source.stream is not None
        return self.source.stream


def lanes(settings: Settings, partitions: int, fds: Mapping[int, tuple[int, int]]) -> list[Lane]:
    """The hot paths of the partitions in ``fds`` (partition -> its events and requests pipes)."""
    out = []
    for k, (events_fd, requests_fd) in sorted(fds.items()):
        os.set_blocking(events_fd, False)
        os.set_blocking(requests_fd, False)
        part = Slice.of(partitions, k)
        source = PipeSource(events_fd, keep(settings), part)
        store = PipeStore(requests_fd)
        metrics = Metrics()
        stream_backoff = backoff.Backoff(base_s=0.5, max_s=30)
        path = hot_path(settings, store, source, metrics, stream_backoff=stream_backoff, partition=part)
        out.append(Lane(k, source, store, path, metrics))
    return out


async def watch(
    held: list[Lane],
    start: float,
    window_s: float,
    *,
    rate: float | None = None,
    profiler: cProfile.Profile | None = None,
    on_sample: Callable[[int], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run ``held``'s hot paths; from ``start`` measure ``window_s`` (or
    until ``stop_after`` consumer events were read); ``rate``: the consumer
    events due per second to these lanes (None: unknown here, no backlog
    judged); ``on_sample(events_read)`` about every 0.1 s."""
    samples: list[tuple[float, float]] = []
    watch = load.LoadWatch()
    async with anyio.create_task_group() as tg:
        for lane in held:
            tg.start_soon(lane.path.dispatcher.run)
            tg.start_soon(lane.path.reader.consume, await lane.path.reader.open(None))
        await anyio.sleep(max(start - time.monotonic(), 0))
        started, cpu_started = time.monotonic(), time.process_time()
        before = [(lane.stream.read, lane.stream.consumers, lane.stream.batches) for lane in held]

        def served() -> int:
            return sum(lane.stream.consumers - b[1] for lane, b in zip(held, before, strict=True))

        if profiler is not None:
            profiler.enable()
        ticks = 0
        while (now := time.monotonic()) < started + window_s:
            await anyio.sleep(min(0.1, started + window_s - now))
            now, ticks = time.monotonic(), ticks + 1
            count = served()
            if on_sample is not None:
                on_sample(count)
            if stop_after is not None and count >= stop_after:
                break
            if ticks % 5:
                continue
            due = (now - started) * rate if rate else count
            samples.append((now - started, due - count))
            for lane in held:
                lane.path.queue.advance(now)  # the position keeper's call, twice a second here
            if len(samples) % 10 == 0:
                watch.sample()
        if profiler is not None:
            profiler.disable()
        ended = time.monotonic()
        cpu = time.process_time() - cpu_started
        partitions: list[dict[str, Any]] = []
        for lane, (read0, consumers0, batches0) in zip(held, before, strict=True):
            s = lane.stream
            partitions.append(
                {
                    "partition": lane.index,
                    "events_read": s.consumers - consumers0,
                    "events_with_own_writes": s.read - read0,
                    "batches_read": s.batches - batches0,
                    "largest_batch_events": s.largest,
                    "writes": lane.store.writes,
                    "pending_jobs_at_end": lane.path.queue.pending_jobs,
                    "event_lag_ms": histogram_ms(lane.metrics, "jobwatch_event_lag_seconds"),
                }
            )
        tg.cancel_scope.cancel()
    elapsed = ended - started
    read = sum(p["events_with_own_writes"] for p in partitions)
    count = sum(p["events_read"] for p in partitions)
    batches = sum(p["batches_read"] for p in partitions)
    due = elapsed * rate if rate else count
    half = [b for b in samples if b[0] >= elapsed / 2]
    growth_per_s = (
        (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) if len(half) >= 2 and half[-1][0] > half[0][0] else 0.0
    )
    handled_ratio = count / due if due else 1.0
    growing = bool(rate) and growth_per_s > 0.05 * (rate or 0)
    evaluations = sum(_total(lane.metrics.evaluations) for lane in held)
    events = sum(_total(lane.metrics.events) for lane in held)
    return {
        "rate_asked": rate,
        "rate_achieved": round(count / elapsed, 1) if elapsed else 0.0,
        "window_s": round(elapsed, 2),
        "events_due": int(due),
        "events_read": count,  # the consumers' events
        "events_with_own_writes": read,  # with those of the watcher's own writes, which come back too
        "handled_ratio": round(handled_ratio, 3),
        "backlog_growth_events_per_s": round(growth_per_s, 1),
        "backlog_growing": growing,
        "backlog_events_at_end": int(due - count),
        "pending_jobs_at_end": sum(p["pending_jobs_at_end"] for p in partitions),
        "evaluations": int(evaluations),
        "evaluations_per_event": round(evaluations / max(events, 1), 3),
        "writes": sum(lane.store.writes for lane in held),
        "batches_read": batches,
        "mean_batch_events": round(read / batches, 1) if batches else None,
        "largest_batch_events": max(p["largest_batch_events"] for p in partitions),
        "kept_up": handled_ratio >= KEEP_UP_RATIO and not growing,
        "process_cpu_s": round(cpu, 3),
        "process_cpu_share": round(cpu / elapsed, 3) if elapsed else None,
        "cpu_us_per_event": round(1e6 * cpu / read, 1) if read else None,  # per event the stream delivered
        "cpu_us_per_consumer_event": round(1e6 * cpu / count, 1) if count else None,
        "events_per_cpu_s": round(read / cpu) if cpu else None,
        "consumer_events_per_cpu_s": round(count / cpu) if cpu else None,
        "partitions": partitions,
        "load_avg_1m": watch.summary(),
    }


def histogram_ms(metrics: Metrics, name: str) -> dict[str, Any]:
    """p50/p99 (ms) and count of one of the watcher's histograms, as Prometheus would compute them."""
    return common.histogram_ms(metrics.exposition().decode(), name)


async def step(
    rate: float,
    window_s: float,
    *,
    single_share: float = SINGLE_SHARE,
    busy_jobs: int = BUSY_JOBS,
    items: int = ITEMS,
    partitions: int = 1,
    profiler: cProfile.Profile | None = None,
    on_sample: Callable[[int], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """One window of ``window_s`` at ``rate`` consumer events/s (0: as fast as
    the watcher reads) through the watcher's own hot paths (one per
    partition, all in this process), or until ``stop_after`` consumer events
    were read; ``on_sample(events_read)`` about every 0.1 s. The server
    process's CPU share is measured beside this one's."""
    runtime.tune()
    settings = Settings(health_port=0, partitions=partitions)
    pipes = Pipes.make(partitions)
    start = time.monotonic() + 0.5  # the server process's clock: CLOCK_MONOTONIC is the machine's
    server = start_server(
        pipes, rate, start, keep(settings), single_share=single_share, busy_jobs=busy_jobs, items=items
    )
    pipes.close(fd for pair in pipes.server_fds() for fd in pair)
    server_cpu: list[float] = []

    def sample(count: int) -> None:
        if not server_cpu:
            server_cpu.append(common.cpu_s(server.pid))
        if on_sample is not None:
            on_sample(count)

    try:
        held = lanes(settings, partitions, {k: pipes.watcher_fds(k) for k in range(partitions)})
        result = await watch(
            held, start, window_s, rate=rate, profiler=profiler, on_sample=sample, stop_after=stop_after
        )
        server_cpu.append(common.cpu_s(server.pid))
    finally:
        server.kill()
        server.wait()
        pipes.close(fd for k in range(partitions) for fd in pipes.watcher_fds(k))
    # The server's CPU from the first sample (0.1 s into the window) to the end.
    result["server_cpu_share"] = round((server_cpu[-1] - server_cpu[0]) / max(result["window_s"] - 0.1, 1e-9), 3)
    result.update(single_share=single_share, busy_jobs=busy_jobs, items=items)
    if partitions == 1:
        del result["partitions"]
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").strip().splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", metavar="FEED", help=argparse.SUPPRESS)  # the server's side (internal)
    parser.add_argument("--rate", type=float, default=25_000, help="consumer events per second (0: as fast as read)")
    parser.add_argument("--window-s", type=float, default=5.0, help="seconds per window (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="windows, one after another (default 3)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions, all held by this process (default 1)")
    parser.add_argument("--single-share", type=float, default=SINGLE_SHARE, help="share of single-item jobs")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the windows; pstats written to FILE")
    args = parser.parse_args(argv)
    if args.serve is not None:
        with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # the benchmark is done with it
            serve(Feed(**json.loads(args.serve)))
        return 0
    from watcher.ops import logs

    logs.setup(level="WARNING")  # as throughput runs it: no line per completed job
    profiler = cProfile.Profile() if args.profile else None
    per_event = []
    for _ in range(args.repeats):
        r = anyio.run(
            lambda: step(
                args.rate, args.window_s, partitions=args.partitions, single_share=args.single_share, profiler=profiler
            )
        )
        per_event.append(r["cpu_us_per_consumer_event"])
        print(
            f"{r['rate_achieved']:>9,.0f}/s read of {args.rate:,.0f}, kept up {r['kept_up']}, CPU share "
            f"{r['process_cpu_share']}, {r['cpu_us_per_event']} us per event, {r['cpu_us_per_consumer_event']} per "
            f"consumer event, {r['mean_batch_events']} per batch, server CPU share {r['server_cpu_share']}, load "
            f"{load.span(r['load_avg_1m'])}",
            flush=True,
        )
    print(f"median {statistics.median(per_event)} us per consumer event (range {min(per_event)}-{max(per_event)})")
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"profile: {args.profile} (python -m pstats {args.profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
