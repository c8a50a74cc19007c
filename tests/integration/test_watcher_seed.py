"""The seed incident end to end: consumers increment, the watcher completes."""

from __future__ import annotations

from typing import Any

import anyio
from bson import ObjectId

from tests.support.backends import Backend
from tests.support.documents import seed_job
from tests.support.harness import metric, running, settled, wait_until

ITEMS = 132
CONSUMERS = 12


async def play_consumers(
    jobs: Any, job_id: Any, stages: tuple[str, ...], items: int = ITEMS, consumers: int = CONSUMERS
) -> None:
    async def consumer(stage: str, share: int) -> None:
        for _ in range(share):
            await jobs.update_one({"_id": job_id}, {"$inc": {f"stages.{stage}.completedItems": 1}})

    shares = [items // consumers + (1 if i < items % consumers else 0) for i in range(consumers)]
    async with anyio.create_task_group() as tg:
        for stage in stages:
            for share in shares:
                tg.start_soon(consumer, stage, share)


def fresh_seed(**overrides: Any) -> dict[str, Any]:
    doc = seed_job(_id=ObjectId(), **overrides)
    for stage in doc["stages"].values():
        stage["completedItems"] = 0
    return doc


async def test_seed_job_completes_as_consumers_finish(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    doc = fresh_seed()
    await jobs.insert_one(doc)
    async with running(mongo) as watcher:
        await play_consumers(jobs, doc["_id"], ("thumbnail", "cache"))

        async def completed() -> bool:
            stored = await jobs.find_one({"_id": doc["_id"]})
            return stored is not None and stored["status"] == "Completed"

        await wait_until(completed, what="the seed job to complete")
        stored = await jobs.find_one({"_id": doc["_id"]})
        assert stored is not None
        assert stored["progress"] == 100
        assert (stored["totalItems"], stored["completedItems"]) == (ITEMS, ITEMS)
        assert stored["message"] == "All stages completed successfully"
        assert stored["collectionId"] is None
        for stage in stored["stages"].values():
            assert stage["status"] == "Completed"
            assert stage["progress"] == 100
            assert stage["completedItems"] == ITEMS
            assert stage["message"] == f"All {ITEMS} items processed"
            assert stage["completedAt"] is not None
        completed_at = stored["completedAt"]
        assert metric(watcher, "jobwatch_jobs_completed_total", source="stream") == 1

        # Later events (our own write's, a late duplicate $inc) never rewrite completedAt.
        await jobs.update_one({"_id": doc["_id"]}, {"$inc": {"stages.cache.completedItems": 1}})
        await settled(jobs, watcher)
        again = await jobs.find_one({"_id": doc["_id"]})
        assert again is not None and again["completedAt"] == completed_at
