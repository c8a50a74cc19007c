"""The server as drivers and tools see it first: a one-member replica set
named ``rs0`` (``--replica-set`` to change it) running MongoDB 7.0, whose
printed URI works as it is, and the commands tools send before anything else."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from bson import Timestamp
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import OperationFailure

MONGODB_7_WIRE_VERSION = 21


async def test_hello_presents_a_replica_set_primary(served: Any, client: AsyncMongoClient[dict[str, Any]]) -> None:
    hello = await client.admin.command("hello")
    me = f"127.0.0.1:{served.port}"
    assert hello["setName"] == "rs0" and hello["isWritablePrimary"] is True and hello["secondary"] is False
    assert hello["hosts"] == [me] and hello["primary"] == me and hello["me"] == me
    assert hello["maxWireVersion"] == MONGODB_7_WIRE_VERSION
    assert isinstance(hello["lastWrite"]["opTime"]["ts"], Timestamp)
    legacy = await client.admin.command("isMaster")
    assert legacy["ismaster"] is True and legacy["setName"] == "rs0"


async def test_the_printed_uri_and_the_usual_default_work_as_they_are(served: Any) -> None:
    assert served.uri == f"mongodb://127.0.0.1:{served.port}/?replicaSet=rs0"
    for uri in (served.uri, f"mongodb://localhost:{served.port}/?replicaSet=rs0"):
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
        assert (await mongo.admin.command("ping"))["ok"] == 1.0
        await mongo.close()
    wrong: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{served.port}/?replicaSet=other", serverSelectionTimeoutMS=500
    )
    with pytest.raises(Exception, match="other"):  # the driver names the set it did not find
        await wrong.admin.command("ping")
    await wrong.close()


async def test_the_commands_tools_send_first(client: AsyncMongoClient[dict[str, Any]]) -> None:
    info = await client.server_info()  # lowercase buildinfo
    assert info["version"].startswith("7.0") and info["versionArray"][:2] == [7, 0]
    everything = await client.admin.command("getParameter", "*")
    assert everything["enableTestCommands"] is True
    assert everything["featureCompatibilityVersion"] == {"version": "7.0"}
    one = await client.admin.command({"getParameter": 1, "featureCompatibilityVersion": 1})
    assert set(one) - {"$clusterTime", "operationTime"} == {"featureCompatibilityVersion", "ok"}
    with pytest.raises(OperationFailure) as unknown:
        await client.admin.command({"getParameter": 1, "noSuchParameter": 1})
    assert unknown.value.code == 72 and "no option found to get" in str(unknown.value)
    status = await client.admin.command("replSetGetStatus")
    assert status["set"] == "rs0" and status["myState"] == 1
    [member] = status["members"]
    assert (
        member["stateStr"] == "PRIMARY"
        and member["self"] is True
        and isinstance(member["optimeDate"], datetime.datetime)
    )
    assert (await client.admin.command("killAllSessions", []))["ok"] == 1.0


async def test_coll_mod(client: AsyncMongoClient[dict[str, Any]]) -> None:
    await client.db.create_collection("jobs")
    assert (await client.db.command({"collMod": "jobs"}))["ok"] == 1.0
    assert (await client.db.command({"collMod": "jobs", "changeStreamPreAndPostImages": {"enabled": True}}))[
        "ok"
    ] == 1.0
    with pytest.raises(OperationFailure) as missing:
        await client.db.command({"collMod": "nothere", "changeStreamPreAndPostImages": {"enabled": True}})
    assert missing.value.code == 26  # NamespaceNotFound
    with pytest.raises(OperationFailure) as unsupported:
        await client.db.command({"collMod": "jobs", "validator": {"a": 1}})
    assert unsupported.value.code == 72 and "not supported by the embedded server" in str(unsupported.value)


def test_replica_set_option_of_the_server_process(serving: Any) -> None:
    with serving("--replica-set", "jobs-test") as running:
        assert running.uri.endswith("/?replicaSet=jobs-test")
        mongo: MongoClient[dict[str, Any]] = MongoClient(running.uri, serverSelectionTimeoutMS=5000)
        assert mongo.admin.command("hello")["setName"] == "jobs-test"
        mongo.close()
        assert running.stop() == 0


def test_a_client_with_credentials_gets_authentication_failed(serving: Any) -> None:
    """The server has no users: MongoDB's answer to unknown credentials (18), not an unknown command."""
    with serving() as running:
        uri = running.uri.replace("mongodb://", "mongodb://someone:secret@", 1)
        with (
            MongoClient[dict[str, Any]](uri, serverSelectionTimeoutMS=5000) as mongo,
            pytest.raises(OperationFailure) as caught,
        ):
            mongo.admin.command("ping")
        assert caught.value.code == 18
        assert caught.value.details is not None and caught.value.details["codeName"] == "AuthenticationFailed"
