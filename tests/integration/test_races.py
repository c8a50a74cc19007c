"""Duplicate delivery, two watchers at once, a sweep racing the stream, and
consumer increments racing watcher writes: the same final documents as one
watcher, completedAt written once."""

from __future__ import annotations

from typing import Any

import anyio
from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection

from tests.support.backends import Backend
from tests.support.harness import completions, metric, running, settings_for, settled, wait_until
from tests.support.scripted import ScriptedSource
from watcher import Watcher

ITEMS = 30
JOBS = 6


def new_jobs() -> list[dict[str, Any]]:
    return [
        {
            "_id": ObjectId(),
            "jobType": "resume-collection",
            "status": "Pending",
            "collectionId": None,
            "stages": {
                s: {"status": "InProgress", "completedItems": 0, "totalItems": ITEMS} for s in ("thumbnail", "cache")
            },
        }
        for _ in range(JOBS)
    ]


async def insert_jobs(mongo: Backend) -> tuple[Any, list[Any]]:
    jobs = mongo.db.background_jobs
    docs = new_jobs()
    await jobs.insert_many(docs)
    return jobs, [d["_id"] for d in docs]


async def consumers(jobs: Any, ids: list[Any]) -> None:
    async def one(job_id: Any, stage: str) -> None:
        for _ in range(ITEMS):
            await jobs.update_one({"_id": job_id}, {"$inc": {f"stages.{stage}.completedItems": 1}})

    async with anyio.create_task_group() as tg:
        for job_id in ids:
            for stage in ("thumbnail", "cache"):
                tg.start_soon(one, job_id, stage)


async def finished(jobs: AsyncCollection[dict[str, Any]], ids: list[Any]) -> bool:
    return await jobs.count_documents({"_id": {"$in": ids}, "status": "Completed"}) == len(ids)


async def final_state(jobs: Any, ids: list[Any]) -> list[dict[str, Any]]:
    docs = [doc async for doc in jobs.find({"_id": {"$in": ids}}).sort("_id")]
    for doc in docs:
        doc.pop("_id")
        doc.pop("completedAt")
        for stage in doc["stages"].values():
            stage.pop("completedAt")
    return docs


EXPECTED = {
    "jobType": "resume-collection",
    "status": "Completed",
    "collectionId": None,
    "progress": 100,
    "totalItems": ITEMS,
    "completedItems": ITEMS,
    "message": "All stages completed successfully",
    "stages": {
        s: {
            "status": "Completed",
            "completedItems": ITEMS,
            "totalItems": ITEMS,
            "progress": 100,
            "message": f"All {ITEMS} items processed",
        }
        for s in ("thumbnail", "cache")
    },
}


async def test_duplicate_delivery_changes_nothing(mongo: Backend) -> None:
    jobs, ids = await insert_jobs(mongo)
    async with running(mongo, source=ScriptedSource(mongo.change_source(), duplicate=True)) as watcher:
        await consumers(jobs, ids)
        await wait_until(lambda: finished(jobs, ids), what="all jobs completed")
        await settled(jobs, watcher)  # the duplicates of the last events too
        assert completions(watcher) == (JOBS, 2 * JOBS)
    assert await final_state(jobs, ids) == [EXPECTED] * JOBS


async def test_two_watchers_at_once_write_each_completion_once(mongo: Backend) -> None:
    jobs, ids = await insert_jobs(mongo)
    first = Watcher(mongo.client, settings_for(mongo, watcher_name="a"), change_source=mongo.change_source())
    second = Watcher(mongo.client, settings_for(mongo, watcher_name="b"), change_source=mongo.change_source())
    async with first, second:
        await consumers(jobs, ids)
        await wait_until(lambda: finished(jobs, ids), what="all jobs completed")
        await settled(jobs, first, second)
    assert completions(first, second) == (JOBS, 2 * JOBS)
    assert await final_state(jobs, ids) == [EXPECTED] * JOBS


async def test_sweeps_racing_the_stream(mongo: Backend) -> None:
    jobs, ids = await insert_jobs(mongo)
    async with running(mongo) as watcher:
        sweeper = Watcher(mongo.client, settings_for(mongo, watcher_name="sweeper"))
        async with anyio.create_task_group() as tg:

            async def sweep_repeatedly() -> None:
                while not await finished(jobs, ids):
                    await sweeper.sweep(full=False)

            tg.start_soon(sweep_repeatedly)
            await consumers(jobs, ids)
        await wait_until(lambda: finished(jobs, ids), what="all jobs completed")
        await settled(jobs, watcher)
        assert completions(watcher, sweeper) == (JOBS, 2 * JOBS)
    assert await final_state(jobs, ids) == [EXPECTED] * JOBS


async def test_no_consumer_increment_is_lost_to_a_watcher_write(mongo: Backend) -> None:
    """Progress writes land between increments all the time; counters must
    still add up exactly (the watcher never $sets a counter)."""
    jobs, ids = await insert_jobs(mongo)
    async with running(mongo, progress_interval_s=0.0) as watcher:
        await consumers(jobs, ids)
        await wait_until(lambda: finished(jobs, ids), what="all jobs completed")
        assert metric(watcher, "jobwatch_writes_total", source="stream", kind="progress", result="applied") > 0
    async for doc in jobs.find({"_id": {"$in": ids}}):
        assert [s["completedItems"] for s in doc["stages"].values()] == [ITEMS, ITEMS]
