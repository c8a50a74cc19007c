"""The change-stream stages the server evaluates itself follow MongoDB; every
other shape goes to the engine's aggregation. (That the server's own
evaluation matches the engine's byte for byte on hostile job documents and
the watcher's pipeline is jobwatch's test: tests/unit/watcher/test_embedded_stages.py.)"""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import pytest
from mongoeco.core.aggregation import apply_pipeline
from mongoeco.core.codec import DocumentCodec

from jobwatch_embedded import events, hooks, stages

# Shapes the server leaves to the engine: client fields, exclusion, expressions.
ENGINE_ONLY = [
    [{"$match": {"fullDocument.status": "Pending"}}],
    [{"$project": {"fullDocument": 0}}],
    [{"$match": {"operationType": {"$nin": ["delete"]}}}],
    [{"$addFields": {"x": 1}}],
]


def _wire_bytes(document: Any) -> bytes:
    return bson.encode(hooks.to_bson({"d": document}))


def _event(operation: str, document: dict[str, Any] | None) -> events.Document:
    key = bson.encode({"_id": document.get("_id") if document else 1})
    full_document = None if document is None else bson.encode(document)
    entry = events.Entry(
        sequence=7,
        cluster_time=(1_700_000_000, 3),
        wall_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        operation=operation,
        db="db",
        coll="jobs",
        document_key=key,
        full_document=full_document,
        update_description=bson.encode({"updatedFields": {"n": 3}, "removedFields": [], "truncatedArrays": []}),
    )
    return events.render(entry, 99, full_document=full_document)


def _engine_answer(pipeline: list[dict[str, Any]], event: events.Document) -> bytes | None:
    result = apply_pipeline([events.materialize(event)], DocumentCodec.to_internal(pipeline))
    return _wire_bytes(DocumentCodec.to_pymongo(result[0])) if result else None


@pytest.mark.parametrize("pipeline", ENGINE_ONLY)
def test_other_shapes_go_to_the_engine(pipeline: list[dict[str, Any]]) -> None:
    event = _event("update", {"_id": 1, "status": "Pending", "fullDocument": 1})
    assert stages._direct(pipeline[0]) is None
    apply = stages.compile_stages(pipeline)
    assert apply is not None
    got = apply(event)
    expected = _engine_answer(pipeline, event)
    assert (None if got is None else _wire_bytes(got)) == expected


def test_projection_keeps_what_mongodb_keeps() -> None:
    """MongoDB's own projection test (jstests/core/fm3.js): ``{'a.d': 1}`` on
    ``a: [{c: ...}, {d: 2}, 'z']`` gives ``[{}, {d: 2}]``; a sub-document
    with none of the fields stays as ``{}``; arrays inside arrays are entered."""
    apply = stages.compile_stages([{"$project": {"fullDocument.d": 1, "ns.x": 1}}])
    assert apply is not None
    event = {
        "_id": {"_data": "t"},
        "fullDocument": [{"c": {"e": 1, "f": 1}}, {"d": 2}, "z", [{"d": 3, "e": 4}]],
        "ns": {"db": "db"},
    }
    assert apply(event) == {"_id": {"_data": "t"}, "fullDocument": [{}, {"d": 2}, [{"d": 3}]], "ns": {}}
    assert apply({"_id": 1, "fullDocument": 5}) == {"_id": 1}
