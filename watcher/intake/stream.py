"""The hot path's first half: read the change stream and hand each job's newest
document to the dispatcher. Errors go up to the service, which classifies them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any

from bson import Timestamp

from watcher.storage import backoff
from watcher.storage import errors
from watcher.storage import store
from watcher.decide.dispatch import Dispatcher
from watcher.ops.metrics import Metrics
from watcher.settings import Settings
from watcher.intake.source import ChangeSource, ChangeStream, Event
from watcher.storage.position import Token

#: Operations that can change what the rules decide.
JOB_OPERATIONS = ("insert", "update", "replace")
#: Operations after which the stream cannot go on (MongoDB sends invalidate next).
ENDING_OPERATIONS = ("invalidate", "drop", "rename", "dropDatabase")


def pipeline(settings: Settings) -> list[dict[str, Any]]:
    """Server-side filter and projection: only job writes, only what the rules
    read. Decisions come from ``fullDocument`` (looked up), never from
    ``updateDescription``, which replace events do not have."""
    match: dict[str, Any] = {"operationType": {"$in": [*JOB_OPERATIONS, *ENDING_OPERATIONS]}}
    if settings.job_types:
        match = {
            "$or": [
                {"operationType": {"$in": list(ENDING_OPERATIONS)}},
                {"operationType": {"$in": list(JOB_OPERATIONS)}, "fullDocument.jobType": {"$in": list(settings.job_types)}},
            ]
        }
    keep = ["operationType", "documentKey", "clusterTime", "wallTime", "fullDocument._id"]
    keep += [f"fullDocument.{name}" for name in store.JOB_FIELDS]
    return [{"$match": match}, {"$project": dict.fromkeys(keep, 1)}]


def event_time_s(event: Event) -> float | None:
    """The event's server time in epoch seconds, when the server says it."""
    wall = event.get("wallTime")
    if isinstance(wall, dt.datetime):
        return (wall if wall.tzinfo else wall.replace(tzinfo=dt.UTC)).timestamp()
    cluster = event.get("clusterTime")
    if isinstance(cluster, Timestamp):
        return float(cluster.time)
    return None


class StreamReader:
    def __init__(
        self,
        source: ChangeSource,
        dispatcher: Dispatcher,
        metrics: Metrics,
        settings: Settings,
        *,
        healthy: backoff.Backoff,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._settings = settings
        self._healthy = healthy
        self._wall_clock = wall_clock
        self._pipeline = pipeline(settings)
        #: The token after the last event (or idle batch) read: where a
        #: resumed stream goes on. Not what is saved: that is the watermark.
        self.last_token: Token | None = None

    async def open(self, resume_after: Token | None) -> ChangeStream:
        stream = await self._source.open(self._pipeline, resume_after=resume_after, max_await_ms=self._settings.max_await_ms)
        self.last_token = resume_after
        return stream

    async def consume(self, stream: ChangeStream) -> None:
        """Read until an error (raised) or an ending event (``StreamInvalidated``)."""
        while True:
            event = await stream.try_next()
            self._healthy.reset()  # a batch came back: the stream is healthy
            if event is None:
                token = stream.resume_token
                if token is not None and token != self.last_token:
                    self.last_token = token
                    await self._dispatcher.record(token)
                continue
            await self._handle(event, stream.resume_token)

    async def _handle(self, event: Event, token: Token | None) -> None:
        operation = event.get("operationType", "")
        self._metrics.events.labels(operation).inc()
        self._metrics.event_received()
        self.last_token = token
        when = event_time_s(event)
        if when is not None:
            self._metrics.stream_lag.set(max(self._wall_clock() - when, 0.0))
        if operation in ENDING_OPERATIONS:
            raise errors.StreamInvalidated(f"change stream ended by a {operation!r} event")
        doc = event.get("fullDocument")
        key = store.job_key(event.get("documentKey", {}).get("_id"))
        if not isinstance(doc, Mapping) or key is None:
            # The job was deleted before the lookup: nothing to evaluate.
            if token is not None:
                await self._dispatcher.record(token)
            return
        if "_id" not in doc:
            doc = {**doc, "_id": event["documentKey"]["_id"]}
        await self._dispatcher.offer(key, doc, token, when)
