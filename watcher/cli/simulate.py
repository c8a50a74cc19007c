"""A load generator that plays the image service's consumers against any MongoDB.

It creates jobs the way the C# service does (PascalCase statuses, stages with
totals, ``collectionId`` set, or null on a share of "legacy" jobs), then
``$inc``s stage counters from concurrent consumers, optionally at a bounded
rate. For jobs with a collection it also ``$push``es the item into the
collection's arrays, and ``lost`` drops a share of the counter increments
(the failure only the sweep's path A can repair).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from watcher.settings import Settings
from watcher.storage import errors


@dataclass(frozen=True)
class Plan:
    jobs: int = 10
    stages: tuple[str, ...] = ("thumbnail", "cache")
    items: int = 132
    consumers: int = 8
    rate: float = 0.0  # increments per second over all consumers; 0 = as fast as possible
    legacy_fraction: float = 0.3
    lost_fraction: float = 0.0
    job_type: str = "resume-collection"
    seed: int | None = None


@dataclass
class Outcome:
    job_ids: list[Any] = field(default_factory=list)
    increments: int = 0
    lost: int = 0
    elapsed_s: float = 0.0
    #: When each job's last counted item was acknowledged (monotonic seconds).
    last_increment_at: dict[Any, float] = field(default_factory=dict)


def new_job(plan: Plan, *, legacy: bool, collection_id: Any) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "jobType": plan.job_type,
        "status": "Pending",
        "progress": 0,
        "totalItems": 0,
        "completedItems": 0,
        "message": "Queued",
        "createdAt": dt.datetime.now(dt.UTC),
        "collectionId": None if legacy else collection_id,
        "stages": {
            stage: {"status": "InProgress", "progress": 0, "totalItems": plan.items, "completedItems": 0} for stage in plan.stages
        },
    }


# The simulator's writes are translated as reads: a refused write is no
# one job's fault here (nothing skips it), so every failure ends the run as
# "MongoDB could not be used", never as a driver traceback.


async def create_jobs(db: AsyncDatabase[Any], settings: Settings, plan: Plan, rng: random.Random) -> list[dict[str, Any]]:
    jobs = []
    for _ in range(plan.jobs):
        legacy = rng.random() < plan.legacy_fraction
        collection_id = None
        if not legacy:
            collection_id = ObjectId()
            arrays: dict[str, list[Any]] = {field: [] for field in settings.stage_arrays.values()}
            with errors.translated("simulate: create a collection", "retry"):
                await db[settings.collections_collection].insert_one({"_id": collection_id, "name": f"sim-{collection_id}", **arrays})
        jobs.append(new_job(plan, legacy=legacy, collection_id=collection_id))
    if jobs:
        with errors.translated("simulate: create the jobs", "retry"):
            await db[settings.jobs_collection].insert_many(jobs)
    return jobs


async def play(
    db: AsyncDatabase[Any], settings: Settings, plan: Plan, *, on_increment: Callable[[int], None] | None = None
) -> Outcome:
    """Create ``plan.jobs`` jobs and process every item of every stage;
    ``on_increment(done)`` is called after every item (it must be cheap)."""
    rng = random.Random(plan.seed)
    jobs = await create_jobs(db, settings, plan, rng)
    work = [(job, stage) for job in jobs for stage in plan.stages for _ in range(plan.items)]
    rng.shuffle(work)
    outcome = Outcome(job_ids=[job["_id"] for job in jobs])
    interval_s = plan.consumers / plan.rate if plan.rate > 0 else 0.0
    queue_send, queue_receive = anyio.create_memory_object_stream[tuple[dict[str, Any], str]](max_buffer_size=len(work) or 1)
    for item in work:
        queue_send.send_nowait(item)
    queue_send.close()
    started = time.monotonic()
    job_coll = db[settings.jobs_collection]
    coll_coll = db[settings.collections_collection]

    async def consumer() -> None:
        async with queue_receive.clone() as items:
            async for job, stage in items:
                tick = time.monotonic()
                if job["collectionId"] is not None and stage in settings.stage_arrays:
                    with errors.translated("simulate: add an item", "retry"):
                        await coll_coll.update_one({"_id": job["collectionId"]}, {"$push": {settings.stage_arrays[stage]: ObjectId()}})
                if rng.random() < plan.lost_fraction:
                    outcome.lost += 1
                else:
                    with errors.translated("simulate: count an item", "retry"):
                        await job_coll.update_one({"_id": job["_id"]}, {"$inc": {f"stages.{stage}.completedItems": 1}})
                    outcome.increments += 1
                    outcome.last_increment_at[job["_id"]] = time.monotonic()
                done = outcome.increments + outcome.lost
                if on_increment is not None:
                    on_increment(done)
                if interval_s:
                    await anyio.sleep(max(interval_s - (time.monotonic() - tick), 0.0))

    async with anyio.create_task_group() as tg:
        for _ in range(max(plan.consumers, 1)):
            tg.start_soon(consumer)
    queue_receive.close()
    outcome.elapsed_s = time.monotonic() - started
    return outcome


async def count_completed(db: AsyncDatabase[Any], settings: Settings, job_ids: Sequence[Any]) -> int:
    with errors.translated("simulate: count completed jobs", "retry"):
        return await db[settings.jobs_collection].count_documents({"_id": {"$in": list(job_ids)}, "status": "Completed"})
