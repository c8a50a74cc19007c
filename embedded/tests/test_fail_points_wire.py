"""``configureFailPoint`` fires where MongoDB's does: ``failCommand`` on every
command (change-stream cursors and the engine's alike) and
``failGetMoreAfterCursorCheckout``; the errors carry MongoDB's labels, and
the real driver resumes or not as it would against MongoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson import Int64
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import AutoReconnect, OperationFailure

from streams import fails, next_event


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def watched(served: Any) -> AsyncIterator[tuple[AsyncMongoClient[dict[str, Any]], Commands]]:
    """A client whose commands are recorded (the stream's), beside ``client``."""
    listener = Commands()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(served.uri, event_listeners=[listener])
    yield mongo, listener
    await mongo.close()


async def fail(client: AsyncMongoClient[dict[str, Any]], name: str, mode: Any, **data: Any) -> dict[str, Any]:
    reply: dict[str, Any] = await client.admin.command({"configureFailPoint": name, "mode": mode, "data": data})
    return reply


async def test_fail_command_on_a_change_stream_get_more(client: Any, watched: Any) -> None:
    """MongoDB fails the getMore before it has its cursor: no resumable label,
    so the driver gives the error to the application (ElectionInProgress)."""
    mongo, _ = watched
    stream = await mongo.db.jobs.watch(max_await_time_ms=100)
    await fail(client, "failCommand", {"times": 1}, failCommands=["getMore"], errorCode=216)
    await client.db.jobs.insert_one({"_id": 1})
    error = await fails(stream)
    assert error.code == 216
    assert error.details is not None
    assert error.details["codeName"] == "ElectionInProgress"
    assert error.details["errmsg"] == "Failing command via 'failCommand' failpoint"
    assert "errorLabels" not in error.details
    await stream.close()


async def test_fail_command_labels_and_times(client: Any, watched: Any) -> None:
    """``errorLabels`` replace MongoDB's; ``times`` counts matching commands only."""
    mongo, listener = watched
    stream = await mongo.db.jobs.watch(max_await_time_ms=100)
    await fail(
        client,
        "failCommand",
        {"times": 1},
        failCommands=["getMore"],
        errorCode=50,
        errorLabels=["ResumableChangeStreamError"],
    )
    await client.db.other.insert_one({"_id": "not a getMore: does not count"})
    await client.db.jobs.insert_one({"_id": 1})
    assert (await next_event(stream))["documentKey"] == {"_id": 1}  # resumed after the labelled error
    aggregates = [command for name, command in listener.sent if name == "aggregate"]
    assert len(aggregates) == 2 and "resumeAfter" in aggregates[1]["pipeline"][0]["$changeStream"]
    await stream.close()


async def test_get_more_after_checkout_is_resumable_and_closes_the_cursor(client: Any, watched: Any) -> None:
    """HostUnreachable once the getMore has its change-stream cursor: MongoDB
    labels it ResumableChangeStreamError and kills the cursor; the driver
    resumes from its token and misses nothing."""
    mongo, listener = watched
    db = client.db
    opened = await db.command({"aggregate": "jobs", "pipeline": [{"$changeStream": {}}], "cursor": {}})
    await fail(client, "failGetMoreAfterCursorCheckout", {"times": 1}, errorCode=6)
    with pytest.raises(OperationFailure) as caught:
        await db.command({"getMore": Int64(opened["cursor"]["id"]), "collection": "jobs", "maxTimeMS": 100})
    assert caught.value.code == 6 and caught.value.has_error_label("ResumableChangeStreamError")
    assert (
        caught.value.details is not None
        and caught.value.details["errmsg"] == "Hit the 'failGetMoreAfterCursorCheckout' failpoint"
    )
    with pytest.raises(OperationFailure) as gone:
        await db.command({"getMore": opened["cursor"]["id"], "collection": "jobs", "maxTimeMS": 100})
    assert gone.value.code == 43

    stream = await mongo.db.jobs.watch(max_await_time_ms=100)
    await fail(client, "failGetMoreAfterCursorCheckout", {"times": 1}, errorCode=6)
    await client.db.jobs.insert_many([{"_id": 1}, {"_id": 2}])
    assert [(await next_event(stream))["documentKey"]["_id"] for _ in range(2)] == [1, 2]
    assert listener.names().count("aggregate") == 2
    await stream.close()


async def test_close_connection_and_the_driver_resumes(client: Any, watched: Any) -> None:
    mongo, listener = watched
    stream = await mongo.db.jobs.watch(max_await_time_ms=100, batch_size=1)
    await fail(client, "failCommand", {"times": 2}, failCommands=["getMore"], closeConnection=True)
    await client.db.jobs.insert_many([{"_id": i} for i in range(3)])
    assert [(await next_event(stream))["documentKey"]["_id"] for _ in range(3)] == [0, 1, 2]
    assert listener.names().count("aggregate") == 3  # the first, then one per closed connection
    await stream.close()


async def test_fail_command_fires_on_the_engines_own_cursors(client: Any) -> None:
    """An ordinary find cursor's getMore fails too, and an aggregate with
    $changeStream gets the resumable label (MongoDB has parsed it then)."""
    await client.db.jobs.insert_many([{"_id": i} for i in range(5)])
    await fail(client, "failCommand", {"times": 1}, failCommands=["getMore"], errorCode=262)
    with pytest.raises(OperationFailure) as caught:
        [doc async for doc in client.db.jobs.find(batch_size=2)]
    assert caught.value.code == 262 and not caught.value.has_error_label("ResumableChangeStreamError")
    await fail(client, "failCommand", {"times": 1}, failCommands=["aggregate"], errorCode=262)
    with pytest.raises(OperationFailure) as labelled:
        await client.db.command({"aggregate": "jobs", "pipeline": [{"$changeStream": {}}], "cursor": {}})
    assert labelled.value.has_error_label("ResumableChangeStreamError")
    await fail(client, "failCommand", "alwaysOn", failCommands=["find"], errorCode=2, appName="someone else")
    assert len([doc async for doc in client.db.jobs.find()]) == 5  # another client's fail point


async def test_close_connection_reaches_the_driver_as_a_network_error(client: Any, served: Any) -> None:
    other: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(served.uri, retryReads=False)
    await fail(client, "failCommand", {"times": 1}, failCommands=["find"], closeConnection=True)
    with pytest.raises(AutoReconnect):
        await other.db.jobs.find_one({})
    assert await other.db.jobs.find_one({}) is None  # once only
    await other.close()


async def test_configure_fail_point_answers_as_mongodb(client: Any) -> None:
    first = await fail(client, "failCommand", {"times": 2}, failCommands=["ping"], errorCode=2)
    assert first["ok"] == 1.0 and first["count"] == 0
    with pytest.raises(OperationFailure):
        await client.db.command("ping")
    off = await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert off["count"] == 1  # activations so far
    assert (await client.db.command("ping"))["ok"] == 1.0
    with pytest.raises(OperationFailure) as unknown:
        await client.admin.command({"configureFailPoint": "noSuchFailPoint", "mode": "alwaysOn"})
    assert unknown.value.code == 266  # FailPointSetFailed
    with pytest.raises(OperationFailure) as not_admin:
        await client.db.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert not_admin.value.code == 13
