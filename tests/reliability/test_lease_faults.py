"""Lease faults: every driver error class a lease call can meet (network,
not primary, write concern, timeouts, shutdowns, unknown server errors),
and calls that never answer, injected on each call of the lease loop: the
take (``findAndModify``), the renewal, heartbeats and fenced saves
(``update``), the instance list (``aggregate``). The service never dies of
it, never waits forever, holds the partition again once the fault clears,
and every complete job ends Completed; missing privileges stop it with a
reason (exit 2)."""

from __future__ import annotations

import os

import anyio
import pytest
from bson import ObjectId
from pymongo import errors as pe

from tests.support.backends import Backend
from tests.support.documents import seed_job
from tests.support.faults import Faults, FaultyClient
from tests.support.harness import settings_for, wait_until
from tests.support.scripted import failure
from watcher import Watcher
from watcher.service import ConfigurationProblem

pytestmark = pytest.mark.reliability

FAST = {"lease_s": 1.5, "renew_s": 0.25, "position_save_interval_s": 0.1}
LEASE_CALLS = [
    "jobwatch_positions.find_one_and_update",
    "jobwatch_positions.update_one",
    "jobwatch_positions.aggregate",
]
ERRORS: list[BaseException] = [
    pe.NotPrimaryError("not primary", {"ok": 0, "code": 10107, "codeName": "NotWritablePrimary"}),
    pe.NetworkTimeout("timed out"),
    pe.AutoReconnect("connection reset"),
    pe.ServerSelectionTimeoutError("no primary found"),
    pe.WriteConcernError("waiting for replication timed out", 64, {"code": 64, "codeName": "WriteConcernFailed"}),
    pe.ExecutionTimeout("operation exceeded time limit", 50, {"code": 50, "codeName": "MaxTimeMSExpired"}),
    failure(189, "PrimarySteppedDown"),
    failure(91, "ShutdownInProgress"),
    failure(11602, "InterruptedDueToReplStateChange"),
    failure(99999, "SomethingNew"),
]
#: Each error this many times in a row (JOBWATCH_RELIABILITY_FULL=1: more, past the renew deadline).
TIMES = 8 if os.environ.get("JOBWATCH_RELIABILITY_FULL") == "1" else 1


async def holds_and_completes(mongo: Backend, watcher: Watcher) -> None:
    """Once the faults are gone: the partition held again, ready, and a new complete job completed."""

    async def leading() -> bool:
        return watcher.partitions_held == [0] and watcher.ready

    await wait_until(leading, what="the watcher to hold the partition again, ready", deadline_s=30)
    job = seed_job(_id=ObjectId())
    await mongo.db.background_jobs.insert_one(job)

    async def completed() -> bool:
        return (await mongo.db.background_jobs.find_one({"_id": job["_id"]}) or {}).get("status") == "Completed"

    await wait_until(completed, what="a new job to complete", deadline_s=30)


@pytest.mark.parametrize("call", LEASE_CALLS)
async def test_every_error_on_a_standbys_lease_calls_is_survived_and_it_still_takes_over(
    mongo: Backend, call: str
) -> None:
    faults = Faults()
    async with anyio.create_task_group() as tg:
        leader = Watcher(mongo.client, settings_for(mongo, **FAST), change_source=mongo.change_source())
        tg.start_soon(leader.run)
        await leader.wait_started()
        standby = Watcher(
            FaultyClient(mongo.client, faults), settings_for(mongo, **FAST), change_source=mongo.change_source()
        )
        tg.start_soon(standby.run)
        await standby.wait_started()
        for error in ERRORS:
            faults.fail(call, error, times=TIMES)  # its takes, heartbeats and instance lists fail, every way

        async def all_raised() -> bool:
            return faults.pending(call) == 0

        await wait_until(all_raised, what=f"every planned fault on {call}", deadline_s=60)
        assert not standby.stopping and standby.partitions_held == []
        await leader.stop()
        await holds_and_completes(mongo, standby)
        await standby.stop()
    assert faults.raised[call] == len(ERRORS) * TIMES
    assert (
        standby.metrics.registry.get_sample_value(
            "jobwatch_errors_total", {"error": "NotWritablePrimary", "action": "resume"}
        )
        or 0
    ) >= 1


@pytest.mark.parametrize("call", ["jobwatch_positions.update_one", "jobwatch_positions.aggregate"])
async def test_every_error_on_a_leaders_lease_calls_is_survived(mongo: Backend, call: str) -> None:
    faults = Faults()
    watcher = Watcher(
        FaultyClient(mongo.client, faults), settings_for(mongo, **FAST), change_source=mongo.change_source()
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run)
        await watcher.wait_started()
        for error in ERRORS:
            faults.fail(call, error, times=TIMES)  # its renewals, saves, heartbeats and instance lists fail, every way

        async def all_raised() -> bool:
            return faults.pending(call) == 0

        await wait_until(all_raised, what=f"every planned fault on {call}", deadline_s=60)
        assert not watcher.stopping
        await holds_and_completes(mongo, watcher)
        await watcher.stop()
    assert faults.raised[call] == len(ERRORS) * TIMES


@pytest.mark.parametrize("call", LEASE_CALLS)
async def test_a_lease_call_that_never_answers_is_abandoned(mongo: Backend, call: str) -> None:
    faults = Faults()
    async with anyio.create_task_group() as tg:
        leader = Watcher(mongo.client, settings_for(mongo, **FAST), change_source=mongo.change_source())
        tg.start_soon(leader.run)
        await leader.wait_started()
        watcher = Watcher(
            FaultyClient(mongo.client, faults), settings_for(mongo, **FAST), change_source=mongo.change_source()
        )
        tg.start_soon(watcher.run)
        await watcher.wait_started()
        faults.hang(call, times=3)  # half-open connections: no reply, ever

        async def all_hung() -> bool:
            return faults.hung[call] == 3

        await wait_until(all_hung, what=f"three calls of {call} left hanging", deadline_s=60)
        await leader.stop()
        await holds_and_completes(mongo, watcher)
        with anyio.fail_after(20):
            await watcher.stop()  # and a stop is not held by a call that never answers


async def test_a_holder_cut_off_stops_by_itself_and_a_standby_takes_over(mongo: Backend) -> None:
    faults = Faults()
    holder = Watcher(
        FaultyClient(mongo.client, faults), settings_for(mongo, **FAST), change_source=mongo.change_source()
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(holder.run)
        await holder.wait_started()
        assert holder.partitions_held == [0]
        standby = Watcher(mongo.client, settings_for(mongo, **FAST), change_source=mongo.change_source())
        async with standby:
            for call in (*LEASE_CALLS, "background_jobs.update_one"):
                faults.fail_always(call, pe.ServerSelectionTimeoutError("no servers found"))  # the holder is cut off

            async def handed_over() -> bool:
                return holder.partitions_held == [] and standby.partitions_held == [0] and standby.streaming

            await wait_until(handed_over, what="the cut-off holder to stop and the standby to take over", deadline_s=30)
            lost = holder.metrics.registry.get_sample_value("jobwatch_leadership_changes_total", {"change": "lost"})
            assert lost == 1 and not holder.ready  # it knows: out of touch with MongoDB
            await mongo.db.background_jobs.insert_one(seed_job(_id=ObjectId()))

            async def completed() -> bool:
                return await mongo.db.background_jobs.count_documents({"status": "Completed"}) == 1

            await wait_until(completed, what="the new leader to complete a job")
            faults.clear()
            await holder.stop()


@pytest.mark.parametrize("call", ["jobwatch_positions.find_one_and_update", "jobwatch_positions.update_one"])
async def test_missing_privileges_on_the_leases_stop_the_service_with_a_reason(mongo: Backend, call: str) -> None:
    faults = Faults()
    faults.fail_always(call, failure(13, "Unauthorized"))
    watcher = Watcher(
        FaultyClient(mongo.client, faults), settings_for(mongo, **FAST), change_source=mongo.change_source()
    )
    with pytest.raises(ConfigurationProblem, match="Unauthorized"), anyio.fail_after(30):
        await watcher.run()
