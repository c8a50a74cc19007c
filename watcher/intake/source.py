"""The change-source seam: where change events come from.

Every server, MongoDB or ``jobwatch embedded-server``, is watched through
PyMongo's ``collection.watch()`` over the wire. The seam exists for tests
that script a stream's events and failures, and for an application that
embeds the watcher with its own source: it only has to open a stream that
yields event documents and tells its resume token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pymongo.asynchronous.collection import AsyncCollection

from watcher.storage.position import Token

Event = Mapping[str, Any]


class ChangeStream(Protocol):
    async def try_next(self) -> Event | None:
        """The next event, or None when the server had nothing within max-await."""
        ...

    @property
    def resume_token(self) -> Token | None:
        """Where a new stream would resume: after the last event returned, or the
        server's post-batch token when the batch was empty."""
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
        return await self._collection.watch(
            list(pipeline),
            full_document="updateLookup",
            resume_after=resume_after,
            max_await_time_ms=max_await_ms,
        )
