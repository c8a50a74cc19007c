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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import bson
from bson.raw_bson import RawBSONDocument

Document = dict[str, Any]

Operation = Literal["insert", "update", "replace", "delete", "drop", "rename", "dropDatabase"]
DOCUMENT_OPERATIONS: frozenset[str] = frozenset({"insert", "update", "replace", "delete"})
# Events after which a stream on the namespace cannot continue.
INVALIDATING: frozenset[str] = frozenset({"drop", "rename"})

# A token's _data: history id (16 hex), sequence (16 hex), kind (2 hex).
TOKEN_HEX_LEN = 34
KIND_EVENT = 0
KIND_INVALIDATE = 1


class TokenError(ValueError):
    """A token this server cannot read (not one of its own)."""


@dataclass(frozen=True, slots=True)
class Position:
    history_id: int
    sequence: int
    invalidate: bool = False


def encode_token(history_id: int, sequence: int, *, invalidate: bool = False) -> Document:
    kind = KIND_INVALIDATE if invalidate else KIND_EVENT
    return {"_data": f"{history_id:016x}{sequence:016x}{kind:02x}"}


def decode_token(token: object) -> Position:
    data = token.get("_data") if isinstance(token, Mapping) else None
    if not isinstance(data, str) or len(data) != TOKEN_HEX_LEN:
        raise TokenError("resume token is not one this server issued")
    try:
        history_id, sequence, kind = int(data[:16], 16), int(data[16:32], 16), int(data[32:], 16)
    except ValueError as exc:
        raise TokenError("resume token is not one this server issued") from exc
    return Position(history_id, sequence, invalidate=kind == KIND_INVALIDATE)


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
    """updateDescription from the pre- and post-image of one update.

    Nested documents are compared field by field, so ``$inc`` on ``a.b``
    reports ``{"a.b": new}`` as MongoDB does; a changed array is reported
    whole, or in ``truncatedArrays`` when it only lost its tail. Without a
    pre-image (never seen the document) every field counts as updated.
    """
    updated: Document = {}
    removed: list[str] = []
    truncated: list[Document] = []
    if before is None:
        updated = {k: v for k, v in after.items() if k != "_id"}
    else:
        _diff(before, after, "", updated, removed, truncated)
    return {"updatedFields": updated, "removedFields": removed, "truncatedArrays": truncated}


def _diff(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str, updated: Document, removed: list[str], truncated: list[Document]) -> None:
    for key, new in after.items():
        path = f"{prefix}{key}"
        if key not in before:
            updated[path] = new
            continue
        old = before[key]
        if isinstance(old, dict) and isinstance(new, dict) and list(old) == [k for k in new if k in old]:
            _diff(old, new, f"{path}.", updated, removed, truncated)
        elif isinstance(old, list) and isinstance(new, list) and len(new) < len(old) and _same(old[: len(new)], new):
            truncated.append({"field": path, "newSize": len(new)})
        elif not _same(old, new):
            updated[path] = new
    removed.extend(f"{prefix}{key}" for key in before if key not in after)


def raw(document: bytes | None) -> RawBSONDocument | None:
    return None if document is None else RawBSONDocument(document)


def render(entry: Entry, history_id: int, *, full_document: bytes | None) -> Document:
    """The change event MongoDB would send for ``entry``."""
    from mongoeco._types._bson_values import Timestamp  # the wire layer's type (mongoeco.types re-exports it)

    event: Document = {
        "_id": encode_token(history_id, entry.sequence),
        "operationType": entry.operation,
        "clusterTime": Timestamp(*entry.cluster_time),
        "wallTime": entry.wall_time,
        "ns": {"db": entry.db, "coll": entry.coll} if entry.operation != "dropDatabase" else {"db": entry.db},
    }
    if entry.operation in DOCUMENT_OPERATIONS:
        event["documentKey"] = raw(entry.document_key)
    if entry.operation == "update":
        event["updateDescription"] = raw(entry.update_description)
    if full_document is not None or entry.operation in ("insert", "replace"):
        event["fullDocument"] = raw(full_document)
    if entry.rename_to is not None:
        event["to"] = {"db": entry.rename_to[0], "coll": entry.rename_to[1]}
    return event


def materialize(event: Document) -> Document:
    """The event with its documents in the wire layer's value types."""
    from mongoeco.wire.bson_bridge import decode_wire_value

    return {k: decode_wire_value(bson.decode(v.raw)) if isinstance(v, RawBSONDocument) else v for k, v in event.items()}


def invalidate(entry: Entry, history_id: int) -> Document:
    from mongoeco._types._bson_values import Timestamp  # the wire layer's type (mongoeco.types re-exports it)

    return {
        "_id": encode_token(history_id, entry.sequence, invalidate=True),
        "operationType": "invalidate",
        "clusterTime": Timestamp(*entry.cluster_time),
        "wallTime": entry.wall_time,
    }
