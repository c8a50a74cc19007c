"""The sweep: legacy stuck jobs, path A, dry runs, the sweep's index."""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId

from tests.conftest import embedded_differs
from tests.support.backends import Backend
from tests.support.documents import seed_job
from tests.support.harness import running, settings_for, wait_until
from watcher import Watcher
from watcher.storage.store import SWEEP_INDEX


def collection_job(collection_id: Any, done: int, total: int = 132) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "jobType": "collection-scan",
        "status": "InProgress",
        "collectionId": collection_id,
        "stages": {
            "scan": {"status": "Completed", "completedItems": total, "totalItems": total},
            "thumbnail": {"status": "InProgress", "completedItems": done, "totalItems": total},
            "cache": {"status": "InProgress", "completedItems": done, "totalItems": total},
        },
    }


async def test_legacy_stuck_job_is_completed_by_the_start_up_sweep(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    await jobs.insert_one(seed_job())  # exactly the incident: 132/132, Pending, collectionId null
    async with running(mongo) as watcher:
        stored = await jobs.find_one({"_id": seed_job()["_id"]})
        assert stored is not None and stored["status"] == "Completed"
        assert (stored["totalItems"], stored["completedItems"], stored["progress"]) == (132, 132, 100)
        assert watcher.last_sweep is not None and watcher.last_sweep.jobs_completed == 1


async def test_path_a_completes_a_job_whose_consumer_lost_increments(mongo: Backend) -> None:
    collection_id = ObjectId()
    await mongo.db.collections.insert_one(
        {"_id": collection_id, "thumbnails": list(range(132)), "cacheImages": list(range(132))}
    )
    job = collection_job(collection_id, done=120)
    await mongo.db.background_jobs.insert_one(job)
    watcher = Watcher(mongo.client, settings_for(mongo), change_source=mongo.change_source())
    report = await watcher.sweep()
    stored = await mongo.db.background_jobs.find_one({"_id": job["_id"]})
    assert stored is not None
    assert stored["stages"]["thumbnail"]["completedItems"] == 132  # raised with $max
    assert stored["status"] == "Completed"
    assert report.jobs_completed == 1 and report.stages_completed == 2


async def test_path_a_never_lowers_counters(mongo: Backend) -> None:
    collection_id = ObjectId()
    await mongo.db.collections.insert_one({"_id": collection_id, "thumbnails": [1, 2], "cacheImages": []})
    job = collection_job(collection_id, done=50)
    await mongo.db.background_jobs.insert_one(job)
    await Watcher(mongo.client, settings_for(mongo)).sweep()
    stored = await mongo.db.background_jobs.find_one({"_id": job["_id"]})
    assert stored is not None
    assert stored["stages"]["thumbnail"]["completedItems"] == 50
    assert stored["status"] == "InProgress"


async def test_dry_run_reports_and_writes_nothing(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    await jobs.insert_one(seed_job())
    before = await jobs.find_one({})
    report = await Watcher(mongo.client, settings_for(mongo)).sweep(dry_run=True)
    assert report.jobs_completed == 1 and report.changes[0].applied is False
    assert await jobs.find_one({}) == before


async def test_sweep_covers_every_type_odd_statuses_and_skips_bad_documents(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    done = {"a": {"status": "InProgress", "completedItems": 3, "totalItems": 3}}
    await jobs.insert_many(
        [
            {"_id": "other-type", "jobType": "thumbnail-rebuild", "status": "Pending", "stages": done},
            {"_id": "no-status", "jobType": "resume-collection", "stages": done},
            {"_id": "odd-status", "status": "Queued", "stages": done},
            {"_id": "variant", "status": "inprogress", "stages": done},
            {"_id": "bad", "status": "Pending", "stages": {"a": {"completedItems": "lots", "totalItems": 3}}},
            {"_id": "failed", "status": "Failed", "stages": done},
        ]
    )
    report = await Watcher(mongo.client, settings_for(mongo)).sweep()
    statuses = {doc["_id"]: doc.get("status") async for doc in jobs.find({})}
    assert statuses == {
        "other-type": "Completed",
        "no-status": "Completed",
        "odd-status": "Completed",
        "variant": "Completed",
        "bad": "Pending",
        "failed": "Failed",
    }
    assert [job_id for job_id, _ in report.skipped] == ["bad"]
    assert "completedItems" in report.skipped[0][1]


async def test_job_type_filter_narrows_an_on_demand_sweep(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    done = {"a": {"completedItems": 1, "totalItems": 1}}
    await jobs.insert_many(
        [
            {"_id": 1, "jobType": "x", "status": "Pending", "stages": done},
            {"_id": 2, "jobType": "y", "status": "Pending", "stages": done},
        ]
    )
    report = await Watcher(mongo.client, settings_for(mongo)).sweep(job_types=["x"])
    assert report.scanned == 1
    assert (await jobs.find_one({"_id": 2}) or {})["status"] == "Pending"


async def test_start_up_creates_the_sweep_index_without_a_partial_filter(mongo: Backend) -> None:
    # A plain index: MongoDB 5.0 rejects $in in a partial filter expression.
    async with running(mongo):
        indexes = await mongo.db.background_jobs.index_information()
    assert SWEEP_INDEX in indexes
    assert [tuple(key) for key in indexes[SWEEP_INDEX]["key"]] == [("status", 1), ("jobType", 1)]
    assert "partialFilterExpression" not in indexes[SWEEP_INDEX]


async def test_odd_shapes_never_stop_the_sweep_or_the_stream(mongo: Backend) -> None:
    from bson import Decimal128, Int64

    jobs = mongo.db.background_jobs
    done = {"status": "InProgress", "completedItems": 2, "totalItems": 2}
    odd: list[dict[str, Any]] = [
        {"_id": {"legacy": 1}, "status": "Pending", "stages": {"a": done}},
        {"_id": "missing-collection", "status": "Pending", "collectionId": "no-such", "stages": {"thumbnail": done}},
        {
            "_id": "decimal",
            "status": "Pending",
            "stages": {"a": {"completedItems": Decimal128("2"), "totalItems": Int64(2)}},
        },
        {"_id": "null-stage", "status": "Pending", "stages": {"a": None}},
        {"_id": "list-stages", "status": "Pending", "stages": [done]},
        {"_id": "no-stages", "status": "Pending"},
        {"_id": "number-status", "status": 3, "stages": {"a": done}},
    ]
    await jobs.insert_many(odd)
    async with running(mongo) as watcher:
        report = watcher.last_sweep
        assert report is not None
        assert sorted(str(job_id) for job_id, _ in report.skipped) == ["list-stages", "null-stage", "number-status"]
        await jobs.insert_one({"_id": "late-bad", "status": "Pending", "stages": {"a": {"completedItems": "x"}}})
        await jobs.insert_one({"_id": "late-good", "status": "Pending", "stages": {"a": done}})

        async def late_done() -> bool:
            return await jobs.count_documents({"_id": "late-good", "status": "Completed"}) == 1

        await wait_until(late_done, what="a good job after a bad one")
    statuses = {str(doc["_id"]): doc.get("status") async for doc in jobs.find({})}
    assert statuses["{'legacy': 1}"] == "Completed"
    assert statuses["missing-collection"] == "Completed"  # no collection document: path B
    assert statuses["decimal"] == "Completed"
    assert statuses["number-status"] == 3  # a status that is not text (an enum ordinal?) is never overwritten
    assert (
        statuses["no-stages"] == statuses["null-stage"] == statuses["list-stages"] == statuses["late-bad"] == "Pending"
    )


@embedded_differs(
    "the embedded engine's wire proxy decodes documents in Python itself and refuses to store a date beyond year 9999"
)
async def test_a_document_the_driver_cannot_decode_costs_one_job(mongo: Backend) -> None:
    from bson.datetime_ms import DatetimeMS

    if mongo.is_embedded:
        pytest.skip("the embedded engine cannot store a date beyond year 9999 (MongoDB can)")

    jobs = mongo.db.background_jobs
    done = {"status": "InProgress", "completedItems": 2, "totalItems": 2}
    beyond_year_9999 = DatetimeMS(2**62)  # stored fine, but Python's datetime cannot hold it
    await jobs.insert_many(
        [
            {"_id": "undecodable", "status": "Pending", "stages": {"a": {**done, "startedAt": beyond_year_9999}}},
            {"_id": "good", "status": "Pending", "stages": {"a": done}},
        ]
    )
    report = await Watcher(mongo.client, settings_for(mongo)).sweep()
    assert [job_id for job_id, _ in report.skipped] == ["undecodable"]
    assert "undecodable document" in report.skipped[0][1]
    assert (await jobs.find_one({"_id": "good"}) or {})["status"] == "Completed"
