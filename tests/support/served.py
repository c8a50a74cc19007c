"""``jobwatch embedded-server`` as a real process, for tests that need a URI
(the CLI, ``jobwatch run`` as a subprocess)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 60


@dataclass
class ServerProcess:
    uri: str
    port: int
    process: subprocess.Popen[str]

    def stop(self) -> int:
        """SIGTERM, then the exit code (the server flushes its journal first)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=START_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def free_port() -> int:
    """A port nothing listens on now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def embedded_server(*, port: int = 0, data_dir: Path | None = None) -> Iterator[ServerProcess]:
    argv = [sys.executable, "-m", "watcher", "embedded-server", "--port", str(port)]
    if data_dir is not None:
        argv += ["--data", str(data_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    # JOBWATCH_SERVER_LOG: where the server's own log goes (appended), to see why a run failed.
    with open(os.environ.get("JOBWATCH_SERVER_LOG") or os.devnull, "a") as log:  # the child holds its own descriptor
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=ROOT)
    try:
        assert process.stdout is not None
        uri = process.stdout.readline().strip()  # the first line: its connection string
        if not uri.startswith("mongodb://"):
            raise RuntimeError(f"embedded-server did not start (first line {uri!r}, exit {process.poll()})")
        served_port = int(uri.split(":")[2].split("/")[0])
        yield ServerProcess(uri, served_port, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=START_DEADLINE_S)
        if process.stdout is not None:
            process.stdout.close()
