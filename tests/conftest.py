"""Test configuration shared by every tier.

Async tests run on anyio's asyncio backend only (PyMongo's async API is
asyncio-only). Integration tests get a MongoDB from ``tests/support/backends``;
the chosen backend is printed in the session header, or, when the tests run
in several worker processes (pytest-xdist, as ``./dev test`` runs them), at
the end with the session's figures, which each worker counts for its share.
"""

from __future__ import annotations

import gc
import inspect
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import backend_figures, backends
from tests.unit.rules import figures as rules_figures

INTEGRATION = Path(__file__).parent / "integration"
_server: backends.Server | None = None


def _session_server() -> backends.Server:
    global _server
    if _server is None:
        _server = backends.resolve()
    return _server


#: The closing figures the docs quote: each a counter the tests add to, and how it reads.
FIGURES: dict[str, tuple[Counter[str], Callable[[], str | None]]] = {
    "rules figures": (rules_figures.SEEN, rules_figures.summary),
    "reliability figures": (backend_figures.SEEN, backend_figures.summary),
}
#: Under xdist, on the controller: the backend each worker used.
_worker_backends: set[str] = set()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _has_workers(config: pytest.Config) -> bool:
    return not _is_worker(config) and bool(getattr(config.option, "numprocesses", None))


def pytest_report_header(config: pytest.Config) -> str:
    if _has_workers(config):  # the controller runs no test: it would start a backend for nothing
        return "mongodb backend: chosen by each test worker (named at the end)"
    wanted = (
        any(str(arg).startswith(("tests/integration", "tests/e2e")) or arg in ("tests", ".") for arg in config.args)
        or not config.args
    )
    if not wanted:
        return "mongodb backend: not needed"
    server = _session_server()
    return f"mongodb backend: {server.kind} ({server.detail})"


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _server is not None:
        _server.close()
    if _is_worker(session.config):  # handed to the controller (pytest_testnodedown)
        output: dict[str, Any] = session.config.workeroutput  # type: ignore[attr-defined]
        output["backend"] = None if _server is None else f"{_server.kind} ({_server.detail})"
        output["figures"] = {name: dict(counter) for name, (counter, _) in FIGURES.items()}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the controller, as each worker ends: its backend and its counts."""
    output = getattr(node, "workeroutput", {})
    if output.get("backend"):
        _worker_backends.add(output["backend"])
    for name, counts in output.get("figures", {}).items():
        FIGURES[name][0].update(counts)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name, (_, summary) in FIGURES.items():
        line = summary()
        if line is not None:
            terminalreporter.write_sep("-", name)
            terminalreporter.write_line(line)
    for backend in sorted(_worker_backends):
        terminalreporter.write_line(f"mongodb backend: {backend}")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Module | pytest.Class, name: str, obj: object) -> None:
    # Mark coroutine tests for anyio before they are parametrized (a mark added
    # later would miss anyio's own parametrization of the backend).
    if collector.funcnamefilter(name) and inspect.iscoroutinefunction(obj):
        pytest.mark.anyio(obj)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_collection_finish(session: pytest.Session) -> None:
    """What exists once the tests are collected (every module imported: the
    driver, hypothesis, the embedded engine's tens of thousands of objects)
    lives for the whole session: moved out of the collector's sight, so the
    full collection after each test (below) scans only what tests make. It
    cost about a quarter of a second per test, more than most tests take."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _garbage_collected_in_the_test_that_made_it() -> Iterator[None]:
    """A socket a test leaves behind is reported (ResourceWarning, an error
    here) when the collector frees it, which, left to chance, happens during
    some later test, unrelated and then flaky. Collecting as each test ends
    keeps the warning in the test that owns it."""
    yield
    gc.collect()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[backends.Server]:
    server = _session_server()
    if not server.available:
        pytest.skip(server.detail)
    yield server


@pytest.fixture
async def mongo(mongo_server: backends.Server) -> AsyncIterator[backends.Backend]:
    async with backends.connect(mongo_server) as backend:
        yield backend


def embedded_differs(reason: str) -> pytest.MarkDecorator:
    """Mark a test whose outcome depends on where the embedded engine differs
    from MongoDB; the reason is also in the table of differences of
    docs/explanation/embedded-server.md."""
    return pytest.mark.embedded_differs(reason=reason)
