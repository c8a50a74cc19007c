"""The embedded engine (mongoeco) and the tap that copies its changes into the
server's history.

The engine is one in-process ``mongoeco.AsyncMongoClient``: in memory, or in
SQLite under the data directory. Its own change streams only reach watchers
of that client object, carry no ``updateDescription``, and keep no history
while nobody watches; so the server opens one watcher over the whole client
at start and records every change it reports into ``History``, computing
``updateDescription`` from the last image it saw of each document (the
engine gives the post-image of each write; the images are primed from the
data at start).

Two engine behaviours shape this module (mongoeco 4.11):

- a collection drop is reported as ``invalidate`` and closes a client-wide
  watcher; the tap records a ``drop`` and reopens after that event;
- each dropped collection's event takes a sequence number the engine's next
  write then also gets, and that write's event is discarded;
  ``absorb_after_drop`` spends those numbers on private writes, until one
  of them is seen, so no client change is lost.

The engine's internals the tap reads (its change hub's offset, its cursor's)
are reached through ``hooks``, as every such touchpoint is.

The tap also keeps the collection catalog (``catalog``): a change to a
collection it has not seen is preceded by that collection's ``create``
event, as MongoDB's oplog has it; with ``changeStreamPreAndPostImages`` on,
each update, replace and delete records the document's pre-image.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from loguru import logger

from jobwatch_embedded import catalog, events, history, hooks

PRIVATE_DB = "__jobwatch_embedded"
ENGINE_FILE = "engine.sqlite"
TAP_AWAIT_MS = 1000
# The engine's own buffer of changes the tap has yet to read. The memory
# engine runs one command without yielding, so the tap reads a command's
# changes after it: the buffer holds one maximal write batch (the wire's
# maxWriteBatchSize). A single command changing more documents than this
# outruns the tap, which then fails, and the server stops (loudly).
ENGINE_BUFFER_EVENTS = 100_000
# More than any number of collections one dropDatabase can take with it.
MAX_ABSORB_WRITES = 100_000
# The tap hands the engine back its copies of recorded changes in steps of this.
RELEASE_EVERY = 1024
# The engine's readers that are the server's own: the tap and its keeper.
OWN_READERS = 2
ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
# The engine hands the tap standard (subtype 4) UUIDs as uuid.UUID, which BSON
# encodes only when told how.
CODEC: CodecOptions[Any] = CodecOptions(uuid_representation=UuidRepresentation.STANDARD)


class Engine:
    def __init__(self, client: Any, history_: history.History) -> None:
        self.client = client
        self.history = history_
        # The last image of each document, as BSON (unscanned by the GC).
        self._images: dict[bytes, bytes] = {}
        self._tap: Any = None
        self._keeper: Any = None
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._stopped: asyncio.Future[BaseException] | None = None
        self._reading = asyncio.Lock()
        self._recorded = 0  # changes recorded since the engine's copies were last released
        self._last_marker: object = None
        self.catalog = catalog.Catalog()
        # Collections whose engine drop is part of another event (a rename's dropTarget).
        self._silent_drops: set[tuple[str, str]] = set()

    async def start(self) -> None:
        # A watcher the tap never reads keeps the engine publishing while the
        # tap reopens after a drop.
        self._keeper = await self.client[PRIVATE_DB]["keeper"].watch(max_await_time_ms=0)
        self._tap = await self.client.watch(full_document="updateLookup", max_await_time_ms=TAP_AWAIT_MS)
        hooks.check_engine(self.client, self._tap)
        await self._prime_images()
        await self.catalog.prime(self.client, PRIVATE_DB)
        self._stopped = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._pump(), name="embedded-tap")

    async def stop(self) -> None:
        """Record what the engine still holds, then stop the tap."""
        with contextlib.suppress(Exception):
            await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for cursor in (self._tap, self._keeper):
            if cursor is not None:
                cursor.close()

    async def wait_failed(self) -> BaseException:
        """Return the tap's failure, if it ever stops: then the history is stale."""
        assert self._stopped is not None
        return await asyncio.shield(self._stopped)

    async def flush(self) -> None:
        """Record every change the engine has published, now.

        The front runs this after every command, so a write is in the
        history (and a waiting ``getMore`` woken) before the write is
        acknowledged, as MongoDB's oplog has a write at its commit; the
        tap's own task only catches changes made outside a command. Reads
        the engine hub's offset and the tap cursor's (``hooks``): the only
        exact way to know the tap has caught up.
        """
        if self._failure is not None:
            raise RuntimeError("the embedded change tap stopped") from self._failure
        async with self._reading:  # one reader of the tap cursor at a time
            try:
                await self._record_published()
            except Exception as exc:
                self._fail(exc)
                raise RuntimeError("the embedded change tap stopped") from exc

    async def _record_published(self) -> None:
        while hooks.read_offset(self._tap) < hooks.published_offset(self.client):
            # A change is there: the cursor returns it without waiting.
            change = await self._tap.try_next()
            if change is None:
                continue
            self._record(change)
            self._recorded += 1
            if change["operationType"] == "invalidate":
                # The engine closed the tap; continue right after the drop.
                self._tap = await self.client.watch(
                    full_document="updateLookup", max_await_time_ms=TAP_AWAIT_MS, resume_after=change["_id"]
                )
        if self._recorded >= RELEASE_EVERY:
            self._release()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None:
            return
        self._failure = exc
        logger.bind(action="embedded_tap_failed", error=repr(exc)).error("embedded change tap stopped")
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(exc)

    def _release(self) -> None:
        """Drop the engine's copies of the changes the tap has recorded.

        The engine keeps its last ``ENGINE_BUFFER_EVENTS`` changes as Python
        objects whether or not anyone still needs them; the history holds
        them now (as BSON), so the engine's copies would only make every full
        garbage collection scan them (with the history as dicts too, a full
        collection took 300-400 ms at 20,000 changes).
        The last recorded change stays: the tap resumes after it when it
        reopens. On another mongoeco the engine keeps its own bound and
        nothing is lost.
        """
        hooks.release(self.client, self._tap, OWN_READERS)
        self._recorded = 0

    async def absorb_after_drop(self) -> None:
        for _ in range(MAX_ABSORB_WRITES):
            marker = bson.ObjectId()
            await self.client[PRIVATE_DB]["sequence"].insert_one({"_id": marker})
            await self.flush()
            if self._last_marker == marker:
                await self.client[PRIVATE_DB]["sequence"].delete_many({})
                return
        raise RuntimeError("the engine discards every change after a drop")

    async def _prime_images(self) -> None:
        for db_name in await self.client.list_database_names():
            if db_name == PRIVATE_DB:
                continue
            db = self.client[db_name]
            for coll_name in await db.list_collection_names():
                async for document in db[coll_name].find({}):
                    self._images[_image_key(db_name, coll_name, _encode({"_id": document["_id"]}))] = _encode(document)

    async def _pump(self) -> None:
        """Record changes no command's ``flush`` recorded (writes made on the
        engine's own client, not through the wire front, as the benchmarks'
        in-process database does), woken by the engine's publication."""
        try:
            while True:
                published = await hooks.wait_published(self.client, hooks.read_offset(self._tap), TAP_AWAIT_MS / 1000)
                if published:
                    await self.flush()
                elif self._recorded:
                    self._release()  # idle: hand the engine back its copies now
        except Exception as exc:
            self._fail(exc)

    def _record(self, change: dict[str, Any]) -> None:
        """Record one engine change. The engine's values are PyMongo's types,
        so BSON is encoded from them directly."""
        operation = change["operationType"]
        db, coll = change["ns"]["db"], change["ns"]["coll"]
        if db == PRIVATE_DB:
            if coll == "sequence" and change["operationType"] == "insert":
                self._last_marker = change["documentKey"]["_id"]
            return
        if operation == "invalidate":
            self._forget(db, coll)
            dropped = self.catalog.drop(db, coll)
            if (db, coll) in self._silent_drops:
                self._silent_drops.discard((db, coll))
                return
            self.history.record("drop", db, coll, collection_uuid=dropped.uuid if dropped is not None else None)
            return
        collection = self.catalog.get(db, coll) or self.record_create(db, coll)
        key = _encode(change["documentKey"])
        image_key = _image_key(db, coll, key)
        images = collection.images
        if operation == "delete":
            before = self._images.pop(image_key, None)
            self.history.record(
                "delete",
                db,
                coll,
                document_key=key,
                collection_uuid=collection.uuid,
                images=images,
                pre_image=before if images else None,
            )
            return
        after = change.get("fullDocument")
        after_bson = None if after is None else _encode(after)
        before = self._images.get(image_key) if images or operation == "update" else None
        description = paths = None
        if operation == "update":
            # Both images decoded from BSON: values compare with the same types.
            before_document = None if before is None else _decode(before)
            after_document = {} if after_bson is None else _decode(after_bson)
            described, disambiguated = events.describe_update_paths(before_document, after_document)
            description = _encode(described)
            paths = _encode(disambiguated) if disambiguated else None
        if after_bson is not None:
            self._images[image_key] = after_bson
        self.history.record(
            operation,
            db,
            coll,
            document_key=key,
            full_document=after_bson,
            update_description=description,
            collection_uuid=collection.uuid,
            images=images,
            pre_image=before if images and operation != "insert" else None,
            disambiguated_paths=paths,
        )

    def record_create(self, db: str, coll: str, options: dict[str, Any] | None = None) -> catalog.Collection:
        """A collection (or view) the catalog did not know: its ``create``
        event, as MongoDB's oplog has one before the collection's first write."""
        options = options or {}
        view = "viewOn" in options
        collection = self.catalog.add(db, coll, images=catalog.images_enabled(options), view=view)
        if view:
            described = {"viewOn": options["viewOn"], "pipeline": options.get("pipeline", [])}
        else:
            described = {"idIndex": ID_INDEX}
        self.history.record("create", db, coll, collection_uuid=collection.uuid, description=_encode(described))
        return collection

    def record_ddl(self, operation: str, db: str, coll: str, description: dict[str, Any]) -> None:
        """An event only streams with showExpandedEvents see (createIndexes,
        dropIndexes, modify), after the command that made it."""
        collection = self.catalog.get(db, coll) or self.record_create(db, coll)
        self.history.record(operation, db, coll, collection_uuid=collection.uuid, description=_encode(description))

    def current(self, db: str, coll: str, document_key: bytes) -> bytes | None:
        """The document as of the last recorded change (updateLookup's answer
        once ``flush()`` returned): the engine's image, without a query."""
        return self._images.get(_image_key(db, coll, document_key))

    def expect_silent_drop(self, db: str, coll: str, expected: bool = True) -> None:
        """The engine is about to drop ``db.coll`` as part of another event
        (MongoDB's rename with dropTarget reports one rename, no drop)."""
        if expected:
            self._silent_drops.add((db, coll))
        else:
            self._silent_drops.discard((db, coll))

    def record_rename(self, db: str, coll: str, to_db: str, to_coll: str, dropped_target: bytes | None = None) -> None:
        """``dropped_target``: the UUID of the collection ``dropTarget`` replaced."""
        prefix = _image_key(db, coll, None)
        moved = {k: v for k, v in self._images.items() if k.startswith(prefix)}
        for key, image in moved.items():
            del self._images[key]
            self._images[_image_key(to_db, to_coll, key[len(prefix) :])] = image
        source = self.catalog.get(db, coll)
        self.catalog.rename(db, coll, to_db, to_coll)
        described: dict[str, Any] = {"to": {"db": to_db, "coll": to_coll}}
        if dropped_target is not None:
            described["dropTarget"] = bson.Binary(dropped_target, bson.binary.UUID_SUBTYPE)
        self.history.record(
            "rename",
            db,
            coll,
            rename_to=(to_db, to_coll),
            collection_uuid=source.uuid if source is not None else None,
            description=_encode(described),
        )

    def record_drop_database(self, db: str) -> None:
        """After the engine's own drop per collection (recorded by the tap)."""
        for key in [k for k in self._images if k.startswith(f"{db}\x00".encode())]:
            del self._images[key]
        self.catalog.drop_database(db)
        self.history.record("dropDatabase", db, "")

    def _forget(self, db: str, coll: str) -> None:
        prefix = _image_key(db, coll, None)
        for key in [k for k in self._images if k.startswith(prefix)]:
            del self._images[key]


def _encode(document: Any) -> bytes:
    try:
        return bson.encode(document, codec_options=CODEC)
    except bson.errors.InvalidDocument:
        # The engine's own value types (an update pipeline's arithmetic leaves
        # its numeric wrappers in the document it reports): as BSON's.
        return bson.encode(hooks.to_bson(document), codec_options=CODEC)


def _decode(data: bytes) -> dict[str, Any]:
    return bson.decode(data, codec_options=CODEC)


def _image_key(db: str, coll: str, document_key: bytes | None) -> bytes:
    prefix = f"{db}\x00{coll}\x00".encode()
    return prefix if document_key is None else prefix + document_key


@contextlib.asynccontextmanager
async def open_engine(data_dir: Path | None, *, max_events: int = history.DEFAULT_MAX_EVENTS) -> AsyncIterator[Engine]:
    import mongoeco

    from jobwatch_embedded import planner

    hooks.install()
    history_ = history.History(journal_dir=data_dir, max_events=max_events)
    if data_dir is None:
        client = mongoeco.AsyncMongoClient(planner.engine(), change_stream_history_size=ENGINE_BUFFER_EVENTS)
    else:
        from mongoeco.engines import SQLiteEngine

        client = mongoeco.AsyncMongoClient(
            SQLiteEngine(str(data_dir / ENGINE_FILE)), change_stream_history_size=ENGINE_BUFFER_EVENTS
        )
    try:
        async with client:  # connects the engine; closes the client on the way out
            engine = Engine(client, history_)
            try:
                await engine.start()
                yield engine
            finally:
                await engine.stop()
    finally:
        history_.close()
