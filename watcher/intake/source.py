"""The change-source seam: where change events come from.

Every server, MongoDB or ``jobwatch embedded-server``, is watched through
PyMongo's ``collection.watch()`` over the wire. The seam exists for tests
that script a stream's events and failures, and for an application that
embeds the watcher with its own source: it only has to open a stream that
hands over batches of event documents and tells its resume token.

A stream hands over a batch at a time, as the server sends them: a
``getMore`` answers with every event it has (up to 16 MB on MongoDB), the
driver decodes them all, and the watcher takes them all before it waits
again. Per batch, not per event: one wait, one stall check, one position,
one wake-up of the workers, one update of the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.collection import AsyncCollection

from watcher.storage.position import Token

Event = Mapping[str, Any]


class ChangeStream(Protocol):
    async def next_batch(self) -> Sequence[Event]:
        """The next events, in order: the rest of the server's last reply if
        the stream still holds some, else the next reply's (empty when the
        server had nothing within max-await)."""
        ...

    @property
    def resume_token(self) -> Token | None:
        """Where a new stream would resume: after the last batch returned (the
        server's post-batch token, which moves on even when a batch is empty)."""
        ...

    async def close(self) -> None: ...


class ChangeSource(Protocol):
    """Where change events come from: ``Watcher(client, change_source=...)``."""

    async def open(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        *,
        resume_after: Token | None,
        max_await_ms: int,
    ) -> ChangeStream:
        """Open a stream (``fullDocument: updateLookup``) resuming after ``resume_after``."""
        ...


class PyMongoChangeStream:
    """PyMongo's change stream, a server reply at a time.

    ``try_next()`` returns one event; when the driver still holds more of the
    server's reply it does so without a round trip, and only the first of a
    batch waits on the server. Whether the driver holds more is what PyMongo's
    own change stream asks its cursor before it takes the post-batch token
    (``_cursor._has_next()``); no public call says it. Without it (another
    PyMongo), every batch is one event long: slower, the same events.
    """

    def __init__(self, stream: AsyncChangeStream[Any]) -> None:
        self._stream = stream

    async def next_batch(self) -> Sequence[Event]:
        first = await self._stream.try_next()
        if first is None:
            return ()
        batch = [first]
        while self.holds_more():
            event = await self._stream.try_next()  # from the driver's buffer: no round trip
            if event is None:
                break
            batch.append(event)
        return batch

    def holds_more(self) -> bool:
        """Whether the driver holds the next event of the server's last reply."""
        has_next = getattr(getattr(self._stream, "_cursor", None), "_has_next", None)
        return bool(has_next()) if callable(has_next) else False

    @property
    def resume_token(self) -> Token | None:
        return self._stream.resume_token

    async def close(self) -> None:
        await self._stream.close()


class PyMongoChangeSource:
    """``collection.watch()`` on a real replica set or sharded cluster."""

    def __init__(self, collection: AsyncCollection[Any]) -> None:
        self._collection = collection

    async def open(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        *,
        resume_after: Token | None,
        max_await_ms: int,
    ) -> ChangeStream:
        stream = await self._collection.watch(
            list(pipeline),
            full_document="updateLookup",
            resume_after=resume_after,
            max_await_time_ms=max_await_ms,
        )
        return PyMongoChangeStream(stream)
