from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import MongoClient

from tests.support.backends import Server
from tests.support.served import embedded_server


@dataclass
class CliMongo:
    uri: str
    database: str
    client: MongoClient[dict[str, Any]]

    @property
    def db(self) -> Any:
        return self.client[self.database]

    def args(self, *extra: str) -> list[str]:
        port = ["--health-port", "0"] if extra[:1] == ("run",) else []  # only run serves /metrics
        return [*extra, "--uri", self.uri, "--database", self.database, *port]


@pytest.fixture(scope="module")
def cli_server_uri(mongo_server: Server) -> Iterator[str]:
    """One server for a module's command tests (each test has a database of
    its own): the embedded server as a process, or the suite's MongoDB."""
    if mongo_server.is_embedded:
        with embedded_server() as server:
            yield server.uri
        return
    assert mongo_server.uri is not None
    yield mongo_server.uri


@pytest.fixture
def cli_mongo(cli_server_uri: str) -> Iterator[CliMongo]:
    database = f"jw_{uuid.uuid4().hex[:12]}"
    client: MongoClient[dict[str, Any]] = MongoClient(cli_server_uri)
    try:
        yield CliMongo(cli_server_uri, database, client)
    finally:
        client.drop_database(database)
        client.close()
