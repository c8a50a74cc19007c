"""Test configuration of the embedded server's own tests (they need nothing
from jobwatch): async tests on anyio's asyncio backend, a server per test
started in the test's event loop, and a PyMongo client on it."""

from __future__ import annotations

import gc
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip("mongoeco", reason="needs the embedded server's engine (pip install ./embedded, Python >= 3.13)")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
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
