"""A change stream that falls out of the retained history fails, as MongoDB
fails one whose oplog entries were overwritten: its next getMore answers 286
ChangeStreamHistoryLost with the NonResumableChangeStreamError label, the
cursor is gone, and the server logs which cursor lost its place. It never
skips to the oldest retained change."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from loguru import logger
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from streams import DEADLINE_S, next_event

HISTORY_EVENTS = 5


@pytest.fixture
async def small_history() -> AsyncIterator[Any]:
    from jobwatch_embedded import server

    async with server.start(max_events=HISTORY_EVENTS) as running:
        yield running


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    sink = logger.add(
        lambda message: records.append(dict(message.record["extra"], text=message.record["message"])), level="WARNING"
    )
    yield records
    logger.remove(sink)


async def test_an_open_stream_that_falls_behind_gets_286(small_history: Any, logged: list[dict[str, Any]]) -> None:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(small_history.uri)
    db = mongo.db
    opened = await db.command({"aggregate": "jobs", "pipeline": [{"$changeStream": {}}], "cursor": {"batchSize": 1}})
    cursor_id = opened["cursor"]["id"]
    await db.jobs.insert_one({"_id": "first"})
    first = await db.command({"getMore": cursor_id, "collection": "jobs", "batchSize": 1, "maxTimeMS": 1000})
    assert [e["documentKey"] for e in first["cursor"]["nextBatch"]] == [{"_id": "first"}]
    for i in range(4 * HISTORY_EVENTS):  # far more than the history keeps, nobody reading
        await db.jobs.insert_one({"_id": i})

    with pytest.raises(OperationFailure) as caught:
        await db.command({"getMore": cursor_id, "collection": "jobs", "maxTimeMS": 100})
    assert caught.value.code == 286
    assert caught.value.details is not None and caught.value.details["codeName"] == "ChangeStreamHistoryLost"
    assert caught.value.has_error_label("NonResumableChangeStreamError")
    assert "resume point may no longer be in the oplog" in str(caught.value)
    with pytest.raises(OperationFailure) as gone:  # the failed cursor is closed, as MongoDB's
        await db.command({"getMore": cursor_id, "collection": "jobs", "maxTimeMS": 100})
    assert gone.value.code == 43

    [record] = [r for r in logged if r.get("action") == "change_stream_history_lost"]
    assert record["cursor_id"] == cursor_id and record["namespace"] == "db.jobs"
    assert "--history-events" in record["text"]
    await mongo.close()


async def test_the_drivers_stream_raises_instead_of_skipping(small_history: Any) -> None:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(small_history.uri)
    jobs = mongo.db.jobs
    stream = await jobs.watch(batch_size=1, max_await_time_ms=100)
    await jobs.insert_one({"_id": "first"})
    await next_event(stream)
    for i in range(4 * HISTORY_EVENTS):
        await jobs.insert_one({"_id": i})
    received: list[Any] = []
    with pytest.raises(OperationFailure) as caught, anyio.fail_after(DEADLINE_S):
        while True:  # PyMongo does not resume a NonResumableChangeStreamError
            event = await stream.try_next()
            if event is not None:
                received.append(event["documentKey"]["_id"])
    assert caught.value.code == 286 and received == []  # not one event skipped to
    await stream.close()
    await mongo.close()


async def test_a_stream_within_the_history_reads_every_change(small_history: Any) -> None:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(small_history.uri)
    jobs = mongo.db.jobs
    stream = await jobs.watch(max_await_time_ms=100)
    seen: list[Any] = []
    with anyio.fail_after(DEADLINE_S):
        for i in range(3 * HISTORY_EVENTS):  # read as it goes: never behind
            await jobs.insert_one({"_id": i})
            while len(seen) <= i:
                event = await stream.try_next()
                if event is not None:
                    seen.append(event["documentKey"]["_id"])
    assert seen == list(range(3 * HISTORY_EVENTS))
    await stream.close()
    await mongo.close()


def test_history_events_is_an_option_of_the_server_process(serving: Any) -> None:
    """``--history-events N``: the process keeps N changes, and says so in its
    log when a stream falls behind them."""
    from pymongo import MongoClient

    with serving("--history-events", str(HISTORY_EVENTS)) as running:
        mongo: MongoClient[dict[str, Any]] = MongoClient(running.uri)
        db = mongo.db
        opened = db.command({"aggregate": "jobs", "pipeline": [{"$changeStream": {}}], "cursor": {}})
        for i in range(4 * HISTORY_EVENTS):
            db.jobs.insert_one({"_id": i})
        with pytest.raises(OperationFailure) as caught:
            db.command({"getMore": opened["cursor"]["id"], "collection": "jobs", "maxTimeMS": 100})
        assert caught.value.code == 286
        mongo.close()
        assert running.stop() == 0
        assert running.process.stderr is not None
        log = running.process.stderr.read()
    assert "change stream fell behind the retained history" in log
