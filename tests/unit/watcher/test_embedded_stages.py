"""The embedded server's own evaluation of change-stream stages gives, byte
for byte, what the engine's aggregation gives, on jobwatch's hostile job
documents and for the watcher's own pipeline. (Which shapes go to the
engine, and MongoDB's projection rules, are the embedded server's own
tests: embedded/tests/test_stages.py.)"""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import hostile
from watcher.intake.stream import pipeline as watcher_pipeline
from watcher.settings import Settings

pytest.importorskip("mongoeco")

from jobwatch_embedded import events, hooks, stages  # noqa: E402

OPERATIONS = ["insert", "update", "replace", "delete", "drop", "rename", "dropDatabase"]

MATCHES = [
    {"operationType": {"$in": ["insert", "update", "replace"]}},
    {"operationType": "update"},
    {"ns.coll": "background_jobs"},
    {"ns.db": {"$in": ["db", "other"]}},
    {"$or": [{"operationType": "delete"}, {"ns.coll": {"$in": ["x"]}}]},
    {"$and": [{"operationType": {"$in": ["update"]}}, {"ns.db": "db"}]},
]
PROJECTS = [
    {"operationType": 1, "documentKey": 1, "fullDocument._id": 1, "fullDocument.status": 1, "fullDocument.stages": 1},
    {"fullDocument": True, "ns": 1},
    {"_id": 1, "updateDescription.updatedFields": 1, "fullDocument.progress": 1},
    {"clusterTime": 1, "fullDocument.collectionId": 1, "fullDocument.nothere": 1},
]


def _without_emptied(event: dict[str, Any], project: dict[str, Any]) -> dict[str, Any]:
    """mongoeco drops a sub-document the projection left empty (``fullDocument:
    {}`` when it has none of the listed fields); MongoDB keeps it, and so does
    the server: compare the rest."""
    parents = {path.split(".")[0] for path in project if "." in path}
    return {k: v for k, v in event.items() if not (k in parents and v == {})}


def _wire_bytes(document: Any) -> bytes:
    return bson.encode(hooks.to_bson({"d": document}))


def _event(operation: str, document: dict[str, Any] | None) -> events.Document:
    """An event as the server renders it from its history (documents as BSON)."""
    key = bson.encode({"_id": document.get("_id") if document else 1})
    full_document = None if document is None else bson.encode(document)
    entry = events.Entry(
        sequence=7,
        cluster_time=(1_700_000_000, 3),
        wall_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        operation=operation,
        db="db",
        coll="background_jobs",
        document_key=key,
        full_document=full_document,
        update_description=bson.encode(
            {"updatedFields": {"stages.a.completedItems": 3}, "removedFields": [], "truncatedArrays": []}
        ),
    )
    return events.render(entry, 99, full_document=full_document)


def _engine_answer(pipeline: list[dict[str, Any]], event: events.Document) -> bytes | None:
    from mongoeco.core.aggregation import apply_pipeline
    from mongoeco.core.codec import DocumentCodec

    result = apply_pipeline([events.materialize(event)], DocumentCodec.to_internal(pipeline))
    return _wire_bytes(DocumentCodec.to_pymongo(result[0])) if result else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=st.one_of(st.none(), hostile.storable_job_documents()),
    operation=st.sampled_from(OPERATIONS),
    match=st.one_of(st.none(), st.sampled_from(MATCHES)),
    project=st.one_of(st.none(), st.sampled_from(PROJECTS)),
)
def test_server_stages_agree_with_the_engine(
    doc: dict[str, Any] | None, operation: str, match: dict[str, Any] | None, project: dict[str, Any] | None
) -> None:
    pipeline = ([{"$match": match}] if match else []) + ([{"$project": project}] if project else [])
    apply = stages.compile_stages(pipeline)
    event = _event(operation, doc)
    expected = _engine_answer(pipeline, event) if pipeline else _wire_bytes(event)
    got = event if apply is None else apply(event)
    assert (None if got is None else _wire_bytes(_without_emptied(got, project) if project else got)) == expected


@pytest.mark.parametrize("job_types", [(), ("resize",)])
def test_the_watchers_own_pipeline_agrees(job_types: tuple[str, ...]) -> None:
    pipeline = watcher_pipeline(Settings(uri="mongodb://localhost", job_types=job_types))
    doc = {
        "_id": bson.ObjectId(),
        "jobType": "resize",
        "status": "Pending",
        "stages": {"a": {"totalItems": 2, "completedItems": 1}},
        "extra": [1, 2],
    }
    event = _event("update", doc)
    apply = stages.compile_stages(pipeline)
    assert apply is not None
    got = apply(event)
    assert got is not None and "extra" not in got["fullDocument"]
    assert _wire_bytes(got) == _engine_answer(pipeline, event)
