"""Stopping, crashing and restarting: the position is a watermark, and every
job ends right whatever happened while the watcher was down."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pymongo.asynchronous.collection import AsyncCollection

from tests.support.backends import Backend
from tests.support.documents import fresh_job
from tests.support.harness import running, settings_for, wait_until
from tests.support.scripted import ScriptedSource
from watcher import Watcher

ITEMS = 40


def new_job() -> dict[str, Any]:
    return fresh_job(ITEMS)


async def increment(jobs: Any, ids: list[Any], count: int) -> None:
    for _ in range(count):
        for job_id in ids:
            for stage in ("thumbnail", "cache"):
                await jobs.update_one({"_id": job_id}, {"$inc": {f"stages.{stage}.completedItems": 1}})


async def all_completed(jobs: AsyncCollection[dict[str, Any]], ids: list[Any]) -> bool:
    return await jobs.count_documents({"_id": {"$in": ids}, "status": "Completed"}) == len(ids)


async def saved_position(mongo: Backend) -> Any:
    doc = await mongo.db.jobwatch_positions.find_one({"_id": "default"})
    return None if doc is None else doc.get("token")


async def assert_all_done_once(jobs: Any, ids: list[Any]) -> None:
    async for doc in jobs.find({"_id": {"$in": ids}}):
        assert doc["status"] == "Completed", doc
        assert doc["progress"] == 100
        for stage in doc["stages"].values():
            assert stage["status"] == "Completed" and stage["completedItems"] == ITEMS


@pytest.mark.parametrize("how", ["stop", "cancel"])
async def test_restart_mid_burst_resumes_and_every_job_ends_right(mongo: Backend, how: str) -> None:
    jobs = mongo.db.background_jobs
    ids = []
    for _ in range(5):
        job = new_job()
        ids.append(job["_id"])
        await jobs.insert_one(job)
    watcher = Watcher(
        mongo.client, settings_for(mongo, position_save_interval_s=0.05), change_source=mongo.change_source()
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run)
        await watcher.wait_started()
        await increment(jobs, ids, ITEMS // 2)
        await wait_until(lambda: _has_position(mongo), what="a saved position")
        if how == "stop":
            await watcher.stop()
        else:
            tg.cancel_scope.cancel()  # abrupt: no shutdown sequence, no final save
    position_at_stop = await saved_position(mongo)
    assert position_at_stop is not None

    await increment(jobs, ids, ITEMS // 2)  # the rest happens while nobody watches
    assert not await all_completed(jobs, ids)

    source = ScriptedSource(mongo.change_source())
    async with running(mongo, source=source):
        assert source.opened_with[0] == position_at_stop  # resumed from the saved watermark
        await wait_until(lambda: all_completed(jobs, ids), what="every job to complete")
    await assert_all_done_once(jobs, ids)


async def _has_position(mongo: Backend) -> bool:
    return await saved_position(mongo) is not None


async def test_unusable_position_means_sweep_then_stream_from_now(mongo: Backend) -> None:
    """A saved token the server no longer has (here: forged) is history lost:
    the watcher streams from now, sweeps, and carries on; it never dies of it."""
    jobs = mongo.db.background_jobs
    job = new_job()
    for stage in job["stages"].values():
        stage["completedItems"] = ITEMS
    await jobs.insert_one(job)
    async with running(mongo):
        pass
    await mongo.db.jobwatch_positions.update_one({"_id": "default"}, {"$set": {"token": {"_data": "00DEADBEEF"}}})
    source = ScriptedSource(mongo.change_source())
    async with running(mongo, source=source) as watcher:
        assert watcher.streaming
        assert source.opened_with[-1] is None  # from now, after giving up the token
        late = new_job()
        await jobs.insert_one(late)
        await increment(jobs, [late["_id"]], ITEMS)
        await wait_until(lambda: all_completed(jobs, [job["_id"], late["_id"]]), what="both jobs to complete")


async def test_position_is_saved_as_soon_as_the_start_up_sweep_is_done(mongo: Backend) -> None:
    """A watcher killed within its first save interval must still leave a
    position: the stream's opening point is saved once the start-up sweep has
    covered everything before it, not one interval later (here, an hour)."""
    async with running(mongo, position_save_interval_s=3600):
        await wait_until(lambda: _has_position(mongo), what="the position saved after the start-up sweep")


async def test_position_advances_while_one_job_counts_without_pause(mongo: Backend) -> None:
    """A job that never stops moving (every progress write rate-limited, its
    completion far away) must not hold the saved position back for as long
    as it moves: the watermark passes its events once each write is made."""
    jobs = mongo.db.background_jobs
    job = fresh_job(100_000, ("thumbnail",))
    await jobs.insert_one(job)
    saved: list[Any] = []
    async with running(mongo, position_save_interval_s=0.05, progress_interval_s=0.2):

        async def moved_three_times() -> bool:
            await jobs.update_one({"_id": job["_id"]}, {"$inc": {"stages.thumbnail.completedItems": 1}})
            token = await saved_position(mongo)
            if token is not None and (not saved or saved[-1] != token):
                saved.append(token)
            return len(saved) >= 3

        await wait_until(moved_three_times, what="the saved position to move three times under constant increments")
