"""Store faults: every driver error class injected on the jobs' updates, on
the sweep's find and getMore, on path A's aggregation and on the position
save, once each and then repeatedly. The loop survives, and every job whose
stages are complete ends Completed once the fault clears."""

from __future__ import annotations

import os
from typing import Any

import anyio
import pytest
from bson import ObjectId
from bson import errors as bson_errors
from pymongo import errors as pe

from tests.support.backends import Backend
from tests.support.faults import Faults, FaultyClient
from tests.support.harness import settings_for, wait_until
from tests.support.scripted import failure
from watcher import Watcher
from watcher.service import ConfigurationProblem

pytestmark = pytest.mark.reliability

FULL = os.environ.get("JOBWATCH_RELIABILITY_FULL") == "1"
REPEATS = 20 if FULL else 4


def write_error(code: int, name: str) -> pe.WriteError:
    return pe.WriteError(name, code, {"code": code, "codeName": name, "errmsg": name})


#: Every driver error class the loop must survive (the fatal ones are below).
SURVIVABLE: list[BaseException] = [
    pe.WriteConcernError("waiting for replication timed out", 64, {"code": 64, "codeName": "WriteConcernFailed"}),
    pe.ExecutionTimeout("operation exceeded time limit", 50, {"code": 50, "codeName": "MaxTimeMSExpired"}),
    failure(11601, "Interrupted"),
    write_error(112, "WriteConflict"),
    pe.CursorNotFound("cursor id not found", 43, {"code": 43, "codeName": "CursorNotFound"}),
    pe.NetworkTimeout("timed out"),
    pe.AutoReconnect("connection reset"),
    pe.NotPrimaryError("not primary", {"ok": 0, "code": 10107, "errmsg": "not primary"}),
    pe.ServerSelectionTimeoutError("no servers found"),
    bson_errors.InvalidBSON("invalid document"),
    pe.InvalidOperation("cannot use a closed cursor"),
    pe.DocumentTooLarge("document too large"),
    write_error(121, "DocumentValidationFailure"),
    failure(99999, "SomethingNew"),
]
TRANSIENT = [
    pe.AutoReconnect("connection reset"),
    pe.NotPrimaryError("not primary", {"ok": 0, "code": 10107}),
    failure(11601, "Interrupted"),
]

OPERATIONS = [
    "background_jobs.update_one",
    "background_jobs.find",
    "background_jobs.getmore",
    "collections.aggregate",
    "jobwatch_positions.update_one",
]


#: A job that stays open (its collection keeps path A busy on every sweep).
STILL_OPEN = "still-open"


def done_job(collection_id: Any = None) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "jobType": "collection-scan",
        "status": "InProgress",
        "collectionId": collection_id,
        "stages": {"thumbnail": {"status": "InProgress", "completedItems": 3, "totalItems": 3}},
    }


async def all_completed(mongo: Backend) -> bool:
    jobs = mongo.db.background_jobs
    return await jobs.count_documents({"status": {"$ne": "Completed"}, "_id": {"$ne": STILL_OPEN}}) == 0


async def run_with_faults(mongo: Backend, faults: Faults, op: str) -> Watcher:
    collection_id = ObjectId()
    await mongo.db.collections.insert_one({"_id": collection_id, "thumbnails": [1, 2, 3]})
    still_open = {
        **done_job(collection_id),
        "_id": STILL_OPEN,
        "stages": {"thumbnail": {"status": "InProgress", "completedItems": 0, "totalItems": 9}},
    }
    await mongo.db.background_jobs.insert_many(
        [done_job(), done_job(collection_id), done_job(), done_job(collection_id), still_open]
    )
    settings = settings_for(mongo, sweep_interval_s=0.3, position_save_interval_s=0.05, full_sweep_every=1)
    watcher = Watcher(FaultyClient(mongo.client, faults), settings, change_source=mongo.change_source())
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run)
        jobs = mongo.db.background_jobs
        # Jobs that complete while the faults strike: the stream's path.
        for _ in range(3):
            job = done_job()
            job["stages"]["thumbnail"]["completedItems"] = 2
            await jobs.insert_one(job)
            await jobs.update_one({"_id": job["_id"]}, {"$inc": {"stages.thumbnail.completedItems": 1}})
        await wait_until(lambda: _all_raised(faults, op), what=f"every planned fault on {op}", deadline_s=60)
        await wait_until(lambda: all_completed(mongo), what="every complete job to end Completed", deadline_s=30)
        assert not watcher.stopping  # it never stopped
        await watcher.stop()
    return watcher


async def _all_raised(faults: Faults, op: str) -> bool:
    faults.calls[op]  # noqa: B018 - touch the counter
    return faults.pending(op) == 0


@pytest.mark.parametrize("op", OPERATIONS)
async def test_every_driver_error_once_then_repeatedly(mongo: Backend, op: str) -> None:
    faults = Faults()
    for exc in SURVIVABLE:
        faults.fail(op, exc)
    for exc in TRANSIENT:
        faults.fail(op, exc, times=REPEATS)
    watcher = await run_with_faults(mongo, faults, op)
    assert faults.raised[op] == len(SURVIVABLE) + len(TRANSIENT) * REPEATS
    errors_counted = sum(
        sample.value
        for metric in watcher.metrics.errors.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    assert errors_counted >= 1
    FIGURES[op] = faults.raised[op]


@pytest.mark.parametrize("op", ["background_jobs.update_one", "background_jobs.find", "jobwatch_positions.update_one"])
async def test_missing_privileges_stop_the_service_with_a_reason(mongo: Backend, op: str) -> None:
    faults = Faults()
    faults.fail_always(op, failure(13, "Unauthorized"))
    await mongo.db.background_jobs.insert_one(done_job())
    settings = settings_for(mongo, position_save_interval_s=0.05)
    watcher = Watcher(FaultyClient(mongo.client, faults), settings, change_source=mongo.change_source())
    with pytest.raises(ConfigurationProblem, match="Unauthorized"), anyio.fail_after(20):
        await watcher.run()


async def test_a_refused_index_is_logged_and_the_sweep_runs_without_it(mongo: Backend) -> None:
    faults = Faults()
    faults.fail_always("background_jobs.create_index", failure(67, "CannotCreateIndex"))
    await mongo.db.background_jobs.insert_one(done_job())
    watcher = Watcher(FaultyClient(mongo.client, faults), settings_for(mongo), change_source=mongo.change_source())
    async with watcher:
        await wait_until(lambda: all_completed(mongo), what="the start-up sweep without its index")
    assert faults.raised["background_jobs.create_index"] == 1


FIGURES: dict[str, int] = {}


def teardown_module() -> None:
    if FIGURES:
        total = sum(FIGURES.values())
        print(
            f"\nstore faults: {total} injected over {len(FIGURES)} operations ({len(SURVIVABLE)} error classes), "
            "loop survived every one"
        )


async def sweep_once_failing_always(
    mongo: Backend, operation: str, error: Exception, expected: type[Exception], match: str | None = None
) -> None:
    """A one-shot sweep of a finished job, with ``operation`` always failing
    with ``error``, raises ``expected`` (within a deadline: it never waits forever)."""
    faults = Faults()
    faults.fail_always(operation, error)
    await mongo.db.background_jobs.insert_one(done_job())
    watcher = Watcher(FaultyClient(mongo.client, faults), settings_for(mongo), change_source=mongo.change_source())
    with pytest.raises(expected, match=match), anyio.fail_after(30):
        await watcher.sweep()


async def test_a_one_shot_sweep_that_cannot_read_says_so_plainly(mongo: Backend) -> None:
    from watcher.storage import errors

    await sweep_once_failing_always(
        mongo, "background_jobs.find", pe.AutoReconnect("connection refused"), errors.StoreUnavailable
    )


async def test_sweep_writes_follow_the_stream_s_write_policy(mongo: Backend) -> None:
    """A sweep's write that fails transiently is retried by the dispatcher
    (not lost, not fatal), and the report still counts it exactly."""
    faults = Faults()
    faults.fail("background_jobs.update_one", pe.AutoReconnect("reset"), times=3)
    await mongo.db.background_jobs.insert_many([done_job() for _ in range(3)])
    watcher = Watcher(FaultyClient(mongo.client, faults), settings_for(mongo), change_source=mongo.change_source())
    report = await watcher.sweep()
    assert report.jobs_completed == 3 and report.stale == 0 and faults.raised["background_jobs.update_one"] == 3
    assert await all_completed(mongo)
    dry = await watcher.sweep(dry_run=True)
    assert dry.scanned == 0 and dry.jobs_completed == 0


async def test_a_one_shot_sweep_without_write_privileges_is_one_configuration_problem(mongo: Backend) -> None:
    await sweep_once_failing_always(
        mongo, "background_jobs.update_one", failure(13, "Unauthorized"), ConfigurationProblem, match="Unauthorized"
    )


async def test_a_one_shot_sweep_whose_writes_keep_failing_gives_up_plainly(mongo: Backend) -> None:
    from watcher.storage import errors

    await sweep_once_failing_always(
        mongo, "background_jobs.update_one", pe.AutoReconnect("connection refused"), errors.StoreUnavailable
    )
