"""Proves the MongoDB fixture layer: a real PyMongo client, concurrent writers,
and change events, on whichever backend the session resolved."""

from __future__ import annotations

import anyio

from tests.support.backends import Backend
from tests.support.documents import seed_job

CONSUMERS = 24
ITEMS = 132


async def test_concurrent_increments_on_the_seed_job_read_back_exactly(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    doc = seed_job()
    for stage in doc["stages"].values():
        stage["completedItems"] = 0
    await jobs.insert_one(doc)

    async def consumer(stage: str, share: int) -> None:
        for _ in range(share):
            await jobs.update_one({"_id": doc["_id"]}, {"$inc": {f"stages.{stage}.completedItems": 1}})

    shares = [ITEMS // CONSUMERS + (1 if i < ITEMS % CONSUMERS else 0) for i in range(CONSUMERS)]
    async with anyio.create_task_group() as tg:
        for stage in ("thumbnail", "cache"):
            for share in shares:
                tg.start_soon(consumer, stage, share)

    stored = await jobs.find_one({"_id": doc["_id"]})
    assert stored is not None
    assert stored["stages"]["thumbnail"]["completedItems"] == ITEMS
    assert stored["stages"]["cache"]["completedItems"] == ITEMS
    assert stored["status"] == "Pending" and stored["collectionId"] is None


async def test_change_events_reach_the_change_source(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    stream = await mongo.change_source().open([], resume_after=None, max_await_ms=200)
    try:
        await jobs.insert_one({"_id": "j1", "status": "Pending"})
        await jobs.update_one({"_id": "j1"}, {"$set": {"status": "InProgress"}})
        seen: list[tuple[str, str]] = []
        with anyio.fail_after(10):
            while len(seen) < 2:
                for event in await stream.next_batch():
                    seen.append((event["operationType"], event["fullDocument"]["status"]))
        assert seen == [("insert", "Pending"), ("update", "InProgress")]
        assert stream.resume_token is not None
    finally:
        await stream.close()
