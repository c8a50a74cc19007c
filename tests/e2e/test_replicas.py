"""Replicas as an operator runs them: several ``jobwatch run`` processes on
one ``jobwatch embedded-server`` (a process too), with one watcher name.

- two instances for ten seconds under load: exactly one leader at every
  sample, the standby reads no event, their wall clocks two hours apart;
- ``kill -9`` of the leader mid-burst (5 trials here, 20 under ``-m slow``),
  and SIGTERM: a standby takes over in the next term, every job ends
  Completed with ``completedAt`` written once, nothing goes back (jobs,
  saved tokens);
- SIGSTOP of the leader past its lease, then SIGCONT: it is fenced, logs
  ``leadership_lost`` and goes back to standby; the new leader's position is
  intact;
- three instances with ``partitions=3``: each partition held by exactly one,
  each change event read by exactly one instance, a killed instance's
  partition taken over, and one instance then two more balanced (these need
  ``$toHashedIndexKey`` on the server: they skip, saying so, where it is missing).

Takeover times are measured here and by ``bench/takeover.py`` (the figures
in the docs), not asserted: each wait has a deadline, generous for a busy machine.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from tests.support.documents import fresh_job
from tests.support.replicas import Instance, Witness, lease_doc, skewed_clock_env, takeover_trials, wait
from tests.support.served import ServerProcess, embedded_server
from watcher.cli import embedded
from watcher.storage.partitions import PROBE_HASH, PROBE_VALUE

pytestmark = pytest.mark.skipif(
    not embedded.available(), reason="needs the embedded server (pip install ./embedded, Python >= 3.13)"
)

DATABASE = "jobwatch_replicas"
LEASE_S = 2.0
RENEW_S = 0.5
SETTINGS: dict[str, Any] = {
    "lease_s": LEASE_S,
    "renew_s": RENEW_S,
    "position_save_interval_s": 0.1,
    "max_await_ms": 100,
    "backoff_base_s": 0.05,
    "max_backoff_s": 0.5,
    "sweep_interval_s": 30,
}
SAMPLE_WINDOW_S = 5.0  # ten renew rounds
MIN_SAMPLES = 20
#: The lease where none is meant to run out (the renew deadline is a share of it).
STEADY_LEASE_S = 10.0
KILL_TRIALS = int(os.environ.get("JOBWATCH_TAKEOVER_TRIALS", "5"))
SLOW_KILL_TRIALS = 20


def new_job() -> dict[str, Any]:
    return fresh_job(4, ("thumbnail", "cache"))


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with embedded_server() as running:
        yield running


@pytest.fixture
def client(server: ServerProcess) -> Iterator[MongoClient[dict[str, Any]]]:
    connected: MongoClient[dict[str, Any]]
    with MongoClient(server.uri) as connected:
        yield connected


def start(
    server: ServerProcess, tmp_path: Path, name: str, *, env: dict[str, str] | None = None, **settings: Any
) -> Instance:
    return Instance(server.uri, DATABASE, tmp_path / f"{name}.log", settings={**SETTINGS, **settings}, env=env)


def test_two_instances_one_leader_at_every_sample_and_the_standby_reads_nothing(
    server: ServerProcess, client: MongoClient[dict[str, Any]], tmp_path: Path
) -> None:
    witness = Witness(client, DATABASE)
    # Their wall clocks two hours apart: the lease is judged on the server's clock.
    # Nothing here waits for a lease to run out: a long one, so that a leader
    # stalled for a second or two on a loaded machine still holds it.
    a = start(server, tmp_path, "a", env=skewed_clock_env(tmp_path / "ahead", +3600), lease_s=STEADY_LEASE_S)
    b = None
    try:
        a.wait_logged("stream_opened")
        b = start(server, tmp_path, "b", env=skewed_clock_env(tmp_path / "behind", -3600), lease_s=STEADY_LEASE_S)
        wait(b.ready, "the standby to join, ready")
        jobs = client[DATABASE].background_jobs
        docs = [new_job() for _ in range(20)]
        jobs.insert_many(docs)
        ids = [d["_id"] for d in docs]
        increments = iter([(d["_id"], stage) for d in docs for stage in d["stages"] for _ in range(4)])
        samples: list[tuple[list[int], list[int]]] = []
        end = time.monotonic() + SAMPLE_WINDOW_S
        while time.monotonic() < end or len(samples) < MIN_SAMPLES:  # a slow machine samples for longer
            for job_id, stage in [next(increments, (None, "")) for _ in range(2)]:
                if job_id is not None:
                    jobs.update_one({"_id": job_id}, {"$inc": {f"stages.{stage}.completedItems": 1}})
            samples.append((a.held(), b.held()))
        assert all(sorted(x + y) == [0] for x, y in samples), samples
        assert all(x == [0] for x, _ in samples)  # and always the same one
        wait(
            lambda: jobs.count_documents({"_id": {"$in": ids}, "status": "Completed"}) == len(ids),
            "every job Completed",
        )
        assert b.events_received() == 0 and b.logged("stream_opened") == [] and b.ready()
        assert a.events_received() > 0
        assert lease_doc(client, DATABASE)["term"] == 1 and lease_doc(client, DATABASE)["holder"] == a.instance
    finally:
        for instance in (a, b):
            if instance is not None:
                instance.close()
        witness.close()
    witness.check_jobs(ids)
    witness.check_positions()


def _kill_trials(server: ServerProcess, tmp_path: Path, trials: int) -> None:
    results = takeover_trials(
        server.uri, DATABASE, tmp_path, trials=trials, signum=signal.SIGKILL, settings=SETTINGS, new_job=new_job
    )
    assert len(results) == trials
    print(
        f"\nkill -9 takeover (lease {LEASE_S:g}s, renew {RENEW_S:g}s): "
        + ", ".join(f"{r.takeover_s:.2f}s" for r in results)
    )


def test_kill_9_of_the_leader_mid_burst(server: ServerProcess, tmp_path: Path) -> None:
    _kill_trials(server, tmp_path, KILL_TRIALS)


@pytest.mark.slow
def test_kill_9_of_the_leader_mid_burst_many_times(server: ServerProcess, tmp_path: Path) -> None:
    _kill_trials(server, tmp_path, SLOW_KILL_TRIALS)


def test_sigterm_of_the_leader_hands_over_at_the_next_round(server: ServerProcess, tmp_path: Path) -> None:
    results = takeover_trials(
        server.uri, DATABASE, tmp_path, trials=2, signum=signal.SIGTERM, settings=SETTINGS, new_job=new_job
    )
    print(f"\nSIGTERM takeover (renew {RENEW_S:g}s): " + ", ".join(f"{r.takeover_s:.2f}s" for r in results))


def test_a_paused_leader_is_fenced_when_it_wakes(
    server: ServerProcess, client: MongoClient[dict[str, Any]], tmp_path: Path
) -> None:
    witness = Witness(client, DATABASE)
    a = start(server, tmp_path, "a")
    b = None
    jobs = client[DATABASE].background_jobs
    try:
        a.wait_logged("stream_opened")
        b = start(server, tmp_path, "b")
        wait(b.ready, "the standby to join")
        first = new_job()
        jobs.insert_one(first)
        wait(lambda: lease_doc(client, DATABASE).get("tokenTerm") == 1, "a position saved by term 1")
        a.pause()  # SIGSTOP: past its lease
        b.wait_logged("leadership_acquired", partition=0)
        b.wait_logged("stream_opened")
        assert lease_doc(client, DATABASE)["term"] == 2
        for stage in first["stages"]:
            jobs.update_one({"_id": first["_id"]}, {"$inc": {f"stages.{stage}.completedItems": 4}})
        wait(
            lambda: (jobs.find_one({"_id": first["_id"]}) or {}).get("status") == "Completed",
            "the new leader to complete the job",
        )
        wait(lambda: lease_doc(client, DATABASE).get("tokenTerm") == 2, "a position saved by term 2")
        saved_by_b = lease_doc(client, DATABASE)["token"]
        a.resume()  # SIGCONT: whatever it tries now is fenced, and it stops
        lost = a.wait_logged("leadership_lost", partition=0)
        assert lost["term"] == 1 and lost["level"] == "WARNING"
        wait(
            lambda: a.held() == [] and a.sample("jobwatch_leadership_changes_total", change="lost") == 1,
            "a back to standby",
        )
        assert a.process.poll() is None and a.ready()  # still running, standing by
        doc = lease_doc(client, DATABASE)
        assert doc["holder"] == b.instance and doc["term"] == 2 and doc["tokenTerm"] == 2
        wait(
            lambda: lease_doc(client, DATABASE)["token"]["_data"] >= saved_by_b["_data"],
            "b's position, never an older one",
        )
    finally:
        for instance in (a, b):
            if instance is not None:
                instance.close()
        witness.close()
    saved = witness.check_positions()  # a's stale saves never landed: no term 1 after term 2
    assert {term for _, term in saved} == {1, 2}


# -- partitions -------------------------------------------------------------------------


@pytest.fixture
def hashing(client: MongoClient[dict[str, Any]]) -> None:
    """Partitions need MongoDB's $toHashedIndexKey on the server, with MongoDB's values."""
    client[DATABASE].probe.insert_one({})
    try:
        found = next(client[DATABASE].probe.aggregate([{"$project": {"h": {"$toHashedIndexKey": PROBE_VALUE}}}]))["h"]
    except OperationFailure as exc:
        pytest.skip(f"the embedded server has no $toHashedIndexKey yet ({exc.code}): partitions cannot be split here")
    assert found == PROBE_HASH


def partition_of(client: MongoClient[dict[str, Any]], job_id: Any, count: int) -> int:
    doc = next(
        client[DATABASE].probe.aggregate(
            [
                {"$limit": 1},
                {"$project": {"k": {"$abs": {"$mod": [{"$toHashedIndexKey": {"$literal": job_id}}, count]}}}},
            ]
        )
    )
    return int(doc["k"])


def holders(instances: list[Instance]) -> dict[int, list[str]]:
    seen: dict[int, list[str]] = {}
    for instance in instances:
        for partition in instance.held():
            seen.setdefault(partition, []).append(instance.log_path.stem)
    return seen


def test_three_instances_split_three_partitions_and_each_event_is_read_once(
    server: ServerProcess, client: MongoClient[dict[str, Any]], tmp_path: Path, hashing: None
) -> None:
    witness = Witness(client, DATABASE)
    instances = [start(server, tmp_path, name, partitions=3) for name in ("a", "b", "c")]
    jobs = client[DATABASE].background_jobs
    try:
        wait(
            lambda: (
                sorted(holders(instances)) == [0, 1, 2]
                and all(len(v) == 1 for v in holders(instances).values())
                and all(len(i.held()) == 1 for i in instances)
            ),
            "each instance to hold one partition",
        )
        before = sum(i.events_received() for i in instances)
        seen_before = witness.job_events()
        docs = [new_job() for _ in range(30)]
        jobs.insert_many(docs)
        ids = [d["_id"] for d in docs]
        for doc in docs:
            for stage in doc["stages"]:
                jobs.update_one({"_id": doc["_id"]}, {"$inc": {f"stages.{stage}.completedItems": 4}})
        wait(
            lambda: jobs.count_documents({"_id": {"$in": ids}, "status": "Completed"}) == len(ids),
            "every job Completed",
        )
        # One marker job per partition, inserted last: once each instance read its marker, it read every earlier event.
        markers: dict[int, dict[str, Any]] = {}
        while len(markers) < 3:
            marker = {**new_job(), "stages": {}, "jobType": "test-marker"}
            markers.setdefault(partition_of(client, marker["_id"], 3), marker)
        jobs.insert_many(list(markers.values()))
        wait(
            lambda: witness.job_events() - seen_before >= len(markers) + len(ids) * 3, "the witness to see every event"
        )
        wait(
            lambda: (
                all(i.sample("jobwatch_pending_jobs") == 0 for i in instances)
                and sum(i.events_received() for i in instances) - before >= witness.job_events() - seen_before
            ),
            "every event read",
        )
        assert (
            sum(i.events_received() for i in instances) - before == witness.job_events() - seen_before
        )  # each exactly once
        witness.check_jobs(ids)
        # Kill one: its partition is taken over once its lease runs out.
        victim = instances.pop(1)
        orphan = victim.held()[0]
        victim.signal(signal.SIGKILL)
        victim.wait_exit()
        wait(
            lambda: orphan in holders(instances) and sorted(holders(instances)) == [0, 1, 2],
            "the orphan partition taken over",
        )
        assert all(len(v) == 1 for v in holders(instances).values())
    finally:
        for instance in instances:
            instance.close()
        witness.close()
    for partition in range(3):
        witness.check_positions(f"default:{partition}/3")


def test_one_instance_then_two_more_balance_within_a_few_rounds(
    server: ServerProcess, client: MongoClient[dict[str, Any]], tmp_path: Path, hashing: None
) -> None:
    instances = [start(server, tmp_path, "first", partitions=3)]
    try:
        wait(lambda: instances[0].held() == [0, 1, 2], "one instance to hold every partition")
        instances += [start(server, tmp_path, name, partitions=3) for name in ("second", "third")]
        wait(lambda: all(i.ready() for i in instances), "the newcomers to join")
        joined_at = time.monotonic()
        wait(lambda: sorted(len(i.held()) for i in instances) == [1, 1, 1], "one partition each")
        print(f"\nbalanced {time.monotonic() - joined_at:.1f}s after the newcomers joined (renew_s {RENEW_S:g}s)")
        handed = instances[0].logged("leadership_released")
        assert len(handed) == 2 and all(
            h["reason"] == "rebalance" for h in handed
        )  # handed over in order: saved, released
    finally:
        for instance in instances:
            instance.close()
