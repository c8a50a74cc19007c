from __future__ import annotations

import rules
from tests.support.documents import seed_job
from watcher.intake import stream
from watcher.decide import updates
from watcher.settings import Settings


def test_the_seed_becomes_one_guarded_update_with_server_timestamps() -> None:
    query, update = updates.for_evaluation(rules.evaluate(seed_job()))
    assert query["_id"] == "68ebf7fb500d92ef82221ec2"
    assert query["status"] == "Pending"
    assert query["stages.thumbnail.completedItems"] == {"$gte": 132}
    assert query["stages.thumbnail.status"] == "InProgress"
    assert query["$expr"]["$setEquals"][1] == ["thumbnail", "cache"]
    assert update["$currentDate"] == {
        "stages.thumbnail.completedAt": {"$type": "date"},
        "stages.cache.completedAt": {"$type": "date"},
        "completedAt": {"$type": "date"},
    }
    assert update["$set"]["status"] == "Completed"
    assert "stages.thumbnail.completedItems" not in update["$set"]  # counters are never $set


def test_raised_counters_use_max() -> None:
    doc = seed_job(collectionId="c1")
    doc["stages"]["thumbnail"]["completedItems"] = 100
    result = rules.evaluate(doc, collection_counts={"thumbnail": 132})
    _, update = updates.for_evaluation(result)
    assert update["$max"]["stages.thumbnail.completedItems"] == 132


def test_missing_status_is_matched_as_null_or_missing() -> None:
    doc = {"_id": 1, "stages": {"a": {"completedItems": 1, "totalItems": 1}}}
    query, _ = updates.for_evaluation(rules.evaluate(doc))
    assert query["status"] is None and query["stages.a.status"] is None


def test_stream_pipeline_filters_and_projects_on_the_server() -> None:
    match, project = stream.pipeline(Settings())
    assert set(match["$match"]["operationType"]["$in"]) >= {"insert", "update", "replace", "invalidate"}
    fields = project["$project"]
    assert fields["fullDocument.stages"] == 1 and fields["fullDocument.status"] == 1
    assert "updateDescription" not in fields  # decisions come from the document
    assert "_id" not in fields  # the resume token must pass through untouched


def test_stream_pipeline_with_job_types_still_lets_invalidate_through() -> None:
    match = stream.pipeline(Settings(job_types=("resume-collection",)))[0]["$match"]
    ending, jobs = match["$or"]
    assert "invalidate" in ending["operationType"]["$in"]
    assert jobs["fullDocument.jobType"] == {"$in": ["resume-collection"]}
