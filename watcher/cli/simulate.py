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
    #: Jobs receiving increments at once (0: all of them); a finished job's slot
    #: goes to a new one, so a long run keeps a steady number of jobs in progress.
    active: int = 0
    #: ``$push`` each item into the job's collection document too, as the image
    #: service does (path A's evidence); False: only the counters move.
    push_items: bool = True

    @property
    def increments(self) -> int:
        """Items over all jobs and stages (counted or lost)."""
        return self.jobs * len(self.stages) * self.items


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
            stage: {"status": "InProgress", "progress": 0, "totalItems": plan.items, "completedItems": 0}
            for stage in plan.stages
        },
    }


# The simulator's writes are translated as reads: a refused write is no
# one job's fault here (nothing skips it), so every failure ends the run as
# "MongoDB could not be used", never as a driver traceback.


async def create_jobs(
    db: AsyncDatabase[Any], settings: Settings, plan: Plan, rng: random.Random, count: int | None = None
) -> list[dict[str, Any]]:
    """``count`` new jobs (default ``plan.jobs``), inserted at once."""
    jobs = []
    for _ in range(plan.jobs if count is None else count):
        legacy = rng.random() < plan.legacy_fraction
        collection_id = None
        if not legacy:
            collection_id = ObjectId()
            arrays: dict[str, list[Any]] = {field: [] for field in settings.stage_arrays.values()}
            with errors.translated("simulate: create a collection", "retry"):
                await db[settings.collections_collection].insert_one(
                    {"_id": collection_id, "name": f"sim-{collection_id}", **arrays}
                )
        jobs.append(new_job(plan, legacy=legacy, collection_id=collection_id))
    if jobs:
        with errors.translated("simulate: create the jobs", "retry"):
            await db[settings.jobs_collection].insert_many(jobs)
    return jobs


async def play(
    db: AsyncDatabase[Any],
    settings: Settings,
    plan: Plan,
    *,
    on_increment: Callable[[int], None] | None = None,
    outcome: Outcome | None = None,
    progress_every: int = 1,
) -> Outcome:
    """Create the plan's jobs and process every item of every stage; returns
    once every item is acknowledged. ``outcome`` (optional) is filled as the
    load runs; ``on_increment(done)`` is called every ``progress_every`` items (every
    item by default: it must be cheap).

    One producer hands items to ``consumers`` concurrent consumers, pacing
    them on one schedule (item ``n`` no earlier than ``n / rate`` seconds in,
    so a slow moment is caught up, not lost), round-robin over the active
    jobs, each job's items in random order. The clock starts once the first
    active jobs exist."""
    rng = random.Random(plan.seed)
    outcome = outcome if outcome is not None else Outcome()
    job_coll = db[settings.jobs_collection]
    coll_coll = db[settings.collections_collection]

    def work_of(jobs: list[dict[str, Any]]) -> list[list[tuple[dict[str, Any], str]]]:
        active = []
        for job in jobs:
            outcome.job_ids.append(job["_id"])
            items = [(job, stage) for stage in plan.stages for _ in range(plan.items)]
            rng.shuffle(items)
            active.append(items)
        return active

    async def consumer() -> None:
        async with receive.clone() as items:
            async for job, stage in items:
                if plan.push_items and job["collectionId"] is not None and stage in settings.stage_arrays:
                    with errors.translated("simulate: add an item", "retry"):
                        await coll_coll.update_one(
                            {"_id": job["collectionId"]}, {"$push": {settings.stage_arrays[stage]: ObjectId()}}
                        )
                if rng.random() < plan.lost_fraction:
                    outcome.lost += 1
                else:
                    with errors.translated("simulate: count an item", "retry"):
                        await job_coll.update_one({"_id": job["_id"]}, {"$inc": {f"stages.{stage}.completedItems": 1}})
                    outcome.increments += 1
                    outcome.last_increment_at[job["_id"]] = time.monotonic()
                done = outcome.increments + outcome.lost
                if on_increment is not None and done % progress_every == 0:
                    on_increment(done)

    window = min(plan.active or plan.jobs, plan.jobs)
    active = work_of(await create_jobs(db, settings, plan, rng, window))
    created = window
    Item = tuple[dict[str, Any], str]
    send, receive = anyio.create_memory_object_stream[Item](max_buffer_size=max(plan.consumers, 1) * 2)
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(max(plan.consumers, 1)):
            tg.start_soon(consumer)
        async with send:
            sent = slot = 0
            while active:
                if plan.rate > 0:
                    ahead_s = started + sent / plan.rate - time.monotonic()
                    if ahead_s > 0.001:
                        await anyio.sleep(ahead_s)
                slot %= len(active)
                work = active[slot]
                await send.send(work.pop())
                sent += 1
                if not work:
                    if created < plan.jobs:
                        active[slot] = work_of(await create_jobs(db, settings, plan, rng, 1))[0]
                        created += 1
                    else:
                        active.pop(slot)
                        continue
                slot += 1
        receive.close()
    outcome.elapsed_s = time.monotonic() - started
    return outcome


async def count_completed(db: AsyncDatabase[Any], settings: Settings, job_ids: Sequence[Any]) -> int:
    with errors.translated("simulate: count completed jobs", "retry"):
        return await db[settings.jobs_collection].count_documents(
            {"_id": {"$in": list(job_ids)}, "status": "Completed"}
        )
