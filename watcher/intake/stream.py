"""The hot path's first half: read the change stream a batch at a time and
hand each job's newest document to the dispatcher.

Every call on the stream runs inside the storage boundary, so what comes out
is a batch of events or ``errors.StreamBroken`` (the supervisor reopens); a
read that neither returns nor fails within ``stall_s`` (a half-open
connection) is abandoned as broken too.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from bson import Timestamp

from watcher.decide.dispatch import Dispatcher, Offer
from watcher.intake.counter_watch import CounterWatch
from watcher.intake.source import ChangeSource, ChangeStream, Event
from watcher.ops.metrics import Metrics
from watcher.settings import Settings
from watcher.storage import backoff, errors, store
from watcher.storage.partitions import EVERYTHING, Slice
from watcher.storage.position import Token

#: Operations that can change what the rules decide.
JOB_OPERATIONS = ("insert", "update", "replace")
#: Operations after which the stream cannot go on (MongoDB sends invalidate next).
ENDING_OPERATIONS = ("invalidate", "drop", "rename", "dropDatabase")
#: An event without a ``documentKey``: no job to key it by.
_NO_KEY: Mapping[str, Any] = {}


def pipeline(settings: Settings, partition: Slice = EVERYTHING) -> list[dict[str, Any]]:
    """Server-side filter and projection: only job writes, only what the rules
    read. Decisions come from ``fullDocument`` (looked up), never from
    ``updateDescription``, which replace events do not have. With several
    partitions, only the events of ``partition``'s jobs (by the hashed
    ``documentKey._id``), and the ending events, which every partition's
    stream must see."""
    match: dict[str, Any] = {"operationType": {"$in": [*JOB_OPERATIONS, *ENDING_OPERATIONS]}}
    if settings.job_types:
        match = {
            "$or": [
                {"operationType": {"$in": list(ENDING_OPERATIONS)}},
                {
                    "operationType": {"$in": list(JOB_OPERATIONS)},
                    "fullDocument.jobType": {"$in": list(settings.job_types)},
                },
            ]
        }
    keep = ["operationType", "documentKey", "clusterTime", "wallTime", "fullDocument._id"]
    keep += [f"fullDocument.{name}" for name in store.JOB_FIELDS]
    stages: list[dict[str, Any]] = [{"$match": match}, {"$project": dict.fromkeys(keep, 1)}]
    mine = partition.match("$documentKey._id")
    if mine is not None:
        stages.insert(0, {"$match": {"$or": [{"operationType": {"$in": list(ENDING_OPERATIONS)}}, {"$expr": mine}]}})
    return stages


def event_time_s(event: Event) -> float | None:
    """The event's server time in epoch seconds, when the server says it."""
    wall = event.get("wallTime")
    if isinstance(wall, dt.datetime):
        return (wall if wall.tzinfo else wall.replace(tzinfo=dt.UTC)).timestamp()
    cluster = event.get("clusterTime")
    if isinstance(cluster, Timestamp):
        return float(cluster.time)
    return None


#: A read counts as hung after this many max-await periods without a reply...
STALL_FACTOR = 5
#: ...and never sooner than this (a short max-await is no reason to be jumpy).
MIN_STALL_S = 1.0


#: How often per stall bound the watchdog looks at the read in progress (a
#: hung read is caught between one and 1 + 1/WATCHDOG_LOOKS bounds).
WATCHDOG_LOOKS = 4


def stall_s(max_await_ms: int) -> float:
    """How long a read (getMore) may take before the stream counts as stalled."""
    return max(STALL_FACTOR * max_await_ms / 1000, MIN_STALL_S)


@dataclass
class StreamHealth:
    """What readiness needs to know about the stream, kept by reader and supervisor."""

    open: bool = False
    last_batch_at: float | None = None  # monotonic time of the last reply (even empty)

    def reading(self, now: float, stall_s: float) -> bool:
        return self.open and self.last_batch_at is not None and now - self.last_batch_at <= stall_s


class StreamReader:
    """Reads the stream a batch at a time and hands each batch to the dispatcher.

    Plain values, not the whole ``Settings``: the pipeline to open the stream
    with, the getMore wait (``max_await_ms``, which sets the stall bound) and
    how long server selection may take when opening.
    """

    def __init__(
        self,
        source: ChangeSource,
        dispatcher: Dispatcher,
        metrics: Metrics,
        *,
        pipeline: Sequence[Mapping[str, Any]],
        max_await_ms: int,
        server_selection_s: float,
        healthy: backoff.Backoff,
        counters: CounterWatch | None = None,
        health: StreamHealth | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._pipeline = list(pipeline)
        self._max_await_ms = max_await_ms
        self._server_selection_s = server_selection_s
        self._healthy = healthy
        self._wall_clock = wall_clock
        self._clock = clock
        self._counters = counters
        self.health = health or StreamHealth()
        self.stall_s = stall_s(max_await_ms)
        self._reading_since: float | None = None  # the loop's clock when the read in progress began
        #: The token after the last batch read (even an idle one): where a
        #: resumed stream goes on. Not what is saved: that is the watermark.
        self.last_token: Token | None = None

    async def open(self, resume_after: Token | None) -> ChangeStream:
        """Open a stream; raises ``errors.StreamBroken`` or a fatal outcome."""
        # Opening includes server selection: allow for it before calling the open hung.
        open_deadline_s = self.stall_s + self._server_selection_s
        try:
            with errors.translated("opening the change stream", "reopen"), anyio.fail_after(open_deadline_s):
                stream = await self._source.open(
                    self._pipeline, resume_after=resume_after, max_await_ms=self._max_await_ms
                )
        except TimeoutError:
            raise _stalled("opening the change stream", open_deadline_s) from None
        # PyMongo knows a resume point at once (the first batch's post-batch
        # token): a failure before the first event can then resume, not restart.
        self.last_token = stream.resume_token or resume_after
        self.health.open = True
        self.health.last_batch_at = self._clock()
        if stream.resume_token is not None:
            # Where this stream starts is a position in its own right: nothing
            # before it is left to the stream (the start-up sweep covers it),
            # so it can be saved before the first event, or with none at all.
            await self._dispatcher.record(stream.resume_token)
        return stream

    async def consume(self, stream: ChangeStream) -> None:
        """Read until the stream breaks: raises ``errors.StreamBroken`` (also for
        an ending event, or a read that hangs past ``stall_s``).

        No timeout object per read: a watchdog beside the reader looks, a few
        times per ``stall_s``, at how long the read in progress has taken, and
        abandons it past the bound. Handing a batch over is not a read:
        waiting for room in the queue is back-pressure, not a stall."""
        failure: Exception | None = None
        stalled = False

        async def watchdog(scope: anyio.CancelScope) -> None:
            nonlocal stalled
            while True:
                await anyio.sleep(self.stall_s / WATCHDOG_LOOKS)
                since = self._reading_since
                if since is not None and anyio.current_time() - since > self.stall_s:
                    stalled = True
                    scope.cancel()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watchdog, tg.cancel_scope)
            try:
                with errors.translated("reading the change stream", "reopen"):
                    while True:
                        self._reading_since = anyio.current_time()
                        batch = await stream.next_batch()
                        self._reading_since = None
                        await self._handle(batch, stream.resume_token)
            except Exception as exc:  # raised below, outside the task group (which would wrap it)
                failure = exc
            finally:
                self._reading_since = None
            tg.cancel_scope.cancel()
        if stalled:
            raise _stalled("reading the change stream", self.stall_s)
        assert failure is not None  # the loop ends only by an error or a stall
        raise failure

    async def _handle(self, batch: Sequence[Event], token: Token | None) -> None:
        now = self._clock()
        self.health.last_batch_at = now
        self._healthy.reset()  # a batch came back: the stream is healthy
        if not batch:
            if token is not None and token != self.last_token:
                await self._dispatcher.record(token)
                self.last_token = token
            return
        wall = self._wall_clock()
        counters = self._counters
        operations: dict[str, int] = {}
        lags: list[float] = []
        jobs: list[Offer] = []
        for event in batch:
            operation = event.get("operationType", "")
            operations[operation] = operations.get(operation, 0) + 1
            when = event_time_s(event)
            if when is not None:
                lags.append(wall - when if wall > when else 0.0)
            if operation in ENDING_OPERATIONS:
                # What came before it is handed over; the stream cannot go on.
                self._count(operations, lags, wall)
                await self._dispatcher.accept(jobs, None, now, len(jobs))
                raise errors.StreamInvalidated(f"change stream ended by a {operation!r} event")
            doc = event.get("fullDocument")
            key = store.job_key(event.get("documentKey", _NO_KEY).get("_id"))
            if key is None or not (type(doc) is dict or isinstance(doc, Mapping)):
                # The job was deleted before the lookup: nothing to evaluate, nothing to remember.
                if key is not None and counters is not None:
                    counters.forget(key)
                continue
            if "_id" not in doc:
                doc = {**doc, "_id": event["documentKey"]["_id"]}
            if counters is not None:
                if doc.get("collectionId") is None:
                    counters.forget(key)  # path A never applies to a job without a collection
                else:
                    counters.observe(key, doc, now)
            jobs.append((key, doc, when))
        self._count(operations, lags, wall)
        await self._dispatcher.accept(jobs, token, now, len(batch))
        # Only now: a reopen resumes after this batch, so all of it must be queued.
        self.last_token = token

    def _count(self, operations: Mapping[str, int], lags_s: Sequence[float], wall: float) -> None:
        """The batch's events and their lags, counted once per batch."""
        for operation, n in operations.items():
            self._metrics.series(self._metrics.events, operation).inc(n)
        self._metrics.events_lagged(lags_s)
        self._metrics.event_received(wall)


def _stalled(what: str, after_s: float) -> errors.StreamBroken:
    return errors.StreamBroken(
        f"{what}: no reply within {after_s:g}s", error="StreamStalled", action=errors.Action.RESUME
    )
