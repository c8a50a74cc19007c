"""The embedded MongoDB-compatible engine (mongoeco), for ``jobwatch demo`` and
for test runs on machines without a MongoDB server.

One in-process mongoeco client is the engine. A wire-protocol proxy in front
of it lets a real ``pymongo.AsyncMongoClient`` do every read and write; the
proxy cannot serve ``$changeStream``, so change events come from ``watch()``
on the in-process client through ``EngineChangeSource``, which adapts the
engine's stream to the ``ChangeSource`` seam (reference/embedded-engine.md):

- its cursor has no ``resume_token``: the last event's ``_id`` is the token;
- its ``close()`` is synchronous;
- it refuses a resume token it no longer retains with an uncoded
  ``OperationFailure`` at open; MongoDB says ``ChangeStreamHistoryLost``
  (286), so that is what the seam raises.

Needs Python >= 3.13 and the ``embedded`` extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from pymongo.errors import OperationFailure

from watcher.intake.source import ChangeStream, Event
from watcher.storage.position import Token

HISTORY_LOST = 286  # ChangeStreamHistoryLost


def available() -> bool:
    try:
        import mongoeco  # noqa: F401
    except ImportError:
        return False
    return True


class EngineChangeStream:
    def __init__(self, cursor: Any, resume_after: Token | None) -> None:
        self._cursor = cursor
        self._token = resume_after

    async def try_next(self) -> Event | None:
        event: Event | None = await self._cursor.try_next()
        if event is not None:
            self._token = event["_id"]
        return event

    @property
    def resume_token(self) -> Token | None:
        return self._token

    async def close(self) -> None:
        self._cursor.close()


class EngineChangeSource:
    def __init__(self, collection: Any) -> None:
        self._collection = collection

    async def open(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        *,
        resume_after: Token | None,
        max_await_ms: int,
    ) -> ChangeStream:
        from mongoeco.errors import OperationFailure as EngineFailure

        try:
            cursor = await self._collection.watch(
                list(pipeline),
                full_document="updateLookup",
                resume_after=resume_after,
                max_await_time_ms=max_await_ms,
            )
        except EngineFailure as exc:
            if resume_after is None:
                raise
            raise OperationFailure(
                f"embedded engine cannot resume: {exc}",
                code=HISTORY_LOST,
                details={"code": HISTORY_LOST, "errorLabels": ["NonResumableChangeStreamError"]},
            ) from exc
        return EngineChangeStream(cursor, resume_after)


class EmbeddedMongo:
    """A running embedded engine: ``uri`` for PyMongo, ``change_source()`` for events."""

    def __init__(self, engine_client: Any, uri: str) -> None:
        self.engine = engine_client
        self.uri = uri

    def change_source(self, database: str, collection: str) -> EngineChangeSource:
        return EngineChangeSource(self.engine[database][collection])


@contextlib.asynccontextmanager
async def start() -> AsyncIterator[EmbeddedMongo]:
    """Start the in-memory engine and its wire proxy on 127.0.0.1 (a free port).

    The engine's own operations never yield to the event loop, but PyMongo
    clients talking to it over the proxy do interleave (each round trip is a
    socket read), which is what concurrent consumers need.
    """
    import mongoeco
    from mongoeco.wire import AsyncMongoEcoProxyServer

    engine_client = mongoeco.AsyncMongoClient()
    try:
        async with AsyncMongoEcoProxyServer(client=engine_client) as server:
            yield EmbeddedMongo(engine_client, server.address.uri)
    finally:
        await engine_client.close()
