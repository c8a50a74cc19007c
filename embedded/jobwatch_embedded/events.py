"""Change events as MongoDB shapes them: resume tokens, update descriptions,
and the event document a change-stream cursor returns.

The history holds each change's documents as BSON bytes, which the
garbage collector never scans (held as Python dicts, with the engine's own
copies, 20,000 changes made each full collection pause the server for
300-400 ms). Events carry them as ``RawBSONDocument``, written back to the wire
as they are; ``materialize`` gives the wire layer's value types, which the
engine's aggregation needs.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import bson
from bson.raw_bson import RawBSONDocument
from mongoeco import Timestamp  # the wire layer's type, which it writes as a BSON Timestamp

Document = dict[str, Any]

Operation = Literal[
    "insert", "update", "replace", "delete", "drop", "rename", "dropDatabase",
    "create", "createIndexes", "dropIndexes", "modify",
]  # fmt: skip
DOCUMENT_OPERATIONS: frozenset[str] = frozenset({"insert", "update", "replace", "delete"})
# Events after which a stream on the namespace cannot continue.
INVALIDATING: frozenset[str] = frozenset({"drop", "rename"})
# Events a stream reports only with showExpandedEvents (MongoDB 6.0+).
EXPANDED_ONLY: frozenset[str] = frozenset({"create", "createIndexes", "dropIndexes", "modify"})
# Events whose pre-image a stream may ask for (fullDocumentBeforeChange).
PRE_IMAGE_OPERATIONS: frozenset[str] = frozenset({"update", "replace", "delete"})

# A token's _data: MongoDB's leading KeyString byte for a Timestamp (0x82) and
# the event's cluster time (16 hex, big-endian seconds then increment), as in
# MongoDB's tokens, so tokens order by time and a MongoDB token's time can be
# read; then this server's history id (16 hex), sequence (16 hex), kind (2 hex).
TIMESTAMP_KEY = "82"
TOKEN_HEX_LEN = 2 + 16 + 34
# Tokens of earlier versions of this server: no cluster time, the rest alike.
LEGACY_TOKEN_HEX_LEN = 34
KIND_EVENT = 0
KIND_INVALIDATE = 1
KIND_FIRST_FRAGMENT = 2  # fragment k (0-based) of a split event: kind 2 + k
_HEX = re.compile(r"[0-9a-fA-F]*")


class TokenError(ValueError):
    """A token this server cannot read; ``code`` is MongoDB's for the same token."""

    def __init__(self, code: int, message: str, cluster_time: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.cluster_time = cluster_time  # a MongoDB-shaped token's time, when it has one


@dataclass(frozen=True, slots=True)
class Position:
    history_id: int
    sequence: int
    invalidate: bool = False
    cluster_time: tuple[int, int] = (0, 0)
    fragment: int | None = None  # a split event's fragment (0-based) the token is of


def encode_token(
    history_id: int,
    sequence: int,
    cluster_time: tuple[int, int],
    *,
    invalidate: bool = False,
    fragment: int | None = None,
) -> Document:
    kind = KIND_INVALIDATE if invalidate else KIND_EVENT if fragment is None else KIND_FIRST_FRAGMENT + fragment
    seconds, increment = cluster_time
    return {"_data": f"{TIMESTAMP_KEY}{seconds:08x}{increment:08x}{history_id:016x}{sequence:016x}{kind:02x}"}


def decode_token(token: object) -> Position:
    """The position a token names; MongoDB's errors for tokens it would refuse
    (ResumeToken's constructor and getData, src/mongo/db/pipeline/resume_token.cpp)."""
    data = token.get("_data") if isinstance(token, Mapping) else None
    if not isinstance(data, str):
        raise TokenError(40647, f"Bad resume token: _data of missing or of wrong type. Expected string, got {token}")
    type_bits = token.get("_typeBits") if isinstance(token, Mapping) else None
    if type_bits is not None and not isinstance(type_bits, bytes):
        raise TokenError(40648, f"Bad resume token: _typeBits of wrong type {token}")
    if len(data) % 2 or not _HEX.fullmatch(data):
        raise TokenError(9, "resume token string was not a valid hex string")
    if len(data) == LEGACY_TOKEN_HEX_LEN and data[:2] != TIMESTAMP_KEY and int(data[:16], 16) != 0:
        return _position(data, (0, 0))  # saved before an upgrade: still resumable with --data
    if not data or data[:2] == "00":  # MongoDB's KeyString decoder reads a leading 0 as the end: nothing
        raise TokenError(40649, "invalid empty resume token")
    cluster_time = None
    if data[:2] == TIMESTAMP_KEY and len(data) >= 18:
        cluster_time = (int(data[2:10], 16), int(data[10:18], 16))
    if len(data) != TOKEN_HEX_LEN or cluster_time is None:
        raise TokenError(9, "resume token was not issued by this server", cluster_time)
    return _position(data[18:], cluster_time)


def _position(body: str, cluster_time: tuple[int, int]) -> Position:
    """History id (16 hex), sequence (16 hex), kind (2 hex)."""
    history_id, sequence, kind = int(body[:16], 16), int(body[16:32], 16), int(body[32:], 16)
    fragment = kind - KIND_FIRST_FRAGMENT if kind >= KIND_FIRST_FRAGMENT else None
    invalidate = kind == KIND_INVALIDATE
    return Position(history_id, sequence, invalidate=invalidate, cluster_time=cluster_time, fragment=fragment)


@dataclass(frozen=True, slots=True)
class Entry:
    """One retained change, as the history stores and journals it. Documents
    are BSON bytes."""

    sequence: int
    cluster_time: tuple[int, int]  # (seconds, increment): a BSON Timestamp
    wall_time: datetime.datetime
    operation: str
    db: str
    coll: str
    document_key: bytes | None = None
    # Insert/replace: the document; update: the post-image of that write.
    full_document: bytes | None = None
    update_description: bytes | None = None
    rename_to: tuple[str, str] | None = None
    # The collection's UUID (16 bytes), as expanded events report it.
    collection_uuid: bytes | None = None
    # The collection had changeStreamPreAndPostImages on at this write: the
    # pre-image (update, replace, delete) and the post-image are recorded.
    images: bool = False
    pre_image: bytes | None = None
    # Expanded events: operationDescription; updates: disambiguatedPaths (only when not empty).
    description: bytes | None = None
    disambiguated_paths: bytes | None = None

    def in_scope(self, db: str | None, coll: str | None) -> bool:
        return (db is None or self.db == db) and (coll is None or self.coll == coll)


def _same(a: object, b: object) -> bool:
    """BSON equality: 1 and 1.0 differ, key order counts (as MongoDB compares)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def describe_update(before: Document | None, after: Document) -> Document:
    """updateDescription from the pre- and post-image of one update."""
    return describe_update_paths(before, after)[0]


def describe_update_paths(before: Document | None, after: Document) -> tuple[Document, Document]:
    """updateDescription from the pre- and post-image of one update, and its
    ``disambiguatedPaths`` (for streams with showExpandedEvents).

    Fields are compared as MongoDB's document diff does (doc_diff, which
    change streams read back as updateDescription): a changed field inside
    a sub-document is reported by its dotted path (``$inc`` on ``a.b``
    reports ``{"a.b": new}``, as MongoDB does), an array element by its
    index (``a.0.b``; appended elements as ``a.3``), and an array that
    lost its tail in ``truncatedArrays``. At each level, changed fields
    come first, then new ones, then removed ones, then those inside.
    Without a pre-image (never seen the document) every field counts as
    updated. A path is ambiguous, and listed with its parts (array indices
    as ints), when a field name after the first is a number or any field
    name holds a dot.
    """
    diff = _Diff()
    if before is None:
        for key, value in after.items():
            if key != "_id":
                diff.update("", (), False, key, value)
    else:
        diff.document(before, after, "", (), False)
    description = {"updatedFields": diff.updated, "removedFields": diff.removed, "truncatedArrays": diff.truncated}
    return description, diff.disambiguated


_Part = str | int
_Parts = tuple[_Part, ...]


def _ambiguous_name(name: str, *, first: bool) -> bool:
    numeric = not first and name.isdigit() and name.isascii() and (len(name) == 1 or name[0] != "0")
    return numeric or "." in name


class _Diff:
    """Walks two images; a path is its dotted ``prefix`` plus a field, and its
    ``parts`` (for disambiguatedPaths) are built only where they are needed."""

    def __init__(self) -> None:
        self.updated: Document = {}
        self.removed: list[str] = []
        self.truncated: list[Document] = []
        self.disambiguated: Document = {}

    def _path(self, prefix: str, parts: _Parts, ambiguous: bool, part: _Part) -> str:
        path = f"{prefix}{part}"
        if ambiguous or (isinstance(part, str) and _ambiguous_name(part, first=not parts)):
            self.disambiguated[path] = [*parts, part]
        return path

    def update(self, prefix: str, parts: _Parts, ambiguous: bool, part: _Part, value: object) -> None:
        self.updated[self._path(prefix, parts, ambiguous, part)] = value

    def _into(self, prefix: str, parts: _Parts, ambiguous: bool, part: _Part) -> tuple[str, _Parts, bool]:
        inner = ambiguous or (isinstance(part, str) and _ambiguous_name(part, first=not parts))
        return f"{prefix}{part}.", (*parts, part), inner

    def document(
        self, before: Mapping[str, Any], after: Mapping[str, Any], prefix: str, parts: _Parts, ambiguous: bool
    ) -> None:
        inserted: list[str] = []
        nested: list[str] = []
        for key, new in after.items():
            if key not in before:
                inserted.append(key)
                continue
            old = before[key]
            # Sub-documents and arrays are walked (an unchanged one yields
            # nothing), not compared whole first: that would walk them twice.
            if _walkable(old, new):
                nested.append(key)
            elif not _same(old, new):
                self.update(prefix, parts, ambiguous, key, new)
        for key in inserted:
            self.update(prefix, parts, ambiguous, key, after[key])
        for key in before:
            if key not in after:
                self.removed.append(self._path(prefix, parts, ambiguous, key))
        for key in nested:
            old, new = before[key], after[key]
            if isinstance(old, dict):
                self.document(old, new, *self._into(prefix, parts, ambiguous, key))
            else:
                self.array(old, new, *self._into(prefix, parts, ambiguous, key))

    def array(self, before: list[Any], after: list[Any], prefix: str, parts: _Parts, ambiguous: bool) -> None:
        if len(after) < len(before):
            field = prefix[:-1]
            if ambiguous:
                self.disambiguated[field] = list(parts)
            self.truncated.append({"field": field, "newSize": len(after)})
        for index, new in enumerate(after):
            if index >= len(before):
                self.update(prefix, parts, ambiguous, index, new)
                continue
            old = before[index]
            if _walkable(old, new):
                into = self._into(prefix, parts, ambiguous, index)
                if isinstance(old, dict):
                    self.document(old, new, *into)
                else:
                    self.array(old, new, *into)
            elif not _same(old, new):
                self.update(prefix, parts, ambiguous, index, new)


def _walkable(old: Any, new: Any) -> bool:
    """Two values whose change is described field by field: two arrays, or two
    documents whose common fields kept their order (MongoDB replaces a
    document whose fields were reordered)."""
    if isinstance(old, list) and isinstance(new, list):
        return True
    return isinstance(old, dict) and isinstance(new, dict) and list(old) == [k for k in new if k in old]


def raw(document: bytes | None) -> RawBSONDocument | None:
    return None if document is None else RawBSONDocument(document)


def render(entry: Entry, history_id: int, *, full_document: bytes | None, expanded: bool = False) -> Document:
    """The change event MongoDB would send for ``entry`` (``expanded``: to a
    stream with showExpandedEvents)."""
    event: Document = {
        "_id": encode_token(history_id, entry.sequence, entry.cluster_time),
        "operationType": entry.operation,
        "clusterTime": Timestamp(*entry.cluster_time),
        "wallTime": entry.wall_time,
        "ns": {"db": entry.db, "coll": entry.coll} if entry.operation != "dropDatabase" else {"db": entry.db},
    }
    if expanded and entry.collection_uuid is not None:
        event["collectionUUID"] = bson.Binary(entry.collection_uuid, bson.binary.UUID_SUBTYPE)
    if entry.operation in DOCUMENT_OPERATIONS:
        event["documentKey"] = raw(entry.document_key)
    if entry.operation == "update":
        if expanded:
            description = bson.decode(entry.update_description or bson.encode({}))
            paths = entry.disambiguated_paths
            description["disambiguatedPaths"] = bson.decode(paths) if paths is not None else {}
            event["updateDescription"] = description
        else:
            event["updateDescription"] = raw(entry.update_description)
    if full_document is not None or entry.operation in ("insert", "replace"):
        event["fullDocument"] = raw(full_document)
    if entry.rename_to is not None:
        event["to"] = {"db": entry.rename_to[0], "coll": entry.rename_to[1]}
    if expanded and entry.description is not None:
        event["operationDescription"] = raw(entry.description)
    return event


def materialize(event: Document) -> Document:
    """The event with its documents in the wire layer's value types."""
    from jobwatch_embedded import hooks

    return {k: hooks.from_bson(bson.decode(v.raw) if isinstance(v, RawBSONDocument) else v) for k, v in event.items()}


def invalidate(entry: Entry, history_id: int) -> Document:
    return {
        "_id": encode_token(history_id, entry.sequence, entry.cluster_time, invalidate=True),
        "operationType": "invalidate",
        "clusterTime": Timestamp(*entry.cluster_time),
        "wallTime": entry.wall_time,
    }


# -- events beyond BSON's size limit ----------------------------------------------

#: MongoDB's limits: a document a client sends (16 MiB), one the server may
#: build internally (16 MiB + 16 KiB), and a fragment of a split event (room
#: left for the cursor's postBatchResumeToken).
MAX_USER_SIZE = 16 * 1024 * 1024
MAX_INTERNAL_SIZE = MAX_USER_SIZE + 16 * 1024
MAX_FRAGMENT_SIZE = MAX_USER_SIZE - 1024


def _bson_size(document: Document) -> int:
    from jobwatch_embedded import hooks

    return len(bson.encode(hooks.to_bson(document)))


def size_of(event: Document) -> int:
    """An event's BSON size (its ``_id`` counted twice, as MongoDB counts it:
    the cursor's postBatchResumeToken repeats it)."""
    return _bson_size(event) + _bson_size({"_id": event["_id"]}) - 5


def held_bytes(entry: Entry) -> int:
    """The size of the documents a change holds."""
    documents = (entry.full_document, entry.pre_image, entry.update_description)
    return sum(len(document) for document in documents if document is not None)


def might_exceed(event: Document) -> bool:
    """Cheaply: whether an event's documents alone come near the limit (the
    exact size is computed only then)."""
    held = sum(len(value.raw) for value in event.values() if isinstance(value, RawBSONDocument))
    return held > MAX_USER_SIZE - 64 * 1024


def split(event: Document, history_id: int, entry: Entry, skip: int = 0) -> list[Document]:
    """MongoDB's ``$changeStreamSplitLargeEvent`` (change_stream_split_event_helpers.cpp):
    fields by size (then name), the smallest first, as many per fragment as fit;
    each fragment gets its own token and ``splitEvent: {fragment, of}``; the
    first ``skip`` fragments (a client resuming inside the event) are left out."""
    fields = sorted((_bson_size({key: value}) - 5, key) for key, value in event.items() if key != "_id")
    if not fields:
        raise ValueError("Cannot split an empty event or an event containing solely '_id' field")
    fragments: list[Document] = []
    index = 0
    while index < len(fields):
        token = encode_token(history_id, entry.sequence, entry.cluster_time, fragment=len(fragments))
        fragment: Document = {"_id": token, "splitEvent": {"fragment": len(fragments) + 1, "of": 0}}
        size = _bson_size(fragment)
        while True:
            field_size, key = fields[index]
            fragment[key] = event[key]
            size += field_size
            index += 1
            if index >= len(fields) or size + fields[index][0] > MAX_FRAGMENT_SIZE:
                break
        if size > MAX_FRAGMENT_SIZE:
            raise OverflowError(
                f"Splitting change event failed: fragment size {size} is greater than maximum allowed "
                f"fragment size {MAX_FRAGMENT_SIZE}"
            )
        fragments.append(fragment)
    for fragment in fragments:
        fragment["splitEvent"]["of"] = len(fragments)
    return fragments[skip:]
