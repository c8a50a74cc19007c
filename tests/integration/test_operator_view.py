"""What operators read from a running watcher: its heartbeat (as ``jobwatch
status`` judges it), the metrics behind the alerts, and ``--observe``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import ObjectId

from tests.support.backends import Backend
from tests.support.documents import seed_job
from tests.support.harness import running, settings_for, wait_until
from watcher.cli import commands
from watcher.storage.position import MongoPositionStore


def sample(watcher: Any, name: str) -> float | None:
    """One unlabelled sample from the watcher's /metrics text."""
    for line in watcher.metrics.exposition().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


async def test_the_heartbeat_carries_the_watchers_own_interval_and_state(mongo: Backend) -> None:
    positions = mongo.db.jobwatch_positions
    async with running(mongo, position_save_interval_s=0.2) as watcher:

        async def reported() -> bool:
            doc = await positions.find_one({"_id": watcher.settings.watcher_name})
            return doc is not None and doc.get("saveIntervalS") == 0.2 and "pendingJobs" in doc.get("state", {})

        await wait_until(reported, what="a heartbeat with the save interval and state")
        saved = await MongoPositionStore(mongo.db, "jobwatch_positions", watcher.settings.watcher_name).load()
        # Judged by the watcher's interval, whatever the reader's own settings say.
        status = commands.status_document(saved, [], watcher.settings.model_copy(update={"position_save_interval_s": 3600}), dt.datetime.now(dt.UTC))
        assert status["alive"] is True and status["save_interval_s"] == 0.2
        assert status["streaming"] is True and status["last_sweep_age_s"] is not None
    # Long after its last heartbeat (here: judged an hour later), the same watcher is gone.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    saved = await MongoPositionStore(mongo.db, "jobwatch_positions", watcher.settings.watcher_name).load()
    assert commands.status_document(saved, [], watcher.settings, later)["alive"] is False


async def test_metrics_answer_is_anything_stuck(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    # A job the watcher must skip (a counter that is no number) stays open;
    # the seed job is completed by the start-up sweep.
    await jobs.insert_many([seed_job(_id=ObjectId()), {"_id": "odd", "status": "Pending", "stages": {"a": {"completedItems": "x", "totalItems": 1}}}])
    async with running(mongo, census_interval_s=0.1) as watcher:

        async def counted() -> bool:
            return sample(watcher, "jobwatch_census_timestamp_seconds") not in (None, 0.0)

        await wait_until(counted, what="a job census")
        assert sample(watcher, "jobwatch_open_jobs") == 1.0  # the odd job
        assert sample(watcher, "jobwatch_done_but_open_jobs") == 0.0
        assert sample(watcher, "jobwatch_stream_open") == 1.0 and sample(watcher, "jobwatch_degraded") == 0.0
        assert (sample(watcher, "jobwatch_last_sweep_success_timestamp_seconds") or 0) > 0
        text = watcher.metrics.exposition().decode()
        assert 'jobwatch_skipped_jobs_total{reason="unreadable"} 1.0' in text
        assert "jobwatch_build_info{version=" in text


async def test_observe_mode_decides_and_writes_nothing(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    job = seed_job(_id=ObjectId())
    await jobs.insert_one(job)
    async with running(mongo, observe=True) as watcher:
        assert watcher.last_sweep is not None and watcher.last_sweep.jobs_completed == 1  # decided
        assert sample(watcher, "jobwatch_observe_mode") == 1.0
        await jobs.update_one({"_id": job["_id"]}, {"$set": {"message": "touched"}})  # a change event: decided again

        async def evaluated_from_the_stream() -> bool:
            return 'jobwatch_evaluations_total{outcome="job_completed",source="stream"}' in watcher.metrics.exposition().decode()

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
            {"_id": "undecodable", "status": "Pending", "stages": {"a": {"totalItems": 2, "startedAt": DatetimeMS(2**62)}}},
            {"_id": "good", "status": "Pending", "stages": {"a": {"totalItems": 2}}},
        ]
    )
    store = MongoJobStore.from_settings(mongo.db, settings_for(mongo))
    read = [doc async for batch in store.open_jobs(full=True, fields=("createdAt", "updatedAt")) for doc in batch]
    unreadable = [doc["_id"] for doc in read if isinstance(doc, Unreadable)]
    assert unreadable == ["undecodable"] and {doc["_id"] for doc in read} == {"undecodable", "good"}
