"""Back-pressure: a backlog cap of a few positions and a burst far larger.
Handled positions are trimmed as work finishes, so the stream never waits
on the periodic position save; every job completes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from bson import ObjectId

from tests.support.backends import Backend
from tests.support.harness import running, wait_until
from watcher.decide.coalesce import JobQueue

pytestmark = pytest.mark.reliability

JOBS, ITEMS = 8, 25


async def test_a_tiny_backlog_and_a_big_burst_never_stop_the_stream(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    docs: list[dict[str, Any]] = [
        {
            "_id": ObjectId(),
            "status": "Pending",
            "stages": {"a": {"status": "InProgress", "completedItems": 0, "totalItems": ITEMS}},
        }
        for _ in range(JOBS)
    ]
    await jobs.insert_many(docs)
    # One job at a time, ten positions; the position is saved only at stop.
    async with running(mongo, max_pending_jobs=1, position_save_interval_s=3600, workers=1) as watcher:

        async def consumer(job_id: Any) -> None:
            for _ in range(ITEMS):
                await jobs.update_one({"_id": job_id}, {"$inc": {"stages.a.completedItems": 1}})

        async with anyio.create_task_group() as tg:
            for doc in docs:
                tg.start_soon(consumer, doc["_id"])

        async def all_done() -> bool:
            return await jobs.count_documents({"status": "Completed"}) == JOBS

        await wait_until(all_done, what="every job to complete through a full backlog")
        await wait_until(lambda: _ready(watcher), what="readiness once the backlog drained")
    print(
        f"\nback-pressure: {JOBS * ITEMS} increments through a backlog of 1 job / 10 positions: "
        f"{JOBS} of {JOBS} jobs completed"
    )


async def _ready(watcher: Any) -> bool:
    return bool(watcher.ready)


def test_finishing_work_frees_backlog_room_without_a_save() -> None:
    queue = JobQueue(max_jobs=10, progress_interval_s=0, max_tokens=3)
    for n in range(3):
        assert queue.offer("a", {"n": n}, {"_data": n})
    assert not queue.has_room("a") and queue.full
    work = queue.take(0)
    assert work is not None
    queue.finish(work)  # covers all three events: their positions are handled
    assert queue.has_room("a") and not queue.full
    assert queue.advance(0) == {"_data": 2}


def test_a_rate_limited_job_is_not_delayed_when_its_completion_arrives_during_flight() -> None:
    queue = JobQueue(max_jobs=10, progress_interval_s=1.0)
    queue.offer("a", {"progress": 1}, {"_data": 1})
    first = queue.take(0.0)
    assert first is not None
    queue.progress_written("a", 0.0)
    queue.finish(first)
    queue.offer("a", {"progress": 2}, {"_data": 2})
    progress = queue.take(0.1)
    assert progress is not None
    queue.offer("a", {"complete": True}, {"_data": 3})  # the completing event, while in flight
    queue.defer(progress, queue.progress_allowed_at("a", 0.1))  # progress rate-limited until 1.0
    completing = queue.take(0.1)
    assert completing is not None and completing.doc == {"complete": True}  # now, not at 1.0


def test_a_retry_never_postpones_a_job_that_is_ready() -> None:
    queue = JobQueue(max_jobs=10, progress_interval_s=1.0)
    queue.offer("a", {"n": 1}, {"_data": 1})
    work = queue.take(0.0)
    assert work is not None
    queue.defer(work, 1.0)  # progress rate-limited
    assert queue.next_ready_at() == 1.0
    queue.offer("a", {"n": 2}, {"_data": 2})  # news: ready at once
    again = queue.take(0.0)
    assert again is not None and again.doc == {"n": 2}
    queue.retry(again, 0.05)  # the write failed: back off briefly
    assert queue.next_ready_at() == 0.05  # not the stale 1.0
    assert queue.take(0.05) is not None
