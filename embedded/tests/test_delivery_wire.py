"""When a change reaches the history and its readers: a write is recorded
before it is acknowledged (its reply's ``operationTime`` is the write's own
time, as MongoDB's is), and a ``getMore`` waiting for changes is woken by
the write, not by the end of its wait.

The server runs as a process of its own; the clients are PyMongo's."""

from __future__ import annotations

import threading
from typing import Any

from pymongo import MongoClient, monitoring

from streams import DEADLINE_S

#: Much longer than any test here waits for the event: a getMore that waited
#: all of it would end empty-handed.
LONG_AWAIT_MS = 10_000


def test_an_acknowledged_write_is_in_the_history_at_its_operation_time(serving: Any) -> None:
    with serving() as running, MongoClient[dict[str, Any]](running.uri) as mongo:
        jobs = mongo.db.jobs
        jobs.insert_one({"_id": 1, "n": 0})
        with mongo.start_session() as session:
            jobs.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)
            written_at = session.operation_time
        assert written_at is not None
        # MongoDB: the stream starting at a write's operationTime begins with that write.
        with jobs.watch(start_at_operation_time=written_at, max_await_time_ms=LONG_AWAIT_MS) as stream:
            first = stream.try_next()
        assert first is not None
        assert (first["operationType"], first["clusterTime"]) == ("update", written_at)


class GetMoreStarted(monitoring.CommandListener):
    def __init__(self) -> None:
        self.get_more = threading.Event()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "getMore":
            self.get_more.set()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_waiting_get_more_is_woken_by_the_write(serving: Any) -> None:
    listener = GetMoreStarted()
    with (
        serving() as running,
        MongoClient[dict[str, Any]](running.uri, event_listeners=[listener]) as reader,
        MongoClient[dict[str, Any]](running.uri) as writer,
    ):
        got: list[dict[str, Any] | None] = []
        with reader.db.jobs.watch(max_await_time_ms=LONG_AWAIT_MS) as stream:
            # One getMore: the event, or None if it waited its whole maxTimeMS.
            waiting = threading.Thread(target=lambda: got.append(stream.try_next()))
            waiting.start()
            assert listener.get_more.wait(DEADLINE_S)
            writer.db.jobs.insert_one({"_id": 1})
            waiting.join(DEADLINE_S)
        assert not waiting.is_alive()
        assert got and got[0] is not None and got[0]["documentKey"] == {"_id": 1}


def test_an_update_pipeline_with_to_long_streams_and_the_streams_go_on(serving: Any) -> None:
    """``$add`` of a ``$toLong`` and an int leaves one of the engine's own
    integer types in the document: the change is recorded as BSON's, and
    every stream lives on."""
    with serving() as running, MongoClient[dict[str, Any]](running.uri) as mongo:
        jobs = mongo.db.jobs
        with jobs.watch(full_document="updateLookup", max_await_time_ms=LONG_AWAIT_MS) as stream:
            jobs.insert_one({"_id": 1, "n": 1})
            jobs.update_one({"_id": 1}, [{"$set": {"n": {"$add": [{"$toLong": "$n"}, 1]}}}])
            jobs.insert_one({"_id": 2})
            seen = [stream.try_next() for _ in range(3)]
        assert [e["operationType"] if e else None for e in seen] == ["insert", "update", "insert"]
        assert seen[1] is not None and seen[1]["updateDescription"]["updatedFields"] == {"n": 2}
        assert (jobs.find_one({"_id": 1}) or {})["n"] == 2
        assert running.process.poll() is None  # the server serves on
