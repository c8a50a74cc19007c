"""Watchers sharing a name, in one process: one leads, the others stand by
(ready, reading nothing), ``--observe`` takes no lease and saves no
position, a stop or a cancel hands the lease over at once, a standby cut
off from MongoDB says it is not ready, settings that differ are refused.
(``tests/e2e/test_replicas.py`` does the same with processes and signals.)"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from bson import ObjectId
from pymongo import errors as pe

from tests.support.backends import Backend
from tests.support.documents import seed_job
from tests.support.faults import Faults, FaultyClient
from tests.support.harness import metric, running, settings_for, wait_until
from watcher import Watcher
from watcher.cli.commands import status as status_command
from watcher.service import ConfigurationProblem
from watcher.storage import survey

FAST: dict[str, Any] = {"lease_s": 2.0, "renew_s": 0.25}


async def _status(mongo: Backend, watcher: Watcher) -> dict[str, Any]:
    positions = mongo.db.jobwatch_positions
    name = watcher.settings.watcher_name
    return status_command.status_document(
        await survey.partitions(positions, name), await survey.instances(positions, name), [], watcher.settings
    )


async def test_a_standby_is_ready_reads_nothing_and_takes_over_when_the_leader_stops(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    async with running(mongo, **FAST) as leader, running(mongo, **FAST) as standby:
        assert leader.role == "leader" and leader.partitions_held == [0]
        assert standby.role == "standby" and standby.partitions_held == [] and standby.ready and not standby.streaming
        await jobs.insert_one(seed_job(_id=ObjectId()))
        await wait_until(lambda: _all_completed(mongo), what="the leader to complete the job")
        assert metric(standby, "jobwatch_events_received_total", operation="insert") == 0
        assert (
            metric(standby, "jobwatch_leader", partition="0") == 0
            and metric(leader, "jobwatch_leader", partition="0") == 1
        )
        await leader.stop()  # in order: drained, saved, released

        async def took_over() -> bool:
            return standby.partitions_held == [0] and standby.streaming

        await wait_until(took_over, what="the standby to take over", deadline_s=10)
        await jobs.insert_one(seed_job(_id=ObjectId()))
        await wait_until(lambda: _all_completed(mongo), what="the new leader to complete the next job")
        assert metric(standby, "jobwatch_lease_term", partition="0") == 2
    doc = await mongo.db.jobwatch_positions.find_one({"_id": "default"})
    assert doc is not None and doc["holder"] is None and doc["tokenTerm"] == 2  # the last one released it too


async def test_a_watcher_cancelled_from_outside_still_releases_its_lease(mongo: Backend) -> None:
    first = Watcher(mongo.client, settings_for(mongo, lease_s=60, renew_s=1), change_source=mongo.change_source())
    with anyio.move_on_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await first.wait_started()
            assert first.partitions_held == [0]
            tg.cancel_scope.cancel()  # the host application cancels it: no orderly stop
    doc = await mongo.db.jobwatch_positions.find_one({"_id": "default"})
    assert doc is not None and doc["holder"] is None  # released anyway: no 60 s wait for the next one
    async with running(mongo, lease_s=60, renew_s=1) as second:
        assert second.partitions_held == [0]


async def test_observe_takes_no_lease_saves_no_position_and_shows_as_observe(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    job = seed_job(_id=ObjectId())
    await jobs.insert_one(job)
    async with running(mongo, observe=True, **FAST) as observer:
        assert observer.role == "observe" and observer.ready and observer.streaming
        assert (
            metric(observer, "jobwatch_observe_mode") == 1 and metric(observer, "jobwatch_leader", partition="0") == 0
        )
        assert observer.last_sweep is not None and observer.last_sweep.jobs_completed == 1  # decided, not written
        status = await _status(mongo, observer)
        assert [i["role"] for i in status["instances"]] == ["observe"] and status["instances"][0]["observe"] is True
        assert status["alive"] is False  # an observer is nobody's holder
        async with running(mongo, **FAST) as leader:
            await wait_until(lambda: _all_completed(mongo), what="the leader, not the observer, to complete the job")
            status = await _status(mongo, leader)
            assert sorted(i["role"] for i in status["instances"]) == ["leader", "observe"] and status["alive"] is True
            assert observer.partitions_held == [] and leader.partitions_held == [0]
    docs = [d async for d in mongo.db.jobwatch_positions.find({"kind": {"$ne": "instance"}})]
    assert [d["_id"] for d in docs] == ["default"] and docs[0]["tokenTerm"] == 1  # the leader's position only


async def test_a_standby_that_cannot_reach_mongodb_says_it_is_not_ready(mongo: Backend) -> None:
    faults = Faults()
    async with running(mongo, **FAST):
        standby = Watcher(
            FaultyClient(mongo.client, faults), settings_for(mongo, **FAST), change_source=mongo.change_source()
        )
        async with standby:
            assert standby.ready
            for call in ("update_one", "find_one_and_update", "aggregate"):  # its heartbeat, takes and instance list
                faults.fail_always(f"jobwatch_positions.{call}", pe.AutoReconnect("connection refused"))

            async def not_ready() -> bool:
                return standby.readiness() == "cannot reach MongoDB to keep its leases"

            await wait_until(not_ready, what="the cut-off standby to say it is not ready", deadline_s=10)
            faults.clear()

            async def ready() -> bool:
                return standby.ready

            await wait_until(ready, what="the standby to be ready again", deadline_s=10)
            assert standby.metrics.registry.get_sample_value(
                "jobwatch_errors_total", {"error": "AutoReconnect", "action": "resume"}
            )


async def test_a_newer_watcher_with_other_job_types_is_refused(mongo: Backend) -> None:
    async with running(mongo, **FAST) as older:
        newer = Watcher(
            mongo.client,
            settings_for(mongo, job_types=("collection-scan",), **FAST),
            change_source=mongo.change_source(),
        )
        with (
            pytest.raises(ConfigurationProblem, match="job_types=every type .this one: collection-scan."),
            anyio.fail_after(20),
        ):
            await newer.run()
        assert older.partitions_held == [0] and older.ready


async def test_partitions_need_the_servers_hashed_index_key(mongo: Backend) -> None:
    try:
        cursor = await mongo.db.background_jobs.aggregate([{"$project": {"h": {"$toHashedIndexKey": 1}}}])
        await cursor.to_list()
        has_operator = True
    except pe.OperationFailure:
        has_operator = False
    watcher = Watcher(mongo.client, settings_for(mongo, partitions=3, **FAST), change_source=mongo.change_source())
    if has_operator:
        async with watcher:
            assert watcher.partitions_held == [0, 1, 2]  # one instance alone holds all
        return
    with (
        pytest.raises(ConfigurationProblem, match=r"\$toHashedIndexKey.*4\.4\.10\+ or 5\.0\+.*partitions=1"),
        anyio.fail_after(20),
    ):
        await watcher.run()


async def _all_completed(mongo: Backend) -> bool:
    return await mongo.db.background_jobs.count_documents({"status": {"$ne": "Completed"}}) == 0
