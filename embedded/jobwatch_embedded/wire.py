"""The wire front: mongoeco's MongoDB wire-protocol proxy, with change streams.

The proxy decodes each OP_MSG into a request context and hands it to its
command executor; this module wraps that executor (the one interception
point, ``_executor``) and answers what the proxy cannot:

- ``aggregate`` with a leading ``$changeStream``, ``getMore`` and
  ``killCursors`` on those cursors (``changes``);
- ``hello``: advertises a one-member replica set, as drivers expect of a
  server with change streams;
- ``drop``, ``renameCollection``, ``dropDatabase``: forwarded, then the
  engine's lost sequence numbers absorbed and what it does not report
  (rename, dropDatabase) recorded in the history;
- errors: an unknown command gets MongoDB's ``CommandNotFound`` (59).

Everything else goes to the engine unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jobwatch_embedded import changes, errors
from jobwatch_embedded.engine import Engine

SET_NAME = "jobwatch-embedded"


class ChangeStreamExecutor:
    def __init__(self, inner: Any, engine: Engine, address: list[str]) -> None:
        self._inner = inner
        self._engine = engine
        self._address = address  # filled once the listener is bound
        self.streams = changes.ChangeStreams(engine.history, self._lookup, engine.flush)

    def _build_request_context(self, body: dict[str, Any], **kwargs: Any) -> Any:
        if body.get("aggregate") == 1 and changes.is_change_stream(body):
            # A database or cluster stream: the proxy's validation wants a
            # collection name, so it sees a placeholder and we keep the 1.
            context = self._inner._build_request_context({**body, "aggregate": "$cmd.aggregate"}, **kwargs)
            return dataclasses.replace(context, command_document={**context.command_document, "aggregate": 1})
        return self._inner._build_request_context(body, **kwargs)

    def error_document(self, exc: Exception) -> dict[str, Any]:
        if isinstance(exc, errors.CommandError):
            return exc.document()
        document: dict[str, Any] = self._inner.error_document(exc)
        if str(exc).startswith("unsupported wire command"):
            name = str(exc).rsplit(":", 1)[-1].strip()
            return errors.CommandError(errors.COMMAND_NOT_FOUND, f"no such command: '{name}'").document()
        return document

    async def execute_prepared(self, context: Any) -> dict[str, Any]:
        name, command, db = context.command_name, context.command_document, context.db_name
        try:
            if name == "aggregate" and changes.is_change_stream(command):
                return await self.streams.aggregate(db, command)
            if name == "getMore" and self.streams.owns(command.get("getMore")):
                return await self.streams.get_more(db, command)
            if name == "killCursors":
                return await self._kill_cursors(context)
        except errors.CommandError as exc:
            return exc.document()
        if name in ("hello", "isMaster", "ismaster"):
            return self._replica_set(await self._inner.execute_prepared(context))
        if name == "dropDatabase":
            return await self._drop_database(context)
        if name == "renameCollection":
            # Drivers send it to admin with full names; the engine wants it on the
            # collection's own database (renames across databases stay refused).
            source_db = str(command.get("renameCollection", "")).partition(".")[0]
            if source_db and source_db == str(command.get("to", "")).partition(".")[0]:
                context = dataclasses.replace(context, db_name=source_db)
        reply: dict[str, Any] = await self._inner.execute_prepared(context)
        if reply.get("ok") and name == "drop":
            await self._engine.absorb_after_drop()
        if reply.get("ok") and name == "renameCollection":
            await self._engine.flush()
            source_db, _, source = str(command["renameCollection"]).partition(".")
            target_db, _, target = str(command.get("to", "")).partition(".")
            self._engine.record_rename(source_db, source, target_db, target)
        return reply

    async def _kill_cursors(self, context: Any) -> dict[str, Any]:
        ids = context.command_document.get("cursors")
        if not isinstance(ids, list):
            raise errors.CommandError(errors.FAILED_TO_PARSE, "cursors must be an array")
        ours = [c for c in ids if self.streams.owns(c)]
        killed, unknown = self.streams.kill(ours)
        theirs = [c for c in ids if c not in ours]
        reply: dict[str, Any] = {"cursorsKilled": killed, "cursorsNotFound": unknown, "cursorsAlive": [], "cursorsUnknown": [], "ok": 1.0}
        if theirs:
            forwarded = dataclasses.replace(context, command_document={**context.command_document, "cursors": theirs})
            inner = await self._inner.execute_prepared(forwarded)
            reply["cursorsKilled"] += inner.get("cursorsKilled", [])
            reply["cursorsNotFound"] += inner.get("cursorsNotFound", [])
        return reply

    async def _drop_database(self, context: Any) -> dict[str, Any]:
        reply: dict[str, Any] = await self._inner.execute_prepared(context)
        if reply.get("ok"):
            await self._engine.absorb_after_drop()  # also records the engine's drops
            self._engine.record_drop_database(context.db_name)
        return reply

    def _replica_set(self, reply: dict[str, Any]) -> dict[str, Any]:
        if reply.get("ok") and self._address:
            me = self._address[0]
            reply.update(setName=SET_NAME, setVersion=1, hosts=[me], primary=me, me=me, secondary=False)
        return reply

    async def _lookup(self, db: str, coll: str, document_key: bytes) -> bytes | None:
        return self._engine.current(db, coll, document_key)


def proxy_class() -> type[Any]:
    from mongoeco.wire import AsyncMongoEcoProxyServer

    class ChangeStreamProxy(AsyncMongoEcoProxyServer):  # type: ignore[misc]
        def __init__(self, engine: Engine, *, host: str, port: int) -> None:
            super().__init__(client=engine.client, host=host, port=port)
            self.address_slot: list[str] = []
            inner: Any = self._executor
            self._executor: Any = ChangeStreamExecutor(inner, engine, self.address_slot)

        @property
        def streams(self) -> changes.ChangeStreams:
            executor: ChangeStreamExecutor = self._executor
            return executor.streams

    return ChangeStreamProxy
