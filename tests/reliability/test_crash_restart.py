"""Crash and restart: the watcher is cancelled without cleanup at random
points while consumers burst increments; a new watcher takes over each time.
Every job ends right and each completion is written once."""

from __future__ import annotations

import functools
import gc
import os
import random
from typing import Any

import anyio
import pytest

from tests.support.backends import Backend
from tests.support.documents import fresh_job
from tests.support.harness import completions, settings_for, wait_until
from watcher import Watcher

pytestmark = pytest.mark.reliability

FULL = os.environ.get("JOBWATCH_RELIABILITY_FULL") == "1"
TRIALS, JOBS, ITEMS = (50, 200, 4) if FULL else (3, 20, 4)
TRIALS = int(os.environ.get("JOBWATCH_CRASH_TRIALS", TRIALS))  # e.g. a shorter big run
STAGES = ("thumbnail", "cache")


def new_job() -> dict[str, Any]:
    return fresh_job(ITEMS, STAGES, jobType="resume-collection", status="Pending")


def applied_job_completions(watcher: Watcher) -> float:
    return completions(watcher)[0]


# Cancelling a watcher at a random point can cancel PyMongo's async client
# while it opens a connection; the driver then leaves that socket to the
# garbage collector. That is what a crash does; the socket is collected here
# (below), so the warning belongs to this test and says nothing of the watcher.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
async def test_random_crashes_during_bursts_leave_no_job_wrong(mongo: Backend) -> None:
    rng = random.Random(20261201)
    jobs = mongo.db.background_jobs
    wrong = crashes = completions = 0
    try:
        for trial in range(TRIALS):
            docs = [new_job() for _ in range(JOBS)]
            ids = [doc["_id"] for doc in docs]
            await jobs.insert_many(docs)
            watchers: list[Watcher] = []

            async def consumers(ids: list[Any]) -> None:
                async def one(job_id: Any) -> None:
                    for _ in range(ITEMS):
                        for stage in STAGES:
                            await jobs.update_one({"_id": job_id}, {"$inc": {f"stages.{stage}.completedItems": 1}})

                async with anyio.create_task_group() as tg:
                    for job_id in ids:
                        tg.start_soon(one, job_id)

            async with anyio.create_task_group() as burst:
                burst.start_soon(consumers, ids)
                for _ in range(3):
                    watcher = Watcher(
                        mongo.client,
                        settings_for(mongo, position_save_interval_s=0.02, watcher_name=f"t{trial}"),
                        change_source=mongo.change_source(),
                    )
                    watchers.append(watcher)
                    with anyio.move_on_after(rng.uniform(0.05, 0.6)):
                        await watcher.run()  # cancelled mid-flight: no drain, no final save
                    crashes += 1
            final = Watcher(
                mongo.client, settings_for(mongo, watcher_name=f"t{trial}"), change_source=mongo.change_source()
            )
            watchers.append(final)
            async with final:

                async def done(ids: list[Any]) -> bool:
                    return await jobs.count_documents({"_id": {"$in": ids}, "status": "Completed"}) == JOBS

                await wait_until(
                    functools.partial(done, ids), what=f"trial {trial}: every job completed", deadline_s=60
                )
            async for doc in jobs.find({"_id": {"$in": ids}}):
                ok = doc["status"] == "Completed" and doc["progress"] == 100 and doc.get("completedAt") is not None
                ok = ok and all(
                    s["status"] == "Completed" and s["completedItems"] == ITEMS for s in doc["stages"].values()
                )
                wrong += not ok
            trial_completions = sum(applied_job_completions(w) for w in watchers)
            assert trial_completions <= JOBS  # a completion is never written twice
            completions += int(trial_completions)
    finally:
        gc.collect()  # sockets abandoned by cancelled connects, collected while this test's filters hold
    print(
        f"\ncrash/restart: {TRIALS} trials x {JOBS} jobs, {crashes} abrupt cancels: {wrong} jobs wrong, "
        f"{completions} completions acknowledged, none twice"
    )
    assert wrong == 0
