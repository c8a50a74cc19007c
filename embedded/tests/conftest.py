"""Test configuration of the embedded server's own tests (they need nothing
from jobwatch): async tests on anyio's asyncio backend, a server per test
started in the test's event loop and a PyMongo client on it, or the server
as a process of its own (``serving``)."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import inspect
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Where the server cannot be installed (Python < 3.13), its tests are not
# collected at all (the session header says so): each imports it.
INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("jobwatch_embedded", "mongoeco"))
if not INSTALLED:
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header(config: pytest.Config) -> str | None:
    if INSTALLED:
        return None
    return "embedded server tests: not collected (jobwatch-embedded needs Python >= 3.13: pip install ./embedded)"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Module | pytest.Class, name: str, obj: object) -> None:
    # Marked before anyio parametrizes the backend (a later mark would miss it).
    if collector.funcnamefilter(name) and inspect.iscoroutinefunction(obj):
        pytest.mark.anyio(obj)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # PyMongo's async API is asyncio-only


@pytest.fixture(autouse=True)
def _garbage_collected_in_the_test_that_made_it() -> Iterator[None]:
    """A leaked socket's ResourceWarning (an error here) is raised in the test
    that leaked it, not in whichever test the collector happens to run in."""
    yield
    gc.collect()


@pytest.fixture
async def served() -> AsyncIterator[Any]:
    from jobwatch_embedded import server

    async with server.start() as running:
        yield running


@pytest.fixture
async def client(served: Any) -> AsyncIterator[Any]:
    from pymongo import AsyncMongoClient

    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(served.uri)
    yield mongo
    await mongo.close()


@dataclass
class ServerProcess:
    """``python -m jobwatch_embedded`` running: its URI (the first line it printed)."""

    uri: str
    process: subprocess.Popen[str]

    def stop(self) -> int:
        """SIGTERM, then the exit code (the server records what it holds first)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=PROCESS_DEADLINE_S)


PROCESS_DEADLINE_S = 60


@contextlib.contextmanager
def server_process(*arguments: str) -> Iterator[ServerProcess]:
    argv = [sys.executable, "-m", "jobwatch_embedded", *arguments]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        uri = process.stdout.readline().strip()
        if not uri.startswith("mongodb://"):
            raise RuntimeError(f"the server did not start (first line {uri!r}, exit {process.poll()})")
        yield ServerProcess(uri, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=PROCESS_DEADLINE_S)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def serving() -> Callable[..., contextlib.AbstractContextManager[ServerProcess]]:
    """Start the server as a process of its own: ``with serving("--port", "0") as running``."""
    return server_process
