"""Path A (the collection's actual item counts): tolerant of any collection
document, and never counting a consumer's item twice."""

from __future__ import annotations

from typing import Any

import anyio
from bson import ObjectId

from tests.support.backends import Backend
from tests.support.harness import running, settings_for, wait_until
from watcher import Watcher

TOTAL = 4


def job(collection_id: Any, done: int = TOTAL) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "jobType": "collection-scan",
        "status": "InProgress",
        "collectionId": collection_id,
        "stages": {"thumbnail": {"status": "InProgress", "completedItems": done, "totalItems": TOTAL}},
    }


async def test_non_array_collection_fields_never_abort_the_sweep(mongo: Backend) -> None:
    odd_values: list[Any] = ["four", 4, None, {"a": 1}, 4.5]
    collections = [{"_id": ObjectId(), "thumbnails": value} for value in odd_values]
    collections.append({"_id": ObjectId()})  # the field is missing
    good = {"_id": ObjectId(), "thumbnails": list(range(TOTAL))}
    await mongo.db.collections.insert_many([*collections, good])
    jobs = [job(c["_id"]) for c in collections]  # complete by their own counters (path B)
    behind = job(good["_id"], done=1)  # path A has the evidence
    await mongo.db.background_jobs.insert_many([*jobs, behind])
    watcher = Watcher(mongo.client, settings_for(mongo))
    report = await watcher.sweep()  # looks, waits path_a_quiet_s, then sweeps
    assert report.skipped == []
    statuses = {doc["_id"]: doc["status"] async for doc in mongo.db.background_jobs.find({})}
    assert set(statuses.values()) == {"Completed"}
    stored = await mongo.db.background_jobs.find_one({"_id": behind["_id"]})
    assert stored is not None and stored["stages"]["thumbnail"]["completedItems"] == TOTAL


async def test_path_a_leaves_a_counter_that_is_still_moving(mongo: Backend) -> None:
    collection_id = ObjectId()
    await mongo.db.collections.insert_one({"_id": collection_id, "thumbnails": [1, 2]})
    behind = job(collection_id, done=1)
    await mongo.db.background_jobs.insert_one(behind)
    watcher = Watcher(mongo.client, settings_for(mongo, path_a_quiet_s=3600))
    async with running(mongo, path_a_quiet_s=3600) as running_watcher:
        report = await running_watcher.sweep(dry_run=True)  # the service's own sweep: no waiting
        assert report.path_a_waiting == 1 and report.changes == []
    del watcher
    stored = await mongo.db.background_jobs.find_one({"_id": behind["_id"]})
    assert stored is not None and stored["stages"]["thumbnail"]["completedItems"] == 1


async def test_consumers_that_push_then_increment_are_never_counted_twice(mongo: Backend) -> None:
    """Consumers push their item to the collection, then $inc the counter,
    while sweeps run between the two: counters end exactly at the items
    processed (0 overshoot), and every job completes."""
    items, consumers = 12, 6
    collection_ids = [ObjectId() for _ in range(consumers)]
    await mongo.db.collections.insert_many([{"_id": cid, "thumbnails": []} for cid in collection_ids])
    docs = [job(cid, done=0) for cid in collection_ids]
    for doc in docs:
        doc["stages"]["thumbnail"]["totalItems"] = items
    await mongo.db.background_jobs.insert_many(docs)
    overshoot = 0

    async def consumer(job_id: Any, collection_id: Any) -> None:
        for n in range(items):
            await mongo.db.collections.update_one({"_id": collection_id}, {"$push": {"thumbnails": n}})
            await anyio.sleep(0.01)  # the window a sweep may fall into
            await mongo.db.background_jobs.update_one({"_id": job_id}, {"$inc": {"stages.thumbnail.completedItems": 1}})

    async with running(mongo, path_a_quiet_s=0.5, sweep_interval_s=0.05, full_sweep_every=1) as watcher:
        sweeper = Watcher(mongo.client, settings_for(mongo, watcher_name="sweeper", path_a_quiet_s=0.5))

        async def sweep_between(stop: anyio.Event) -> None:
            while not stop.is_set():
                await sweeper.sweep(full=False, settle=False)

        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sweep_between, stop)
            async with anyio.create_task_group() as workers:
                for doc, cid in zip(docs, collection_ids, strict=True):
                    workers.start_soon(consumer, doc["_id"], cid)
            stop.set()

        async def all_done() -> bool:
            return await mongo.db.background_jobs.count_documents({"status": "Completed"}) == consumers

        await wait_until(all_done, what="every job to complete")
        assert watcher.last_sweep is not None
    async for doc in mongo.db.background_jobs.find({}):
        overshoot += doc["stages"]["thumbnail"]["completedItems"] - items
        assert doc["stages"]["thumbnail"]["completedItems"] == items
    print(f"\npath A race: {consumers} consumers x {items} items, sweeps between push and $inc: overshoot {overshoot}")
