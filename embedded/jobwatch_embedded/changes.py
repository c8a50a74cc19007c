"""Change-stream cursors: ``aggregate`` with ``$changeStream``, ``getMore`` and
``killCursors`` on them, answered from the server's history as MongoDB does.

A cursor is a position in the history plus what the client asked for: its
namespace, ``fullDocument`` mode and the pipeline after ``$changeStream``.
``getMore`` returns the matching changes after the position, waiting up to
``maxTimeMS`` (MongoDB's default: 1 s) for one, and always reports a
``postBatchResumeToken``: the position it scanned to, so an idle stream's
token advances past changes it filtered out.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jobwatch_embedded import errors, events, history, stages

DEFAULT_AWAIT_MS = 1000
DEFAULT_BATCH = 101
MAX_BATCH = 1000
# Our cursor ids live far above the engine's (which count from 1), so a
# getMore can tell which side owns a cursor, even after it was killed. Int32:
# the proxy rejects a getMore whose id arrives as an Int64.
FIRST_CURSOR_ID = 1 << 30
ALLOWED_STAGES = frozenset({"$match", "$project", "$addFields", "$set", "$unset", "$replaceRoot", "$replaceWith", "$redact"})
FULL_DOCUMENT_MODES = frozenset({"default", "updateLookup", "whenAvailable", "required"})
# MongoDB's cursorTimeoutMillis: a cursor nobody asked for in this long is
# dropped (a client killed with -9 never sends killCursors).
CURSOR_IDLE_S = 600.0

Lookup = Callable[[str, str, bytes], Awaitable[bytes | None]]


@dataclass
class Cursor:
    cursor_id: int
    db: str
    coll: str | None  # None: every collection of db (or of every db when db is None)
    watch_db: str | None
    namespace: str
    position: int
    full_document: str
    apply: stages.Apply | None  # the pipeline after $changeStream, compiled once
    finished: bool = False
    pending: list[events.Document] = field(default_factory=list)
    last_used_s: float = 0.0


def is_change_stream(command: events.Document) -> bool:
    pipeline = command.get("pipeline")
    return bool(pipeline) and isinstance(pipeline, list) and isinstance(pipeline[0], dict) and "$changeStream" in pipeline[0]


class ChangeStreams:
    def __init__(self, history_: history.History, lookup: Lookup, flush: Callable[[], Awaitable[None]]) -> None:
        self._history = history_
        self._lookup = lookup
        self._flush = flush
        self._cursors: dict[int, Cursor] = {}
        self._ids = itertools.count(FIRST_CURSOR_ID)

    def owns(self, cursor_id: object) -> bool:
        return isinstance(cursor_id, int) and cursor_id >= FIRST_CURSOR_ID

    async def aggregate(self, db: str, command: events.Document) -> events.Document:
        target = command.get("aggregate")
        spec = command["pipeline"][0]["$changeStream"]
        if not isinstance(spec, dict):
            raise errors.CommandError(errors.FAILED_TO_PARSE, "$changeStream stage must be a document")
        if target == 1:
            all_dbs = bool(spec.get("allChangesForCluster"))
            if all_dbs and db != "admin":
                raise errors.CommandError(errors.INVALID_OPTIONS, "allChangesForCluster is only allowed on the admin database")
            coll, watch_db, namespace = None, (None if all_dbs else db), f"{db}.$cmd.aggregate"
        elif isinstance(target, str):
            coll, watch_db, namespace = target, db, f"{db}.{target}"
        else:
            raise errors.CommandError(errors.FAILED_TO_PARSE, "aggregate must name a collection or be 1")
        mode = spec.get("fullDocument", "default")
        if mode not in FULL_DOCUMENT_MODES:
            raise errors.CommandError(errors.BAD_VALUE, f"unknown fullDocument mode {mode!r}")
        if spec.get("fullDocumentBeforeChange", "off") != "off":
            raise errors.CommandError(errors.BAD_VALUE, "fullDocumentBeforeChange (pre-images) is not supported by the embedded server")
        if spec.get("showExpandedEvents"):
            raise errors.CommandError(errors.BAD_VALUE, "showExpandedEvents is not supported by the embedded server")
        pipeline = list(command["pipeline"][1:])
        for stage in pipeline:
            name = next(iter(stage), None) if isinstance(stage, dict) and len(stage) == 1 else None
            if name not in ALLOWED_STAGES:
                raise errors.CommandError(errors.ILLEGAL_OPERATION, f"{name} is not permitted in a $changeStream pipeline")
        self._expire_idle()
        await self._flush()
        position, finished = self._start_position(spec)
        cursor = Cursor(next(self._ids), db, coll, watch_db, namespace, position, mode, stages.compile_stages(pipeline), finished, last_used_s=_now_s())
        batch_size = _batch_size(command.get("cursor", {}).get("batchSize") if isinstance(command.get("cursor"), dict) else None)
        batch = await self._collect(cursor, batch_size)
        self._cursors[cursor.cursor_id] = cursor
        return self._reply(cursor, batch, "firstBatch")

    async def get_more(self, db: str, command: events.Document) -> events.Document:
        cursor_id = command["getMore"]
        cursor = self._cursors.get(cursor_id)
        if cursor is None:
            raise errors.CommandError(errors.CURSOR_NOT_FOUND, f"cursor id {cursor_id} not found")
        cursor.last_used_s = _now_s()
        if command.get("collection") != (cursor.coll or "$cmd.aggregate") or db != cursor.db:
            raise errors.CommandError(errors.UNAUTHORIZED, f"requested getMore on namespace {db}.{command.get('collection')}, but cursor belongs to {cursor.namespace}")
        await_ms = command.get("maxTimeMS", DEFAULT_AWAIT_MS)
        deadline = asyncio.get_running_loop().time() + max(0, int(await_ms)) / 1000
        batch_size = _batch_size(command.get("batchSize") or None)  # 0: no limit
        await self._flush()
        batch = await self._collect(cursor, batch_size)
        while not batch and not cursor.finished:
            remaining_s = deadline - asyncio.get_running_loop().time()
            if remaining_s <= 0:
                break
            await self._history.wait_beyond(cursor.position, remaining_s)
            await self._flush()
            batch = await self._collect(cursor, batch_size)
        return self._reply(cursor, batch, "nextBatch")

    def _expire_idle(self) -> None:
        oldest_s = _now_s() - CURSOR_IDLE_S
        for cursor_id in [c.cursor_id for c in self._cursors.values() if c.last_used_s < oldest_s]:
            del self._cursors[cursor_id]

    def kill(self, cursor_ids: list[int]) -> tuple[list[int], list[int]]:
        killed = [c for c in cursor_ids if self._cursors.pop(c, None) is not None]
        return killed, [c for c in cursor_ids if c not in killed]

    def _reply(self, cursor: Cursor, batch: list[events.Document], key: str) -> events.Document:
        done = cursor.finished and not cursor.pending
        if done:
            self._cursors.pop(cursor.cursor_id, None)
        # After an invalidate the last token is the invalidate's (for startAfter).
        token = batch[-1]["_id"] if done and batch else events.encode_token(self._history.history_id, cursor.position)
        return {
            "cursor": {"id": 0 if done else cursor.cursor_id, "ns": cursor.namespace, key: batch, "postBatchResumeToken": token},
            "ok": 1.0,
        }

    def _start_position(self, spec: events.Document) -> tuple[int, bool]:
        chosen = [k for k in ("resumeAfter", "startAfter", "startAtOperationTime") if spec.get(k) is not None]
        if len(chosen) > 1:
            raise errors.CommandError(errors.BAD_VALUE, "only one of resumeAfter, startAfter and startAtOperationTime may be given")
        if not chosen:
            return self._history.head, False
        option = chosen[0]
        try:
            if option == "startAtOperationTime":
                ts = spec[option]
                return self._history.sequence_at_time((int(ts.time), int(ts.inc))), False
            position = events.decode_token(spec[option])
        except events.TokenError as exc:
            raise errors.CommandError(errors.INVALID_RESUME_TOKEN, str(exc)) from exc
        except history.HistoryLost as exc:
            raise errors.history_lost(str(exc)) from exc
        except AttributeError as exc:
            raise errors.CommandError(errors.TYPE_MISMATCH, "startAtOperationTime must be a Timestamp") from exc
        if position.invalidate and option == "resumeAfter":
            raise errors.CommandError(errors.INVALID_RESUME_TOKEN, "cannot resume after an invalidate event; use startAfter")
        try:
            self._history.check_resumable(position)
        except history.HistoryLost as exc:
            raise errors.history_lost(str(exc)) from exc
        return position.sequence, False

    async def _collect(self, cursor: Cursor, batch_size: int) -> list[events.Document]:
        batch: list[events.Document] = []
        while cursor.pending and len(batch) < batch_size:
            batch.append(cursor.pending.pop(0))
        if cursor.finished:
            return batch
        for entry in self._history.after(cursor.position):
            if len(batch) >= batch_size:
                break
            cursor.position = entry.sequence
            if not entry.in_scope(cursor.watch_db, cursor.coll):
                continue
            if entry.operation == "dropDatabase" and cursor.coll is not None:
                continue
            event = await self._render(cursor, entry)
            if event is not None:
                batch.append(event)
            if cursor.coll is not None and entry.operation in events.INVALIDATING:
                cursor.finished = True
                cursor.pending.append(events.invalidate(entry, self._history.history_id))
                while cursor.pending and len(batch) < batch_size:
                    batch.append(cursor.pending.pop(0))
                break
        return batch

    async def _render(self, cursor: Cursor, entry: events.Entry) -> events.Document | None:
        full_document = None
        if entry.operation in ("insert", "replace"):
            full_document = entry.full_document
        elif entry.operation == "update" and cursor.full_document == "updateLookup":
            assert entry.document_key is not None
            full_document = await self._lookup(entry.db, entry.coll, entry.document_key)
        elif entry.operation == "update" and cursor.full_document in ("whenAvailable", "required"):
            full_document = entry.full_document
        event = events.render(entry, self._history.history_id, full_document=full_document)
        if entry.operation == "update" and cursor.full_document == "updateLookup" and full_document is None:
            event["fullDocument"] = None
        if cursor.apply is None:
            return event
        token = event["_id"]
        transformed = cursor.apply(event)
        if transformed is not None and transformed.get("_id") != token:
            raise errors.CommandError(errors.CHANGE_STREAM_FATAL, "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline")
        return transformed


def _now_s() -> float:
    return asyncio.get_running_loop().time()


def _batch_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_BATCH)
    return DEFAULT_BATCH
