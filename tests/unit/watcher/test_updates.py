from __future__ import annotations

from typing import Any

import bson
import pytest
from bson import Binary, Code, Decimal128, Int64, Regex

import rules
from rules import AtLeast, Equals, Outcome, StageNames
from tests.support.documents import seed_job
from watcher.decide import updates
from watcher.intake import stream
from watcher.settings import Settings


def _names_are(*names: str) -> dict[str, Any]:
    keys = {"$map": {"input": {"$objectToArray": "$stages"}, "in": "$$this.k"}}
    return {
        "$cond": {
            "if": {"$eq": [{"$type": "$stages"}, "object"]},
            "then": {"$setEquals": [keys, {"$literal": list(names)}]},
            "else": not names,
        }
    }


def test_the_seed_becomes_one_guarded_update_with_server_timestamps() -> None:
    query, update = updates.for_evaluation(rules.evaluate(seed_job()))
    assert query == {
        "_id": {"$eq": "68ebf7fb500d92ef82221ec2"},
        "status": {"$eq": "Pending"},
        "stages.thumbnail.completedItems": {"$gte": 132},
        "stages.thumbnail.status": {"$eq": "InProgress"},
        "stages.thumbnail.totalItems": {"$eq": 132},
        "stages.cache.completedItems": {"$gte": 132},
        "stages.cache.status": {"$eq": "InProgress"},
        "stages.cache.totalItems": {"$eq": 132},
        "$expr": _names_are("thumbnail", "cache"),
        "totalItems": {"$eq": 0},
        "completedItems": {"$eq": 0},
        "progress": {"$eq": 0},
    }
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
    assert query["status"] == {"$eq": None} and query["stages.a.status"] == {"$eq": None}


def test_an_open_job_with_legacy_values_pins_each_by_eq_or_gte() -> None:
    doc = {
        "_id": 7,
        "status": "InProgress",
        "stages": {
            "a": {"status": "InProgress", "completedItems": 10, "totalItems": 10},
            "b": {"status": "Pending", "completedItems": "3", "totalItems": 10.0},
        },
    }
    query, update = updates.for_evaluation(rules.evaluate(doc))
    assert query == {
        "_id": {"$eq": 7},
        "status": {"$eq": "InProgress"},
        "stages.a.completedItems": {"$gte": 10},
        "stages.a.status": {"$eq": "InProgress"},
        "stages.a.totalItems": {"$eq": 10},
        "$expr": _names_are("a", "b"),
        "stages.b.totalItems": {"$eq": 10.0},
        "stages.b.status": {"$eq": "Pending"},
        "stages.b.completedItems": {"$eq": "3"},  # text cannot be $gte'd: pinned as it is
    }
    assert update["$max"] == {"progress": 65, "totalItems": 10, "completedItems": 3, "stages.b.progress": 30}


@pytest.mark.parametrize(
    "stored",
    [Regex("^Pend"), {"$gt": ""}, {"$ne": 1}, Code("return 1"), ["Pending"], 1, True, Binary(b"Pending"), b"Pending"],
    ids=repr,
)
def test_a_status_that_is_not_text_is_rejected_so_no_filter_is_sent(stored: object) -> None:
    doc = seed_job(status=stored)
    result = rules.evaluate(doc)
    assert result.outcome is Outcome.REJECTED and not result.writes and not result.guard
    assert updates.to_update(result.writes) == {}
    stage = seed_job()
    stage["stages"]["cache"]["status"] = stored
    assert rules.evaluate(stage).outcome is Outcome.REJECTED


@pytest.mark.parametrize("stored", [Regex("^Pend"), {"$gt": ""}, {"$in": ["Pending"]}, [1, 2]], ids=repr)
def test_any_pinned_value_is_compared_literally_never_as_an_operator(stored: object) -> None:
    """Defence in depth: even a guard the rules never build today (they reject
    such statuses) goes out as data under ``$eq``."""
    query = updates.to_filter({"$gt": ""}, {"status": Equals(stored), "stages.a.completedItems": AtLeast(3)})
    assert query == {"_id": {"$eq": {"$gt": ""}}, "status": {"$eq": stored}, "stages.a.completedItems": {"$gte": 3}}
    bson.encode(query)


@pytest.mark.parametrize(
    ("value", "pinned"), [(1, 1), (Int64(1), Int64(1)), (1.0, 1.0), (Decimal128("1"), Decimal128("1")), (None, None)]
)
def test_numbers_are_pinned_with_their_stored_bson_type(value: object, pinned: object) -> None:
    # $eq compares numbers across int/long/double/decimal (right for counters),
    # never a number with a boolean or text; null matches missing (read as missing).
    query = updates.to_filter(1, {"totalItems": Equals(value)})
    assert query["totalItems"] == {"$eq": pinned}
    assert type(query["totalItems"]["$eq"]) is type(pinned)


@pytest.mark.parametrize("name", ["$where", "$gt", "a.b", "thumb.nail", "", "nul\x00"])
def test_stage_names_that_are_not_plain_field_names_are_rejected(name: str) -> None:
    doc = {"_id": 1, "status": "Pending", "stages": {name: {"completedItems": 1, "totalItems": 1}}}
    result = rules.evaluate(doc)
    assert result.outcome is Outcome.REJECTED and "cannot be addressed" in (result.rejection or "")


def test_stage_names_with_a_dollar_inside_or_unicode_go_out_as_literal_data() -> None:
    doc = {
        "_id": 1,
        "status": "Pending",
        "stages": {
            "price$": {"completedItems": 1, "totalItems": 1},
            "vignette-é": {"completedItems": 1, "totalItems": 1},
        },
    }
    query, update = updates.for_evaluation(rules.evaluate(doc))
    assert query["$expr"] == _names_are("price$", "vignette-é")
    assert update["$set"]["stages.price$.status"] == "Completed"
    bson.encode(query), bson.encode(update)


def test_stage_set_guard_is_built_from_the_names_only() -> None:
    query = updates.to_filter(1, {"stages": StageNames(("$literal", "a"))})
    assert query["$expr"]["$cond"]["then"]["$setEquals"][1] == {"$literal": ["$literal", "a"]}


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
