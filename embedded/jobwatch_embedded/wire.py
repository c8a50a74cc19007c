"""The wire front: mongoeco's MongoDB wire-protocol proxy, with change streams.

The proxy decodes each OP_MSG into a request context and hands it to its
command executor; ``Front`` takes that executor's place (``new_proxy``)
and answers what the proxy cannot, before or instead of the engine:

- fail points (``failpoints``): checked before every command;
- ``aggregate`` with a leading ``$changeStream``, ``getMore`` and
  ``killCursors`` on those cursors (``changes``);
- the replica-set commands and fields (``commands``): ``hello``,
  ``replSetGetStatus``, ``getParameter``, lowercase ``buildinfo``,
  ``killAllSessions``, ``collMod``, ``configureFailPoint``;
- authentication (``saslStart``, ``saslContinue``, ``authenticate``): 18
  ``AuthenticationFailed``, as there are no users;
- DDL: forwarded, then what the engine does not report recorded in the
  history: ``drop`` and ``dropDatabase`` (the engine's lost sequence numbers
  absorbed), ``renameCollection``, ``create``, ``createIndexes``,
  ``dropIndexes``;
- errors: an unknown command gets MongoDB's ``CommandNotFound`` (59); errors
  get MongoDB's labels (``errors.labels_for``).

Everything else goes to the engine unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from mongoeco import Timestamp

from jobwatch_embedded import changes, commands, errors, failpoints, hooks
from jobwatch_embedded.engine import PRIVATE_DB, Engine

Handler = Callable[[Any], Awaitable[dict[str, Any]]]
#: Commands the engine's proxy does not know, answered here: the proxy
#: decodes them as a ``ping`` and the context gets the real command back.
OWN_COMMANDS = frozenset(
    {
        "buildinfo",
        "getParameter",
        "replSetGetStatus",
        "killAllSessions",
        "collMod",
        "configureFailPoint",
        "saslStart",
        "saslContinue",
        "authenticate",
    }
)


class Front:
    """The proxy's command executor, in front of the engine's own."""

    def __init__(self, inner: Any, engine: Engine, replica_set: commands.ReplicaSet) -> None:
        self._inner = inner
        self._build = hooks.request_builder(inner)
        self._engine = engine
        self.replica_set = replica_set
        self.streams = changes.ChangeStreams(engine.history, self._lookup, engine.flush)
        self.fail_points = failpoints.FailPoints()
        # The last cluster time, and its operationTime value.
        self._time: tuple[tuple[int, int], Any] = ((-1, -1), None)
        self._handlers: dict[str, Handler] = {
            "getMore": self._get_more,
            "killCursors": self._kill_cursors,
            "hello": self._hello,
            "isMaster": self._hello,
            "ismaster": self._hello,
            "buildinfo": self._build_info,
            "getParameter": self._get_parameter,
            "replSetGetStatus": self._repl_set_get_status,
            "killAllSessions": self._kill_all_sessions,
            "collMod": self._coll_mod,
            "configureFailPoint": self._configure_fail_point,
            "saslStart": self._authenticate,
            "saslContinue": self._authenticate,
            "authenticate": self._authenticate,
            "create": self._create,
            "createIndexes": self._create_indexes,
            "dropIndexes": self._drop_indexes,
            "drop": self._drop,
            "dropDatabase": self._drop_database,
            "renameCollection": self._rename_collection,
        }

    # -- the proxy's executor interface --------------------------------------

    def _build_request_context(self, body: dict[str, Any], **kwargs: Any) -> Any:
        name = next(iter(body), None)
        if name in OWN_COMMANDS:
            placeholder = {"ping": 1, **{k: v for k, v in body.items() if k.startswith("$") or k == "lsid"}}
            context = self._build(placeholder, **kwargs)
            return dataclasses.replace(context, command_name=name, command_document=body)
        # Cursor ids may come as Int64s, which the proxy decodes wrapped (and
        # then refuses): plain integers, as MongoDB reads them.
        if name == "killCursors" and isinstance(body.get("cursors"), list):
            body = {**body, "cursors": [_plain(c) for c in body["cursors"]]}
        elif name == "getMore":
            body = {**body, "getMore": _plain(body["getMore"])}
        if body.get("aggregate") == 1 and changes.is_change_stream(body):
            # A database or cluster stream: the proxy's validation wants a
            # collection name, so it sees a placeholder and we keep the 1.
            context = self._build({**body, "aggregate": "$cmd.aggregate"}, **kwargs)
            return dataclasses.replace(context, command_document={**context.command_document, "aggregate": 1})
        return self._build(body, **kwargs)

    def error_document(self, exc: Exception) -> dict[str, Any]:
        if isinstance(exc, errors.CommandError):
            return exc.document()
        document: dict[str, Any] = self._inner.error_document(exc)
        if str(exc).startswith("unsupported wire command"):
            name = str(exc).rsplit(":", 1)[-1].strip()
            return errors.CommandError(errors.COMMAND_NOT_FOUND, f"no such command: '{name}'").document()
        return document

    async def execute_prepared(self, context: Any) -> dict[str, Any]:
        reply = await self._execute(context)
        # The command's changes are in the history before it is answered: a
        # waiting getMore is woken now, and operationTime is the write's own.
        await self._engine.flush()
        # A replica set member's replies carry the operation's time (what
        # startAtOperationTime and causally consistent sessions read). Not the
        # gossiped $clusterTime: drivers would send it back with every command,
        # which costs each $inc a few percent and serves nothing here.
        last_time = self._engine.history.last_time
        if last_time != self._time[0]:
            self._time = (last_time, Timestamp(*last_time))
        reply["operationTime"] = self._time[1]
        return reply

    async def _execute(self, context: Any) -> dict[str, Any]:
        name = context.command_name
        if self.fail_points.armed:
            try:
                await self.fail_points.before_command(self._caller(context))
            except errors.CommandError as exc:
                # Before a getMore has its cursor, MongoDB cannot tell it is a
                # change stream's: only an aggregate gets the resumable label here.
                return exc.document(
                    change_stream=name == "aggregate" and changes.is_change_stream(context.command_document)
                )
        try:
            handler = self._handlers.get(name)
            if handler is not None:
                return await handler(context)
            if name == "aggregate" and changes.is_change_stream(context.command_document):
                return await self.streams.aggregate(context.db_name, context.command_document)
            reply: dict[str, Any] = await self._inner.execute_prepared(context)
            return reply
        except errors.CommandError as exc:
            return exc.document(change_stream=self._is_change_stream(context))

    def _is_change_stream(self, context: Any) -> bool:
        """A change stream's aggregate or getMore (for its errors' labels)."""
        command = context.command_document
        if context.command_name == "aggregate":
            return changes.is_change_stream(command)
        return context.command_name == "getMore" and self.streams.owns(command.get("getMore"))

    def _caller(self, context: Any) -> failpoints.Caller:
        command = context.command_document
        target = command.get(context.command_name)
        collection = command.get("collection") if context.command_name == "getMore" else target
        return failpoints.Caller(
            context.command_name,
            context.db_name,
            collection if isinstance(collection, str) else None,
            hooks.app_name(context.connection),
        )

    async def _forward(self, context: Any) -> dict[str, Any]:
        reply: dict[str, Any] = await self._inner.execute_prepared(context)
        return reply

    # -- cursors -----------------------------------------------------------------

    async def _get_more(self, context: Any) -> dict[str, Any]:
        command = context.command_document
        checked_out = self._fail_after_checkout(context) if self.fail_points.armed else _nothing
        if self.streams.owns(command.get("getMore")):
            return await self.streams.get_more(context.db_name, command, checked_out)
        checked_out()  # the engine's cursor: before the engine looks it up
        return await self._forward(context)

    def _fail_after_checkout(self, context: Any) -> Callable[[], None]:
        caller = self._caller(context)
        return lambda: self.fail_points.after_cursor_checkout(caller)

    async def _kill_cursors(self, context: Any) -> dict[str, Any]:
        ids = context.command_document.get("cursors")
        if not isinstance(ids, list):
            raise errors.CommandError(errors.FAILED_TO_PARSE, "cursors must be an array")
        ours = [c for c in ids if self.streams.owns(c)]
        killed, unknown = self.streams.kill(ours)
        theirs = [c for c in ids if c not in ours]
        reply: dict[str, Any] = {
            "cursorsKilled": killed,
            "cursorsNotFound": unknown,
            "cursorsAlive": [],
            "cursorsUnknown": [],
            "ok": 1.0,
        }
        if theirs:
            forwarded = dataclasses.replace(context, command_document={**context.command_document, "cursors": theirs})
            inner = await self._forward(forwarded)
            reply["cursorsKilled"] += inner.get("cursorsKilled", [])
            reply["cursorsNotFound"] += inner.get("cursorsNotFound", [])
        return reply

    async def _lookup(self, db: str, coll: str, document_key: bytes) -> bytes | None:
        return self._engine.current(db, coll, document_key)

    # -- the replica set and the commands tools send first -------------------

    async def _hello(self, context: Any) -> dict[str, Any]:
        reply = await self._forward(context)
        return self.replica_set.hello(reply, self._engine.history.last_time)

    async def _build_info(self, context: Any) -> dict[str, Any]:
        """Lowercase ``buildinfo`` (what ``MongoClient.server_info()`` sends):
        the engine knows ``buildInfo``."""
        body = {"buildInfo": 1, **{k: v for k, v in context.command_document.items() if k != "buildinfo"}}
        return await self._forward(dataclasses.replace(context, command_name="buildInfo", command_document=body))

    async def _get_parameter(self, context: Any) -> dict[str, Any]:
        return commands.get_parameter(context.command_document)

    async def _repl_set_get_status(self, context: Any) -> dict[str, Any]:
        return self.replica_set.status(self._engine.history.last_time)

    async def _kill_all_sessions(self, context: Any) -> dict[str, Any]:
        return {"ok": 1.0}  # sessions hold nothing here that outlives their commands

    async def _authenticate(self, context: Any) -> dict[str, Any]:
        """The server has no users: every credential fails, as MongoDB
        answers one it does not know (18), so a client configured with
        credentials learns why it cannot connect."""
        raise errors.CommandError(
            errors.AUTHENTICATION_FAILED,
            "Authentication failed: the embedded server has no users; connect without credentials",
        )

    async def _configure_fail_point(self, context: Any) -> dict[str, Any]:
        if context.db_name != "admin":
            raise errors.CommandError(
                errors.UNAUTHORIZED, "configureFailPoint may only be run against the admin database."
            )
        return self.fail_points.configure(context.command_document)

    # -- DDL -------------------------------------------------------------------------

    async def _coll_mod(self, context: Any) -> dict[str, Any]:
        return await commands.coll_mod(self._engine, context.db_name, context.command_document)

    async def _create(self, context: Any) -> dict[str, Any]:
        reply = await self._forward(context)
        name = context.command_document.get("create")
        if reply.get("ok") and isinstance(name, str):
            await self._engine.flush()
            if self._engine.catalog.get(context.db_name, name) is None:
                self._engine.record_create(context.db_name, name, context.command_document)
        return reply

    async def _create_indexes(self, context: Any) -> dict[str, Any]:
        db, name = context.db_name, context.command_document.get("createIndexes")
        before = await self._index_names(db, name)
        reply = await self._forward(context)
        if reply.get("ok") and isinstance(name, str):
            await self._engine.flush()
            for spec in context.command_document.get("indexes", []):
                if isinstance(spec, dict) and spec.get("name") not in before:
                    self._engine.record_ddl("createIndexes", db, name, {"indexes": [{"v": 2, **spec}]})
        return reply

    async def _drop_indexes(self, context: Any) -> dict[str, Any]:
        db, name = context.db_name, context.command_document.get("dropIndexes")
        before = await self._indexes(db, name)
        reply = await self._forward(context)
        if reply.get("ok") and isinstance(name, str):
            await self._engine.flush()
            after = await self._index_names(db, name)
            for index in before:
                if index["name"] not in after:
                    self._engine.record_ddl("dropIndexes", db, name, {"indexes": [{"v": 2, **index}]})
        return reply

    async def _drop(self, context: Any) -> dict[str, Any]:
        reply = await self._forward(context)
        if reply.get("ok"):
            await self._engine.absorb_after_drop()
            await self._engine.catalog.forget(
                self._engine.client, PRIVATE_DB, context.db_name, context.command_document.get("drop")
            )
        return reply

    async def _drop_database(self, context: Any) -> dict[str, Any]:
        reply = await self._forward(context)
        if reply.get("ok"):
            await self._engine.absorb_after_drop()  # also records the engine's drops
            self._engine.record_drop_database(context.db_name)
            await self._engine.catalog.forget(self._engine.client, PRIVATE_DB, context.db_name, None)
        return reply

    async def _rename_collection(self, context: Any) -> dict[str, Any]:
        command = context.command_document
        # Drivers send it to admin with full names; the engine wants it on the
        # collection's own database (renames across databases stay refused).
        source_db, _, source = str(command.get("renameCollection", "")).partition(".")
        target_db, _, target = str(command.get("to", "")).partition(".")
        if source_db and source_db == target_db:
            context = dataclasses.replace(context, db_name=source_db)
        replaced = self._engine.catalog.get(target_db, target) if command.get("dropTarget") else None
        if replaced is not None:
            self._engine.expect_silent_drop(target_db, target)
        try:
            reply = await self._forward(context)
            if reply.get("ok") and replaced is not None:
                await self._engine.absorb_after_drop()  # the engine's drop of the target, as after a drop
        finally:
            if replaced is not None:
                await self._engine.flush()
                self._engine.expect_silent_drop(target_db, target, expected=False)
        if reply.get("ok"):
            await self._engine.flush()
            self._engine.record_rename(
                source_db, source, target_db, target, replaced.uuid if replaced is not None else None
            )
            # What collMod stored follows the collection to its new name.
            catalog, client = self._engine.catalog, self._engine.client
            await catalog.forget(client, PRIVATE_DB, source_db, source)
            await catalog.forget(client, PRIVATE_DB, target_db, target)
            moved = catalog.get(target_db, target)
            if moved is not None and moved.images:
                await catalog.store_images(client, PRIVATE_DB, target_db, target, True)
        return reply

    async def _indexes(self, db: str, name: object) -> list[dict[str, Any]]:
        if not isinstance(name, str) or self._engine.catalog.get(db, name) is None:
            return []
        return [dict(index) async for index in self._engine.client[db][name].list_indexes()]

    async def _index_names(self, db: str, name: object) -> set[str]:
        return {index["name"] for index in await self._indexes(db, name)}


def _nothing() -> None:
    return None


def _plain(value: object) -> object:
    number = hooks.integer(value)
    return value if number is None else number


def new_proxy(engine: Engine, replica_set: commands.ReplicaSet, *, host: str, port: int) -> Any:
    """mongoeco's wire proxy with ``Front`` as its executor (``proxy.executor``)."""
    return hooks.proxy_class(lambda inner: Front(inner, engine, replica_set), refuse)(
        engine.client, host=host, port=port
    )


#: The wire protocol's opcodes a client may open with: OP_MSG, OP_QUERY (a legacy hello), OP_COMPRESSED.
OPENING_OPCODES = frozenset({2013, 2004, 2012})
TLS_HANDSHAKE_RECORD = b"\x16\x03"


def refuse(head: bytes, peer: object) -> bool:
    """Whether a connection's first message header is not MongoDB's wire
    protocol (then the server logs it and closes the connection at once:
    the length a TLS ClientHello's bytes announce would keep it waiting for
    bytes that never come, and the client would hang until its timeout)."""
    opcode = int.from_bytes(head[12:16], "little")
    if opcode in OPENING_OPCODES:
        return False
    if head.startswith(TLS_HANDSHAKE_RECORD):
        cause = "a TLS handshake: this server speaks plain TCP, connect without tls=true"
    else:
        cause = f"not MongoDB's wire protocol (opcode {opcode})"
    logger.bind(action="connection_refused", peer=str(peer)).warning(f"closed a connection from {peer}: {cause}")
    return True
