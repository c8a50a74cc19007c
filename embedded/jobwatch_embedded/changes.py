"""Change-stream cursors: ``aggregate`` with ``$changeStream``, ``getMore`` and
``killCursors`` on them, answered from the server's history as MongoDB does.

A cursor is a position in the history plus what the client asked for: its
namespace, ``fullDocument`` and ``fullDocumentBeforeChange`` modes,
``showExpandedEvents`` and the pipeline after ``$changeStream``. ``getMore``
returns the matching changes after the position, waiting up to
``maxTimeMS`` (MongoDB's default: 1 s) for one, and always reports a
``postBatchResumeToken``: the position it scanned to, so an idle stream's
token advances past changes it filtered out.

A cursor whose position falls out of the retained history (the history
keeps ``--history-events`` changes) fails its next ``getMore`` with 286
ChangeStreamHistoryLost, as MongoDB fails a stream whose oplog entries were
overwritten, and the server logs it: a reader that fell behind learns it
lost events instead of silently skipping them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from loguru import logger

from jobwatch_embedded import errors, events, history, stages

DEFAULT_AWAIT_MS = 1000
DEFAULT_BATCH = 101
MAX_BATCH = 1000
# Our cursor ids live far above the engine's (which count from 1), so a
# getMore can tell which side owns a cursor, even after it was killed.
FIRST_CURSOR_ID = 1 << 30
ALLOWED_STAGES = frozenset(
    {
        "$match", "$project", "$addFields", "$set", "$unset", "$replaceRoot", "$replaceWith", "$redact",
        "$changeStreamSplitLargeEvent",
    }
)  # fmt: skip
# MongoDB 7.0's aggregation stages: a name outside these is unrecognized (40324),
# one inside but not above is not permitted after $changeStream (20).
KNOWN_STAGES = ALLOWED_STAGES | frozenset(
    {
        "$bucket", "$bucketAuto", "$changeStream", "$collStats", "$count", "$currentOp", "$densify", "$documents",
        "$facet", "$fill", "$geoNear", "$graphLookup", "$group", "$indexStats", "$limit", "$listCatalog",
        "$listLocalSessions", "$listSampledQueries", "$listSearchIndexes", "$listSessions", "$lookup", "$merge",
        "$out", "$planCacheStats", "$queryStats", "$sample", "$search", "$searchMeta", "$setWindowFields",
        "$shardedDataDistribution", "$skip", "$sort", "$sortByCount", "$unionWith", "$unwind", "$vectorSearch",
    }
)  # fmt: skip
FULL_DOCUMENT_MODES = frozenset({"default", "updateLookup", "whenAvailable", "required"})
BEFORE_CHANGE_MODES = frozenset({"off", "whenAvailable", "required"})
# $changeStream's options (DocumentSourceChangeStreamSpec); others are refused as MongoDB's parser does.
SPEC_OPTIONS = frozenset(
    {
        "allChangesForCluster", "fullDocument", "fullDocumentBeforeChange", "resumeAfter", "startAfter",
        "startAtOperationTime", "showExpandedEvents", "showSystemEvents", "showRawUpdateDescription",
        "showMigrationEvents", "allowToRunOnConfigDB", "allowToRunOnSystemNS",
    }
)  # fmt: skip
SPLIT_STAGE = "$changeStreamSplitLargeEvent"
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
    before_change: str = "off"
    expanded: bool = False
    split: bool = False  # $changeStreamSplitLargeEvent: events beyond 16 MiB come in fragments
    resume_fragments: tuple[int, int] | None = None  # (sequence, fragments already seen): resumed inside an event


def is_change_stream(command: events.Document) -> bool:
    pipeline = command.get("pipeline")
    return (
        bool(pipeline)
        and isinstance(pipeline, list)
        and isinstance(pipeline[0], dict)
        and "$changeStream" in pipeline[0]
    )


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
        unknown = next((key for key in spec if key not in SPEC_OPTIONS), None)
        if unknown is not None:
            message = f"BSON field '$changeStream.{unknown}' is an unknown field."
            raise errors.CommandError(errors.IDL_UNKNOWN_FIELD, message)
        if target == 1:
            all_dbs = bool(spec.get("allChangesForCluster"))
            if all_dbs and db != "admin":
                raise errors.CommandError(
                    errors.INVALID_OPTIONS, "allChangesForCluster is only allowed on the admin database"
                )
            coll, watch_db, namespace = None, (None if all_dbs else db), f"{db}.$cmd.aggregate"
        elif isinstance(target, str):
            coll, watch_db, namespace = target, db, f"{db}.{target}"
        else:
            raise errors.CommandError(errors.FAILED_TO_PARSE, "aggregate must name a collection or be 1")
        mode = spec.get("fullDocument", "default")
        if mode not in FULL_DOCUMENT_MODES:
            raise errors.CommandError(errors.BAD_VALUE, f"unknown fullDocument mode {mode!r}")
        before_change = spec.get("fullDocumentBeforeChange", "off")
        if before_change not in BEFORE_CHANGE_MODES:
            raise errors.CommandError(errors.BAD_VALUE, f"unknown fullDocumentBeforeChange mode {before_change!r}")
        _check_read_concern(command.get("readConcern"))
        pipeline = list(command["pipeline"][1:])
        for stage in pipeline:
            _check_stage(stage)
        split = bool(pipeline) and SPLIT_STAGE in pipeline[-1]
        if any(SPLIT_STAGE in stage for stage in pipeline[:-1]):
            message = f"{SPLIT_STAGE} can only be the final stage in the pipeline"
            raise errors.CommandError(errors.NOT_LAST_STAGE, message)
        if split:
            pipeline = pipeline[:-1]
        self._expire_idle()
        await self._flush()
        position, finished, fragments = self._start_position(spec)
        cursor = Cursor(
            next(self._ids),
            db,
            coll,
            watch_db,
            namespace,
            position,
            mode,
            stages.compile_stages(pipeline),
            finished,
            last_used_s=_now_s(),
            before_change=before_change,
            expanded=spec.get("showExpandedEvents") is True,
            split=split,
            resume_fragments=fragments,
        )
        batch_size = _batch_size(
            command.get("cursor", {}).get("batchSize") if isinstance(command.get("cursor"), dict) else None
        )
        self._cursors[cursor.cursor_id] = cursor
        batch = await self._collect_or_close(cursor, batch_size)
        return self._reply(cursor, batch, "firstBatch")

    async def get_more(
        self, db: str, command: events.Document, checked_out: Callable[[], None] = lambda: None
    ) -> events.Document:
        """``checked_out``: run once the cursor is found (a fail point may fail it there)."""
        cursor_id = command["getMore"]
        cursor = self._cursors.get(cursor_id)
        if cursor is None:
            raise errors.CommandError(errors.CURSOR_NOT_FOUND, f"cursor id {cursor_id} not found")
        cursor.last_used_s = _now_s()
        if command.get("collection") != (cursor.coll or "$cmd.aggregate") or db != cursor.db:
            asked = f"{db}.{command.get('collection')}"
            message = f"requested getMore on namespace {asked}, but cursor belongs to {cursor.namespace}"
            raise errors.CommandError(errors.UNAUTHORIZED, message)
        try:
            checked_out()
        except errors.CommandError:
            self._cursors.pop(cursor.cursor_id, None)  # a getMore that fails takes its cursor with it, as in MongoDB
            raise
        await_ms = command.get("maxTimeMS", DEFAULT_AWAIT_MS)
        deadline = asyncio.get_running_loop().time() + max(0, int(await_ms)) / 1000
        batch_size = _batch_size(command.get("batchSize") or None)  # 0: no limit
        await self._flush()
        batch = await self._collect_or_close(cursor, batch_size)
        while not batch and not cursor.finished:
            remaining_s = deadline - asyncio.get_running_loop().time()
            if remaining_s <= 0:
                break
            await self._history.wait_beyond(cursor.position, remaining_s)
            await self._flush()
            batch = await self._collect_or_close(cursor, batch_size)
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
        # After an invalidate the last token is the invalidate's (for startAfter);
        # within a split event, the last fragment's.
        if batch and (done or cursor.pending):
            token = batch[-1]["_id"]
        else:
            time_ = self._history.time_of(cursor.position)
            token = events.encode_token(self._history.history_id, cursor.position, time_)
        return {
            "cursor": {
                "id": 0 if done else cursor.cursor_id,
                "ns": cursor.namespace,
                key: batch,
                "postBatchResumeToken": token,
            },
            "ok": 1.0,
        }

    def _start_position(self, spec: events.Document) -> tuple[int, bool, tuple[int, int] | None]:
        """Where a new cursor starts: the sequence it reads after, whether it
        is done already, and the fragments of a split event its token has seen."""
        chosen = [k for k in ("resumeAfter", "startAfter", "startAtOperationTime") if spec.get(k) is not None]
        if len(chosen) > 1:
            raise errors.CommandError(
                errors.BAD_VALUE, "only one of resumeAfter, startAfter and startAtOperationTime may be given"
            )
        if not chosen:
            return self._history.head, False, None
        option = chosen[0]
        try:
            if option == "startAtOperationTime":
                ts = spec[option]
                return self._history.sequence_at_time((int(ts.time), int(ts.inc))), False, None
            position = events.decode_token(spec[option])
        except events.TokenError as exc:
            raise self._token_error(exc) from exc
        except history.HistoryLost as exc:
            raise errors.history_lost(str(exc)) from exc
        except AttributeError as exc:
            raise errors.CommandError(errors.TYPE_MISMATCH, "startAtOperationTime must be a Timestamp") from exc
        if position.invalidate and option == "resumeAfter":
            raise errors.CommandError(
                errors.INVALID_RESUME_TOKEN, "cannot resume after an invalidate event; use startAfter"
            )
        if position.history_id != self._history.history_id and position.cluster_time >= self._history.base_time:
            raise _token_not_found(spec[option])  # a time this history covers, but another history's token
        try:
            self._history.check_resumable(position)
        except history.HistoryLost as exc:
            raise errors.history_lost(str(exc)) from exc
        if position.fragment is not None:
            # Inside a split event: read it again, less the fragments seen.
            return position.sequence - 1, False, (position.sequence, position.fragment + 1)
        return position.sequence, False, None

    def _token_error(self, exc: events.TokenError) -> errors.CommandError:
        """A token this server did not issue: if it carries a cluster time (as
        MongoDB's do), MongoDB's answer for a token of that time; otherwise
        the parse error MongoDB gives."""
        if exc.cluster_time is None:
            return errors.CommandError(exc.code, str(exc))
        if exc.cluster_time < self._history.base_time:
            return errors.history_lost(history.HISTORY_LOST_MESSAGE)
        return _token_not_found(None)

    async def _collect_or_close(self, cursor: Cursor, batch_size: int) -> list[events.Document]:
        """The next batch; a failure (the history lost, a pipeline error)
        closes the cursor, as MongoDB kills a cursor whose getMore fails."""
        try:
            return await self._collect(cursor, batch_size)
        except history.HistoryLost as exc:
            self._cursors.pop(cursor.cursor_id, None)
            logger.bind(
                action="change_stream_history_lost",
                cursor_id=cursor.cursor_id,
                namespace=cursor.namespace,
                position=cursor.position,
                oldest_retained=self._history.base + 1,
            ).warning(
                "a change stream fell behind the retained history (raise --history-events to keep more): "
                "its reader gets 286 ChangeStreamHistoryLost and must start over"
            )
            raise errors.history_lost(str(exc)) from exc
        except errors.CommandError:
            self._cursors.pop(cursor.cursor_id, None)
            raise

    async def _collect(self, cursor: Cursor, batch_size: int) -> list[events.Document]:
        batch: list[events.Document] = []
        while cursor.pending and len(batch) < batch_size:
            item = cursor.pending.pop(0)
            batch.append(item)
            if "splitEvent" in item:
                return batch  # a fragment of a large event: one per batch, as 16 MiB allows
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
            if entry.operation in events.EXPANDED_ONLY and not cursor.expanded:
                continue
            event = await self._render(cursor, entry)
            if event is not None:
                fitted = self._fit(cursor, entry, event)
                if not fitted:
                    pass  # resumed after the last fragment of this event
                elif len(fitted) > 1 or "splitEvent" in fitted[0]:
                    batch.append(fitted[0])
                    cursor.pending.extend(fitted[1:])
                    return batch
                else:
                    batch.append(fitted[0])
            if _invalidates(cursor, entry.operation):
                cursor.finished = True
                cursor.pending.append(events.invalidate(entry, self._history.history_id))
                while cursor.pending and len(batch) < batch_size:
                    batch.append(cursor.pending.pop(0))
                break
        return batch

    async def _render(self, cursor: Cursor, entry: events.Entry) -> events.Document | None:
        operation = entry.operation
        full_document = None
        if operation in ("insert", "replace"):
            full_document = entry.full_document
        elif operation == "update" and cursor.full_document == "updateLookup":
            assert entry.document_key is not None
            full_document = await self._lookup(entry.db, entry.coll, entry.document_key)
        elif operation == "update" and cursor.full_document in ("whenAvailable", "required"):
            # The post-image exists where pre- and post-images were recorded for that write.
            full_document = entry.full_document if entry.images else None
        event = events.render(entry, self._history.history_id, full_document=full_document, expanded=cursor.expanded)
        if operation == "update" and full_document is None and cursor.full_document != "default":
            if cursor.full_document == "required":
                raise errors.CommandError(
                    errors.NO_MATCHING_DOCUMENT,
                    "Change stream was configured to require a post-image for all update, delete and replace events, "
                    f"but the post-image was not found for event: {_event_ns(entry)}",
                )
            event["fullDocument"] = None
        if operation in events.PRE_IMAGE_OPERATIONS and cursor.before_change != "off":
            if entry.pre_image is None and cursor.before_change == "required":
                if not entry.images:
                    raise errors.CommandError(
                        errors.PRE_IMAGE_ID_MISSING,
                        "Change stream was configured to require a pre-image for all update, delete and "
                        f"replace events, but pre-image id was not available for event: {_event_ns(entry)}",
                    )
                raise errors.CommandError(
                    errors.NO_MATCHING_DOCUMENT,
                    "Change stream was configured to require a pre-image for all update, delete and replace events, "
                    f"but the pre-image was not found for event: {_event_ns(entry)}",
                )
            event["fullDocumentBeforeChange"] = events.raw(entry.pre_image)
        if cursor.apply is None:
            return event
        token = event["_id"]
        transformed = cursor.apply(event)
        if transformed is not None and transformed.get("_id") != token:
            raise errors.CommandError(
                errors.CHANGE_STREAM_FATAL,
                "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. "
                "Modifying the _id field of an event makes it impossible to resume the stream from that point. "
                "Only transformations that retain the unmodified _id field are allowed.",
            )
        return transformed

    def _fit(self, cursor: Cursor, entry: events.Entry, event: events.Document) -> list[events.Document]:
        """The event, or its fragments, within BSON's size limit (MongoDB:
        BSONObjectTooLarge, unless the stream splits large events)."""
        skip = 0
        if cursor.resume_fragments is not None and cursor.resume_fragments[0] == entry.sequence:
            skip = cursor.resume_fragments[1]
        cursor.resume_fragments = None
        if events.held_bytes(entry) < events.MAX_USER_SIZE // 8 or not events.might_exceed(event):
            return [event]  # (a pipeline cannot make an event 8 times its documents)
        size = events.size_of(event)
        if size <= events.MAX_USER_SIZE:
            return [event]
        if not cursor.split:
            raise errors.CommandError(
                errors.BSON_OBJECT_TOO_LARGE,
                f"BSONObj size: {size} (0x{size:X}) is invalid. Size must be between 0 and 16793600(16MB)",
            )
        try:
            return events.split(event, self._history.history_id, entry, skip)
        except (ValueError, OverflowError) as exc:
            raise errors.CommandError(errors.SPLIT_FAILED, str(exc)) from exc


def _invalidates(cursor: Cursor, operation: str) -> bool:
    """MongoDB ends a collection's stream when the collection is dropped or
    renamed, and a database's stream when the database is dropped; a
    cluster's stream never."""
    if cursor.coll is not None:
        return operation in events.INVALIDATING
    return operation == "dropDatabase" and cursor.watch_db is not None


def _check_read_concern(read_concern: object) -> None:
    """A change stream reads at majority: a client may ask for nothing else."""
    level = read_concern.get("level") if isinstance(read_concern, dict) else None
    if level is not None and level != "majority":
        raise errors.CommandError(
            errors.INVALID_OPTIONS,
            f'Command aggregate does not support {{ readConcern: {{ level: "{level}" }} }} :: caused by :: '
            "Aggregation stage $changeStream cannot run with a readConcern other than 'majority'. "
            f"Current readConcern: {level}",
        )


def _check_stage(stage: object) -> None:
    """MongoDB's checks of a stage after $changeStream: its shape, its name, and
    whether a change stream may run it."""
    if not isinstance(stage, dict) or len(stage) != 1:
        message = "A pipeline stage specification object must contain exactly one field."
        raise errors.CommandError(errors.STAGE_SHAPE, message)
    name = next(iter(stage))
    if name not in KNOWN_STAGES:
        raise errors.CommandError(errors.UNRECOGNIZED_PIPELINE_STAGE, f"Unrecognized pipeline stage name: '{name}'")
    if name not in ALLOWED_STAGES:
        raise errors.CommandError(errors.ILLEGAL_OPERATION, f"{name} is not permitted in a $changeStream pipeline")


def _token_not_found(token: object) -> errors.CommandError:
    shown = f" {token}" if token is not None else ""
    message = f"cannot resume stream; the resume token was not found.{shown}"
    return errors.CommandError(errors.CHANGE_STREAM_FATAL, message)


def _event_ns(entry: events.Entry) -> str:
    return f"{{ns: {{db: {entry.db!r}, coll: {entry.coll!r}}}, operationType: {entry.operation!r}}}"


def _now_s() -> float:
    return asyncio.get_running_loop().time()


def _batch_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_BATCH)
    return DEFAULT_BATCH
