"""SIGINT and SIGTERM obeyed from the first instruction: while the server
cannot be reached during start-up (no 30 s wait), while the modules load,
in a one-shot command; logged; SIGINT exits 130, SIGTERM 0."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e.test_processes import ROOT, env

#: The server-selection timeout of the runs below: a run that ignored the
#: signal would end only after it, with exit code 3.
SELECTION_MS = 60_000
DEADLINE_S = 30.0


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A jobwatch process whose stderr is read as it comes."""

    def __init__(self, argv: list[str], python_flags: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *python_flags, "-m", "watcher", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, needle: str) -> None:
        end = time.monotonic() + DEADLINE_S
        while not any(needle in line for line in list(self.lines)):
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before {needle!r}: {self.lines[-5:]}"
            assert time.monotonic() < end, f"no {needle!r} on stderr within {DEADLINE_S}s: {self.lines[-5:]}"
            time.sleep(0.01)

    def stop(self, signum: int) -> int:
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=DEADLINE_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code

    def actions(self) -> list[str]:
        return [json.loads(line).get("action") for line in self.lines if line.startswith("{")]


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()
        if process.proc.stderr is not None and not process.proc.stderr.closed:
            process._reader.join(timeout=5)
            process.proc.stderr.close()


EXPECTED = {signal.SIGINT: 130, signal.SIGTERM: 0}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", ["run", "status"])
def test_a_signal_while_the_server_cannot_be_reached(
    closed_port: int, processes: list[Process], signum: signal.Signals, command: str
) -> None:
    uri = f"mongodb://127.0.0.1:{closed_port}/?directConnection=true"
    argv = [command, "--uri", uri, "--server-selection-timeout-ms", str(SELECTION_MS), "--log-json"]
    process = Process([*argv, *(["--health-port", "0"] if command == "run" else [])])
    processes.append(process)
    process.wait_for_line('"server_waiting"')  # in start-up, waiting for a server that is not there
    code = process.stop(signum)
    assert code == EXPECTED[signum], process.lines[-5:]  # not 3 after the selection timeout, not killed
    assert "signal_received" in process.actions()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_modules_load(closed_port: int, processes: list[Process], signum: signal.Signals) -> None:
    """``-X importtime`` says when each module is loaded: once the handlers'
    module is, the handlers are installed and the heavy imports follow."""
    uri = f"mongodb://127.0.0.1:{closed_port}/?directConnection=true"
    argv = ["status", "--uri", uri, "--server-selection-timeout-ms", str(SELECTION_MS)]
    process = Process(argv, ("-X", "importtime"))
    processes.append(process)
    process.wait_for_line("watcher.cli.interrupts")
    code = process.stop(signum)
    assert code == EXPECTED[signum], process.lines[-5:]
    said = [line for line in process.lines if "interrupted" in line and signal.Signals(signum).name in line]
    assert said, process.lines[-5:]


def test_sigterm_after_the_server_went_away_stops_within_the_shutdown_deadline(processes: list[Process]) -> None:
    """A running watcher whose server died stops on SIGTERM with 0 within its
    shutdown deadline, not after a server-selection timeout: the driver ends
    its sessions on the server as the client closes, and a gone server would
    hold that close for all of ``server_selection_timeout_ms`` (60 s here)."""
    from tests.support.served import embedded_server

    with embedded_server() as server:
        argv = ["run", "--uri", server.uri, "--server-selection-timeout-ms", str(SELECTION_MS), "--log-json"]
        process = Process([*argv, "--health-port", "0", "--shutdown-deadline-s", "2"])
        processes.append(process)
        process.wait_for_line('"watcher_started"')
        server.process.kill()
        server.process.wait(timeout=DEADLINE_S)
    code = process.stop(signal.SIGTERM)  # within DEADLINE_S (30 s), or the test fails
    assert code == 0, process.lines[-5:]
    assert "watcher_stopped" in process.actions()
