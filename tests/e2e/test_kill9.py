"""``jobwatch run`` as a real process against ``jobwatch embedded-server`` (a
process too), killed with SIGKILL at random points of bursts of consumer
increments and restarted: every job ends right, exactly once.

What is checked, from a change stream the test reads over the whole run:
every job whose stages are complete ends ``Completed`` within one sweep
interval of the restart (the stream is the fast path, the sweep the
guarantee), ``completedAt`` is written once per job, no status ever goes
back from ``Completed`` and no counter goes down. Each restart resumes from
the saved position (the log says ``stream_opened`` with ``resumed``), never
from a history-lost restart.

6 trials in the default suite, 20 under ``-m slow``; ``JOBWATCH_KILL_TRIALS``
sets the default suite's number.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from tests.support.documents import fresh_job
from tests.support.replicas import Instance, Witness
from tests.support.served import ServerProcess, embedded_server
from watcher.cli import embedded

pytestmark = pytest.mark.skipif(
    not embedded.available(), reason="needs the embedded server (pip install ./embedded, Python >= 3.13)"
)

TRIALS = int(os.environ.get("JOBWATCH_KILL_TRIALS", "6"))
SLOW_TRIALS = 20
SWEEP_INTERVAL_S = 2.0
LEASE_S = 1.0
# Time for a process to start under load, on top of what the service promises.
STARTUP_ALLOWANCE_S = 30.0
JOBS_PER_TRIAL = 2
ITEMS = 4
STAGES = ("thumbnail", "cache")
DATABASE = "jobwatch_kill9"


def new_job() -> dict[str, Any]:
    return fresh_job(ITEMS, STAGES)


#: ``jobwatch run``'s settings here (a restart after kill -9 waits for the
#: dead process's lease to run out: the shortest one).
SETTINGS: dict[str, Any] = {
    "sweep_interval_s": SWEEP_INTERVAL_S,
    "position_save_interval_s": 0.1,
    "max_await_ms": 100,
    "lease_s": LEASE_S,
    "renew_s": LEASE_S / 4,
}


class Run(Instance):
    """One ``jobwatch run`` process on ``DATABASE``, its JSON log in a file."""

    def __init__(self, uri: str, log_path: Path) -> None:
        super().__init__(uri, DATABASE, log_path, settings=SETTINGS)

    def wait_streaming(self) -> None:
        self.wait_logged("stream_opened", deadline_s=STARTUP_ALLOWANCE_S)

    def kill(self, signum: int = signal.SIGKILL) -> int:
        self.signal(signum)
        return self.wait_exit()


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with embedded_server() as running:
        yield running


def wait_completed(jobs: Any, ids: list[Any], deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while jobs.count_documents({"_id": {"$in": ids}, "status": "Completed"}) < len(ids):
        assert time.monotonic() < end, list(jobs.find({"_id": {"$in": ids}, "status": {"$ne": "Completed"}}))
        time.sleep(0.02)


def burst(jobs: Any, ids: list[Any], rng: random.Random) -> list[tuple[Any, str]]:
    increments = [(job_id, stage) for job_id in ids for stage in STAGES for _ in range(ITEMS)]
    rng.shuffle(increments)
    return increments


def wait_position_saved(positions: Any) -> None:
    """Until the running watcher has saved a token: it does once its start-up
    sweep is done, however fast or slow this machine is."""
    end = time.monotonic() + STARTUP_ALLOWANCE_S
    while positions.find_one({"_id": "default", "token": {"$ne": None}}) is None:
        assert time.monotonic() < end, "the watcher saved no position after its start-up sweep"
        time.sleep(0.02)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[MongoClient[dict[str, Any]]]:
    connected: MongoClient[dict[str, Any]]
    with MongoClient(server.uri) as connected:
        yield connected


@pytest.mark.parametrize("trials", [TRIALS, pytest.param(SLOW_TRIALS, marks=pytest.mark.slow)])
def test_kill_9_at_random_points_every_job_ends_right_once(
    server: ServerProcess, client: MongoClient[dict[str, Any]], tmp_path: Path, trials: int
) -> None:
    rng = random.Random(int(os.environ.get("JOBWATCH_KILL_SEED", "9")))
    jobs = client[DATABASE].background_jobs
    changes = Witness(client, DATABASE)  # every change, read by the driver's own change streams
    run = Run(server.uri, tmp_path / "run-0.log")
    run.wait_streaming()
    all_ids: list[Any] = []
    positions = client[DATABASE].jobwatch_positions
    resumed_restarts = 0
    try:
        for trial in range(1, trials + 1):
            ids = [new_job()["_id"] for _ in range(JOBS_PER_TRIAL)]
            jobs.insert_many([{**new_job(), "_id": job_id} for job_id in ids])
            all_ids += ids
            increments = burst(jobs, ids, rng)
            kill_at = rng.randrange(len(increments))
            if trial % 2 == 0:
                # Half the kills come once the running watcher has saved its
                # position (which it does right after its start-up sweep), so
                # resuming is checked on every machine; the other half may
                # fall before that first save, where a catch-up sweep is right.
                wait_position_saved(positions)
            for index, (job_id, stage) in enumerate(increments):
                if index == kill_at:
                    had_position = positions.find_one({"_id": "default", "token": {"$ne": None}}) is not None
                    assert run.kill() == -signal.SIGKILL
                    run = Run(server.uri, tmp_path / f"run-{trial}.log")  # back at once: the burst goes on
                jobs.update_one({"_id": job_id}, {"$inc": {f"stages.{stage}.completedItems": 1}})
            run.wait_streaming()
            wait_completed(jobs, ids, SWEEP_INTERVAL_S + STARTUP_ALLOWANCE_S)
            opened = [a for a in run.actions() if a.get("action") == "stream_opened"]
            if had_position:  # a kill before the first save has nothing to resume from
                assert opened[0].get("resumed") is True, opened
                resumed_restarts += 1
            assert not [a for a in run.actions() if a.get("error") == "ChangeStreamHistoryLost"]
    finally:
        if run.process.poll() is None:
            run.kill(signal.SIGTERM)
        changes.close()
    for doc in jobs.find({"_id": {"$in": all_ids}}):
        assert doc["status"] == "Completed" and doc["progress"] == 100, doc
        assert all(s["completedItems"] == ITEMS and s["status"] == "Completed" for s in doc["stages"].values()), doc
    changes.check_jobs(all_ids)
    changes.check_positions()  # the saved token never went back across the restarts
    assert resumed_restarts >= trials // 2  # every kill after a save resumed: at least the even trials


def test_sigterm_saves_the_position_and_the_restart_resumes_from_it(
    server: ServerProcess, client: MongoClient[dict[str, Any]], tmp_path: Path
) -> None:
    jobs = client[DATABASE].background_jobs
    ids = [new_job()["_id"] for _ in range(3)]
    jobs.insert_many([{**new_job(), "_id": job_id} for job_id in ids])
    increments = burst(jobs, ids, random.Random(1))
    half = len(increments) // 2
    run = Run(server.uri, tmp_path / "first.log")
    run.wait_streaming()
    for job_id, stage in increments[:half]:
        jobs.update_one({"_id": job_id}, {"$inc": {f"stages.{stage}.completedItems": 1}})
    assert run.kill(signal.SIGTERM) == 0
    saved = [a.get("action") for a in run.actions()]
    assert "position_saved_at_shutdown" in saved, saved
    for job_id, stage in increments[half:]:  # while nobody watches
        jobs.update_one({"_id": job_id}, {"$inc": {f"stages.{stage}.completedItems": 1}})
    restarted = Run(server.uri, tmp_path / "second.log")
    try:
        restarted.wait_streaming()
        wait_completed(jobs, ids, SWEEP_INTERVAL_S + STARTUP_ALLOWANCE_S)
        actions = restarted.actions()
        opened = [a for a in actions if a.get("action") == "stream_opened"]
        assert opened[0].get("resumed") is True, opened
        assert not [a for a in actions if a.get("action") == "stream_error"], actions
    finally:
        restarted.kill(signal.SIGTERM)
