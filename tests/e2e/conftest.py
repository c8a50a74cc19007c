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


@pytest.fixture
def cli_mongo(mongo_server: Server) -> Iterator[CliMongo]:
    database = f"jw_{uuid.uuid4().hex[:12]}"
    if mongo_server.is_embedded:
        with embedded_server() as server:
            client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
            yield CliMongo(server.uri, database, client)
            client.close()
        return
    assert mongo_server.uri is not None
    client = MongoClient(mongo_server.uri)
    yield CliMongo(mongo_server.uri, database, client)
    client.drop_database(database)
    client.close()
