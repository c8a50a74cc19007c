"""A MockupDB server and a real PyMongo client connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from mockupdb import MockupDB
from pymongo import AsyncMongoClient

from tests.support import mockup


@pytest.fixture
def server() -> Iterator[MockupDB]:
    yield from mockup.running_server()


@pytest.fixture
async def client(server: MockupDB) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    c: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        server.uri, directConnection=True, serverSelectionTimeoutMS=5000
    )
    yield c
    await c.close()
