"""The sweep without a database: the open jobs come from the in-memory job
store and every write goes through the running dispatcher, as in the service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
from bson import ObjectId

import rules
from tests.support.documents import fresh_job, seed_job
from tests.support.memory import MemoryJobStore
from watcher.decide.coalesce import JobQueue
from watcher.decide.dispatch import Dispatcher
from watcher.intake.counter_watch import CounterWatch
from watcher.intake.sweep import Sweeper
from watcher.ops.metrics import Metrics
from watcher.storage import backoff


@contextlib.asynccontextmanager
async def sweeper(store: MemoryJobStore, *, quiet_s: float = 0.0) -> AsyncIterator[Sweeper]:
    metrics = Metrics()
    dispatcher = Dispatcher(
        store,
        JobQueue(max_jobs=100, progress_interval_s=0),
        metrics,
        workers=2,
        policy=rules.DEFAULT_POLICY,
        retry_backoff=backoff.Backoff(base_s=0.01, max_s=0.02),
    )
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher.run)
            yield Sweeper(
                store,
                metrics,
                policy=rules.DEFAULT_POLICY,
                counters=CounterWatch(quiet_s=quiet_s),
                dispatcher=dispatcher,
            )
            tg.cancel_scope.cancel()


async def test_a_stuck_job_is_completed_and_reported() -> None:
    store = MemoryJobStore()
    store.add(seed_job())
    async with sweeper(store) as sweep:
        report = await sweep.sweep(full=True)
    assert (report.scanned, report.jobs_completed, report.stages_completed) == (1, 1, 2)
    assert store.get(seed_job()["_id"])["status"] == "Completed"


async def test_a_dry_run_says_what_it_would_do_and_writes_nothing() -> None:
    store = MemoryJobStore()
    store.add(seed_job())
    async with sweeper(store) as sweep:
        report = await sweep.sweep(full=True, dry_run=True)
    assert report.jobs_completed == 1 and not report.changes[0].applied
    assert store.writes == []


async def test_only_a_full_sweep_reads_jobs_of_unknown_status() -> None:
    store = MemoryJobStore()
    store.add(seed_job(status="Paused"))
    async with sweeper(store) as sweep:
        assert (await sweep.sweep(full=False)).scanned == 0
        assert (await sweep.sweep(full=True)).jobs_completed == 1


async def test_path_a_raises_counters_that_stood_still_and_waits_for_moving_ones() -> None:
    collection = ObjectId()
    job = fresh_job(3, collectionId=collection)
    store = MemoryJobStore(counts={collection: {"thumbnail": 3, "cache": 3}})
    store.add(job)
    async with sweeper(store, quiet_s=3600) as sweep:
        report = await sweep.sweep(full=True)  # first seen now: not yet known to stand still
        assert report.path_a_waiting == 1 and report.jobs_completed == 0
        assert store.get(job["_id"])["stages"]["cache"]["completedItems"] == 0
    async with sweeper(store, quiet_s=0) as sweep:
        report = await sweep.sweep(full=True)
    assert report.jobs_completed == 1
    assert store.get(job["_id"])["stages"]["cache"]["completedItems"] == 3


class MovingStore(MemoryJobStore):
    """Someone cancels the job between the sweep's read and its write."""

    async def open_jobs(
        self, *, full: bool, job_types: Iterable[str] = (), fields: Iterable[str] = ()
    ) -> AsyncIterator[list[dict[str, Any]]]:
        async for batch in super().open_jobs(full=full, job_types=job_types, fields=fields):
            for doc in batch:
                self.get(doc["_id"])["status"] = "Cancelled"
            yield batch


async def test_a_job_that_moved_since_it_was_read_is_stale_not_overwritten() -> None:
    store = MovingStore()
    store.add(seed_job())
    async with sweeper(store) as sweep:
        report = await sweep.sweep(full=True)
    assert report.stale == 1 and report.jobs_completed == 0
    assert store.get(seed_job()["_id"])["status"] == "Cancelled"
