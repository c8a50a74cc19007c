"""What operators read from a running watcher: its heartbeat (as ``jobwatch
status`` judges it), the metrics behind the alerts, and ``--observe``."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bson import ObjectId

from tests.support.backends import Backend
from tests.support.documents import seed_job
from tests.support.harness import running, settings_for, wait_until
from watcher.cli.commands import status as status_command
from watcher.storage import survey


def sample(watcher: Any, name: str, **labels: str) -> float | None:
    """One sample of the watcher's registry, as Prometheus would scrape it."""
    value: float | None = watcher.metrics.registry.get_sample_value(name, labels)
    return value


async def test_status_judges_each_instance_by_its_own_lease_and_shows_each_partition(mongo: Backend) -> None:
    positions = mongo.db.jobwatch_positions
    async with running(mongo, position_save_interval_s=0.2, lease_s=60, renew_s=0.2) as watcher:

        async def reported() -> bool:
            doc = await positions.find_one({"_id": watcher.settings.watcher_name})
            return doc is not None and doc.get("saveIntervalS") == 0.2 and "pendingJobs" in doc.get("state", {})

        await wait_until(reported, what="a heartbeat with the save interval and state")
        views = await survey.partitions(positions, watcher.settings.watcher_name)
        members = await survey.instances(positions, watcher.settings.watcher_name)
        # Judged by the watcher's own lease (60 s), whatever the reader's settings say.
        reader = watcher.settings.model_copy(update={"lease_s": 1.0, "renew_s": 0.2})
        status = status_command.status_document(views, members, [], reader)
        assert status["alive"] is True and status["unheld"] == []
        [instance] = status["instances"]
        assert instance["alive"] and instance["role"] == "leader" and instance["held"] == [0]
        assert instance["instance"] == watcher.instance
        assert instance["lease_s"] == 60 and instance["pid"] is not None and instance["version"]
        [partition] = status["partitions"]
        assert partition["holder"] == watcher.instance and partition["term"] == 1
        assert partition["lease_expires_in_s"] > 0
        assert partition["heartbeat"]["streaming"] is True and partition["heartbeat"]["save_interval_s"] == 0.2
        assert partition["heartbeat"]["last_sweep"] is not None and partition["heartbeat"]["age_s"] is not None
    # Stopped: its lease released and its heartbeat removed, nobody holds the partition.
    views = await survey.partitions(positions, watcher.settings.watcher_name)
    members = await survey.instances(positions, watcher.settings.watcher_name)
    status = status_command.status_document(views, members, [], watcher.settings)
    assert status["alive"] is False and status["unheld"] == [0] and status["instances"] == []
    assert status["partitions"][0]["holder"] is None and status["partitions"][0]["position_saved"] is True


async def test_metrics_answer_is_anything_stuck(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    # A job the watcher must skip (a counter that is no number) stays open;
    # the seed job is completed by the start-up sweep.
    await jobs.insert_many(
        [
            seed_job(_id=ObjectId()),
            {"_id": "odd", "status": "Pending", "stages": {"a": {"completedItems": "x", "totalItems": 1}}},
        ]
    )
    async with running(mongo, census_interval_s=0.1) as watcher:

        async def counted() -> bool:
            return sample(watcher, "jobwatch_census_timestamp_seconds") not in (None, 0.0)

        await wait_until(counted, what="a job census")
        assert sample(watcher, "jobwatch_open_jobs", job_type="(none)") == 1.0  # the odd job
        assert sample(watcher, "jobwatch_done_but_open_jobs", job_type="(none)") == 0.0
        assert sample(watcher, "jobwatch_stream_open") == 1.0 and sample(watcher, "jobwatch_degraded") == 0.0
        assert (sample(watcher, "jobwatch_last_sweep_success_timestamp_seconds") or 0) > 0
        text = watcher.metrics.exposition().decode()
        assert 'jobwatch_skipped_jobs_total{reason="unreadable"} 1.0' in text
        assert "jobwatch_build_info{version=" in text


async def test_the_position_save_time_is_a_timestamp_an_alert_can_age(mongo: Backend) -> None:
    """Not an age computed at save time (which read ~0 forever): the time of
    the last save, so ``time() - jobwatch_position_saved_timestamp_seconds`` grows while saves stop."""
    async with running(mongo, position_save_interval_s=0.1) as watcher:

        def saved_at() -> float:
            sample = watcher.metrics.registry.get_sample_value
            return sample("jobwatch_position_saved_timestamp_seconds", {"partition": "0"}) or 0.0

        async def saved() -> bool:
            return saved_at() > 0

        await wait_until(saved, what="a position save")
        first = saved_at()
        await mongo.db.background_jobs.insert_one(seed_job(_id=ObjectId()))

        async def saved_again() -> bool:
            return saved_at() > first

        await wait_until(saved_again, what="a later save")
        assert abs(saved_at() - time.time()) < 60
    assert "jobwatch_position_age_seconds" not in watcher.metrics.exposition().decode()


async def test_observe_mode_decides_and_writes_nothing(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    job = seed_job(_id=ObjectId())
    await jobs.insert_one(job)
    async with running(mongo, observe=True) as watcher:
        assert watcher.last_sweep is not None and watcher.last_sweep.jobs_completed == 1  # decided
        assert sample(watcher, "jobwatch_observe_mode") == 1.0
        await jobs.update_one({"_id": job["_id"]}, {"$set": {"message": "touched"}})  # a change event: decided again

        async def evaluated_from_the_stream() -> bool:
            return (
                'jobwatch_evaluations_total{outcome="job_completed",source="stream"}'
                in watcher.metrics.exposition().decode()
            )

        await wait_until(evaluated_from_the_stream, what="the stream's evaluation")
    stored = await jobs.find_one({"_id": job["_id"]})
    assert stored is not None and stored["status"] == "Pending" and "completedAt" not in stored  # nothing written
    assert "jobwatch_open_status" not in await jobs.index_information()  # not even the index


async def test_the_stuck_listing_reads_past_a_document_the_driver_cannot_decode(mongo: Backend) -> None:
    from bson.datetime_ms import DatetimeMS

    from watcher.storage.store import MongoJobStore, Unreadable

    if mongo.is_embedded:
        pytest.skip("the embedded engine cannot store a date beyond year 9999 (MongoDB can)")
    jobs = mongo.db.background_jobs
    await jobs.insert_many(
        [
            {
                "_id": "undecodable",
                "status": "Pending",
                "stages": {"a": {"totalItems": 2, "startedAt": DatetimeMS(2**62)}},
            },
            {"_id": "good", "status": "Pending", "stages": {"a": {"totalItems": 2}}},
        ]
    )
    store = MongoJobStore.from_settings(mongo.db, settings_for(mongo))
    read = [doc async for batch in store.open_jobs(full=True, fields=("createdAt", "updatedAt")) for doc in batch]
    unreadable = [doc["_id"] for doc in read if isinstance(doc, Unreadable)]
    assert unreadable == ["undecodable"] and {doc["_id"] for doc in read} == {"undecodable", "good"}
