"""Several ``jobwatch run`` processes on one server, as an operator runs
replicas: start, kill -9, SIGTERM, SIGSTOP/SIGCONT, read each one's JSON log
and /metrics. Shared by ``tests/e2e/test_replicas.py`` and
``bench/takeover.py`` (the takeover figures in the docs).

Also: an independent change stream over the jobs and the positions (the
test's own witness: completedAt written once per job, no status or counter
going back, the saved token never going back), and the takeover time of a
standby, from the signal to the ``stream_opened`` line of the new leader's
log (both on this host's clock).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from tests.support.served import free_port

ROOT = Path(__file__).resolve().parents[2]
#: Time for a process to start, or a condition to hold, on a busy machine.
ALLOWANCE_S = 60.0


def skewed_clock_env(directory: Path, offset_s: float) -> dict[str, str]:
    """Environment for a process whose wall clock (``time.time``) is
    ``offset_s`` off: jobwatch must not care (only the server's clock and
    each process's own monotonic durations matter)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(
        textwrap.dedent(f"""\
        import time
        _time, _time_ns = time.time, time.time_ns
        time.time = lambda: _time() + {offset_s!r}
        time.time_ns = lambda: _time_ns() + {int(offset_s * 1e9)!r}
        """)
    )
    return {"PYTHONPATH": f"{directory}{os.pathsep}{ROOT}"}


class Instance:
    """One ``jobwatch run`` process; its JSON log in a file."""

    def __init__(
        self, uri: str, database: str, log_path: Path, *, settings: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "watcher",
            "run",
            "--uri",
            uri,
            "--database",
            database,
            "--health-port",
            str(self.port),
            "--log-json",
        ]
        for name, value in settings.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        environment = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **(env or {})}
        self._log = log_path.open("w")
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._log, env=environment, cwd=ROOT)
        self.paused = False

    # -- its log --------------------------------------------------------------

    def actions(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]

    def logged(self, action: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            a for a in self.actions() if a.get("action") == action and all(a.get(k) == v for k, v in fields.items())
        ]

    def wait_logged(self, action: str, *, deadline_s: float = ALLOWANCE_S, **fields: Any) -> dict[str, Any]:
        end = time.monotonic() + deadline_s
        while not (found := self.logged(action, **fields)):
            assert self.process.poll() is None or action in ("watcher_stopped",), self.log_path.read_text()[-3000:]
            assert time.monotonic() < end, f"{self.log_path.name}: no {action} {fields} within {deadline_s}s"
            time.sleep(0.02)
        return found[0]

    @property
    def instance(self) -> str:
        return str(self.wait_logged("watcher_starting")["instance"])

    # -- its metrics ------------------------------------------------------------

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        self.wait_logged("health_listening")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def ready(self) -> bool:
        self.wait_logged("health_listening")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def events_received(self) -> float:
        return sum(v for (name, _), v in self.metrics().items() if name == "jobwatch_events_received_total")

    def held(self) -> list[int]:
        return sorted(
            int(dict(labels)["partition"])
            for (name, labels), v in self.metrics().items()
            if name == "jobwatch_leader" and v == 1
        )

    # -- signals ------------------------------------------------------------------

    def signal(self, signum: int) -> float:
        """Send ``signum``; the wall time it was sent (for takeover times)."""
        sent_at = time.time()
        self.process.send_signal(signum)
        return sent_at

    def wait_exit(self) -> int:
        code = self.process.wait(timeout=ALLOWANCE_S)
        self._log.close()
        return code

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        if self.process.poll() is None:
            if self.paused:
                self.resume()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=ALLOWANCE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=ALLOWANCE_S)
        self._log.close()


def log_time(action: dict[str, Any]) -> float:
    """A log line's wall time (this host's clock, as the test's own)."""
    return dt.datetime.fromisoformat(action["time"]).timestamp()


def all_completed(jobs: Any, ids: list[Any]) -> bool:
    return int(jobs.count_documents({"_id": {"$in": ids}, "status": "Completed"})) == len(ids)


def wait(predicate: Callable[[], bool], what: str, deadline_s: float = ALLOWANCE_S) -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < end, f"timed out after {deadline_s}s waiting for {what}"
        time.sleep(0.05)


def takeover_s(new_leader: Instance, since: float, partition: int = 0) -> float:
    """From ``since`` (a wall time) to the new leader's stream opening for ``partition``."""
    acquired = new_leader.wait_logged("leadership_acquired", partition=partition)
    opened = [a for a in new_leader.logged("stream_opened") if log_time(a) >= log_time(acquired)]
    end = time.monotonic() + ALLOWANCE_S
    while not opened:
        assert time.monotonic() < end, f"{new_leader.log_path.name}: no stream opened after leadership_acquired"
        time.sleep(0.02)
        opened = [a for a in new_leader.logged("stream_opened") if log_time(a) >= log_time(acquired)]
    return log_time(opened[0]) - since


@dataclass
class Witness:
    """Every change to the jobs and to the positions, read by the driver's own
    change streams in threads of this process."""

    client: MongoClient[dict[str, Any]]
    database: str
    jobs: list[dict[str, Any]] = field(default_factory=list)
    positions: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        db = self.client[self.database]
        self._streams = [
            (db.background_jobs.watch(max_await_time_ms=100), self.jobs),
            (db.jobwatch_positions.watch(max_await_time_ms=100), self.positions),
        ]
        self._threads = [threading.Thread(target=self._read, args=pair, daemon=True) for pair in self._streams]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, into: list[dict[str, Any]]) -> None:
        while not self._stop.is_set():
            event = stream.try_next()
            if event is not None:
                into.append(event)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=ALLOWANCE_S)
        for stream, _ in self._streams:
            stream.close()

    def job_events(self) -> int:
        return sum(1 for e in self.jobs if e["operationType"] in ("insert", "update", "replace"))

    def check_jobs(self, ids: Iterable[Any]) -> None:
        """completedAt once per job; no status back from Completed; no counter down."""
        completed_at: dict[Any, int] = defaultdict(int)
        statuses: dict[tuple[Any, str], list[str]] = defaultdict(list)
        counters: dict[tuple[Any, str], list[int]] = defaultdict(list)
        for event in self.jobs:
            if event["operationType"] != "update":
                continue
            job_id = event["documentKey"]["_id"]
            for name, value in event["updateDescription"]["updatedFields"].items():
                if name == "completedAt":
                    completed_at[job_id] += 1
                elif name == "status" or name.endswith(".status"):
                    statuses[(job_id, name)].append(value)
                elif name.endswith(".completedItems"):
                    counters[(job_id, name)].append(value)
        ids = list(ids)
        assert all(completed_at[job_id] == 1 for job_id in ids), {
            str(k): completed_at[k] for k in ids if completed_at[k] != 1
        }
        for key, values in statuses.items():
            if "Completed" in values:
                assert set(values[values.index("Completed") :]) == {"Completed"}, (key, values)
        for key, counts in counters.items():
            assert counts == sorted(counts), (key, counts)

    def saved_tokens(self, doc_id: str = "default") -> list[tuple[str, Any]]:
        """Every token saved in ``doc_id``, in order, with the term that saved it."""
        saved: list[tuple[str, Any]] = []
        token, term = None, None
        for event in self.positions:
            if event["operationType"] not in ("update", "insert") or event["documentKey"]["_id"] != doc_id:
                continue
            fields = (
                event["updateDescription"]["updatedFields"]
                if event["operationType"] == "update"
                else event["fullDocument"]
            )
            if (
                "token" in fields or "tokenTerm" in fields
            ):  # a save of the same token by a new term changes the term only
                token = fields["token"]["_data"] if "token" in fields else token
                term = fields.get("tokenTerm", term)
                saved.append((str(token), term))
        return saved

    def check_positions(self, doc_id: str = "default") -> list[tuple[str, Any]]:
        """The saved token never goes back, and never comes from an older term.
        (Tokens compare by ``_data``: MongoDB's hex-encoded ones sort in stream
        order, and so do the embedded server's.)"""
        saved = self.saved_tokens(doc_id)
        tokens = [token for token, _ in saved]
        terms = [term for _, term in saved]
        assert tokens == sorted(tokens), tokens
        assert terms == sorted(terms), terms
        return saved


def lease_doc(client: MongoClient[dict[str, Any]], database: str, doc_id: str = "default") -> dict[str, Any]:
    return client[database].jobwatch_positions.find_one({"_id": doc_id}) or {}


def first_to_take_over(candidates: list[Instance], since: float, partition: int = 0) -> tuple[Instance, float]:
    """Whichever of ``candidates`` takes ``partition`` over first, and how long
    it took from ``since`` to its stream opening."""
    end = time.monotonic() + ALLOWANCE_S
    while True:
        for candidate in candidates:
            acquired = [a for a in candidate.logged("leadership_acquired", partition=partition) if log_time(a) >= since]
            if acquired:
                return candidate, takeover_s(candidate, since, partition)
        assert time.monotonic() < end, "no standby took the partition over"
        time.sleep(0.02)


@dataclass
class Trial:
    signal: str
    takeover_s: float
    term_before: int
    term_after: int


class Burst(threading.Thread):
    """Consumers' increments over ``ids``, in a thread; ``reached`` is set at increment ``at``."""

    def __init__(self, jobs: Any, increments: list[tuple[Any, str]], at: int) -> None:
        super().__init__(daemon=True)
        self._jobs = jobs
        self._increments = increments
        self._at = at
        self.reached = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for index, (job_id, stage) in enumerate(self._increments):
                if index == self._at:
                    self.reached.set()
                self._jobs.update_one({"_id": job_id}, {"$inc": {f"stages.{stage}.completedItems": 1}})
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            self.error = exc
        finally:
            self.reached.set()


def takeover_trials(
    uri: str,
    database: str,
    workdir: Path,
    *,
    trials: int,
    signum: int,
    settings: dict[str, Any],
    new_job: Callable[[], dict[str, Any]],
    seed: int = 15,
    jobs_per_trial: int = 3,
) -> list[Trial]:
    """A leader and a standby; ``trials`` times: a burst of increments, the
    leader gets ``signum`` mid-burst, a fresh standby starts at once, and the
    takeover is timed. Checks every job ends Completed once, nothing goes back
    (jobs and saved tokens), and each takeover is one term more."""
    import random

    rng = random.Random(seed)
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    witness = Witness(client, database)
    jobs = client[database].background_jobs
    started = [Instance(uri, database, workdir / "instance-0.log", settings=settings)]
    results: list[Trial] = []
    all_ids: list[Any] = []
    try:
        leader = started[0]
        leader.wait_logged("stream_opened")
        standby = Instance(uri, database, workdir / "instance-1.log", settings=settings)
        started.append(standby)
        wait(standby.ready, "the standby to join")
        for trial in range(trials):
            docs = [new_job() for _ in range(jobs_per_trial)]
            jobs.insert_many(docs)
            ids = [d["_id"] for d in docs]
            all_ids += ids
            increments = [
                (d["_id"], stage)
                for d in docs
                for stage in d["stages"]
                for _ in range(d["stages"][stage]["totalItems"])
            ]
            rng.shuffle(increments)
            burst = Burst(jobs, increments, rng.randrange(len(increments)))
            term_before = int(lease_doc(client, database).get("term", 0))
            burst.start()
            burst.reached.wait(ALLOWANCE_S)
            sent_at = leader.signal(signum)
            replacement = Instance(uri, database, workdir / f"instance-{len(started)}.log", settings=settings)
            started.append(replacement)
            new_leader, seconds = first_to_take_over([standby, replacement], sent_at)
            code = leader.wait_exit()
            assert code == (-signal.SIGKILL if signum == signal.SIGKILL else 0), (
                code,
                leader.log_path.read_text()[-2000:],
            )
            burst.join(ALLOWANCE_S)
            assert burst.error is None, burst.error
            term_after = int(lease_doc(client, database).get("term", 0))
            results.append(Trial(signal.Signals(signum).name, round(seconds, 3), term_before, term_after))
            assert term_after == term_before + 1, results[-1]
            leader = new_leader
            standby = replacement if new_leader is standby else standby
            wait(functools.partial(all_completed, jobs, ids), f"trial {trial}: every job Completed")
            wait(standby.ready, "the new standby to join")
    finally:
        for instance in started:
            instance.close()
        witness.close()
        client_jobs = list(jobs.find({"_id": {"$in": all_ids}}))
        client.close()
    for doc in client_jobs:
        assert doc["status"] == "Completed" and doc["progress"] == 100, doc
    witness.check_jobs(all_ids)
    witness.check_positions()
    return results
