"""What the hot path costs, counted with a PyMongo command listener on the
watcher's own client: one update per completing evaluation, no reads, and no
writes for evaluations that change nothing."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from tests.support.backends import Backend
from tests.support.documents import seed_job
from tests.support.harness import CommandLog, metric, running, settled, wait_until
from watcher import Watcher

JOBS = "background_jobs"


async def test_hot_path_round_trips(mongo: Backend) -> None:
    log = CommandLog()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.uri, event_listeners=[log])
    jobs = mongo.db[JOBS]
    doc = seed_job()
    for stage in doc["stages"].values():
        stage["completedItems"] = 131
    try:
        async with running(mongo, client=client, position_save_interval_s=3600, progress_interval_s=3600) as watcher:
            await jobs.insert_one(doc)
            await wait_until(lambda: _evaluated(watcher, 1), what="the insert to be evaluated")
            log.clear()

            # A no-op change: evaluated, nothing written.
            await jobs.update_one({"_id": doc["_id"]}, {"$set": {"note": "unrelated"}})
            await wait_until(lambda: _evaluated(watcher, 2), what="the no-op to be evaluated")
            await settled(jobs, watcher)
            assert log.named("update", "findAndModify", collection=JOBS) == []

            # One stage completes: one update.
            await jobs.update_one({"_id": doc["_id"]}, {"$inc": {"stages.thumbnail.completedItems": 1}})
            await wait_until(lambda: _applied(watcher, "stage", 1), what="the stage completion")
            # The last stage completes the job: stage and job in the same single update.
            await jobs.update_one({"_id": doc["_id"]}, {"$inc": {"stages.cache.completedItems": 1}})
            await wait_until(lambda: _applied(watcher, "job", 1), what="the job completion")
            await settled(jobs, watcher)  # the watcher's own writes come back as events

            updates = log.named("update", collection=JOBS)
            assert len(updates) == 2, updates
            assert "stages.cache.status" in updates[1]["updates"][0]["u"]["$set"]
            assert updates[1]["updates"][0]["u"]["$set"]["status"] == "Completed"
            assert log.named("find", "aggregate", "count", collection=JOBS) == []  # no reads on the hot path
    finally:
        await client.close()


async def _evaluated(watcher: Watcher, count: int) -> bool:
    total = sum(
        sample.value
        for family in watcher.metrics.evaluations.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["source"] == "stream"
    )
    return total >= count


async def _applied(watcher: Any, kind: str, count: int) -> bool:
    return metric(watcher, "jobwatch_writes_total", source="stream", kind=kind, result="applied") >= count
