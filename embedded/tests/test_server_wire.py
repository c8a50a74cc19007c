"""The embedded server speaks change streams as MongoDB does: an unmodified
PyMongo client (async and sync) watches it over the wire.

Each test starts a server in its own event loop (or the server as a process,
for the sync client) and checks what the driver receives: event shapes,
tokens, resume, errors with their codes."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
from pathlib import Path
from typing import Any

import anyio
import pytest
from bson import Timestamp
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import OperationFailure

from streams import DEADLINE_S, next_event


async def test_events_are_shaped_like_mongodb(client: AsyncMongoClient[dict[str, Any]]) -> None:
    jobs = client.db.jobs
    stream = await jobs.watch(max_await_time_ms=100)
    await jobs.insert_one(
        {"_id": 1, "stages": {"a": {"completedItems": 0, "status": "InProgress"}}, "items": [1, 2, 3], "old": True}
    )
    await jobs.update_one(
        {"_id": 1}, {"$inc": {"stages.a.completedItems": 1}, "$unset": {"old": ""}, "$pop": {"items": 1}}
    )
    await jobs.replace_one({"_id": 1}, {"fresh": 1})
    await jobs.delete_one({"_id": 1})
    insert, update, replace, delete = [await next_event(stream) for _ in range(4)]
    await stream.close()

    assert [e["operationType"] for e in (insert, update, replace, delete)] == ["insert", "update", "replace", "delete"]
    for event in (insert, update, replace, delete):
        assert set(event["_id"]) == {"_data"} and isinstance(event["_id"]["_data"], str)
        assert event["ns"] == {"db": "db", "coll": "jobs"}
        assert event["documentKey"] == {"_id": 1}
        assert isinstance(event["clusterTime"], Timestamp)
        assert isinstance(event["wallTime"], datetime.datetime)
    assert insert["fullDocument"]["stages"]["a"]["completedItems"] == 0
    assert update["updateDescription"] == {
        "updatedFields": {"stages.a.completedItems": 1},
        "removedFields": ["old"],
        "truncatedArrays": [{"field": "items", "newSize": 2}],
    }
    assert "fullDocument" not in update  # fullDocument "default"
    assert replace["fullDocument"] == {"_id": 1, "fresh": 1}
    assert "fullDocument" not in delete
    times = [e["clusterTime"] for e in (insert, update, replace, delete)]
    assert times == sorted(times) and len(set(times)) == 4


async def test_update_lookup_gives_the_current_document(client: AsyncMongoClient[dict[str, Any]]) -> None:
    jobs = client.db.jobs
    stream = await jobs.watch(full_document="updateLookup", max_await_time_ms=100)
    await jobs.insert_one({"_id": 1, "n": 0})
    await jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})
    await jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})
    events = [await next_event(stream) for _ in range(3)]
    # Looked up when read, as MongoDB does: both updates show the latest document.
    assert [e.get("fullDocument", {}).get("n") for e in events] == [0, 2, 2]
    await jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})
    await jobs.delete_one({"_id": 1})
    update = await next_event(stream)
    assert update["operationType"] == "update" and update["fullDocument"] is None  # gone by then
    await stream.close()


async def test_match_and_project_pipelines_apply_to_events(client: AsyncMongoClient[dict[str, Any]]) -> None:
    jobs = client.db.jobs
    pipeline: list[dict[str, Any]] = [
        {"$match": {"operationType": "update", "updateDescription.updatedFields.status": {"$exists": True}}},
        {"$project": {"updateDescription": 1, "operationType": 1}},
    ]
    stream = await jobs.watch(pipeline, max_await_time_ms=100)
    await jobs.insert_one({"_id": 1, "status": "Pending", "n": 0})
    await jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})
    await jobs.update_one({"_id": 1}, {"$set": {"status": "Completed"}})
    event = await next_event(stream)
    assert set(event) == {"_id", "operationType", "updateDescription"}
    assert event["updateDescription"]["updatedFields"] == {"status": "Completed"}
    await stream.close()


async def test_a_pipeline_that_removes_the_token_is_fatal(client: AsyncMongoClient[dict[str, Any]]) -> None:
    stream = await client.db.jobs.watch([{"$project": {"_id": 0}}], max_await_time_ms=100)
    await client.db.jobs.insert_one({"_id": 1})
    with pytest.raises(OperationFailure) as caught:
        await next_event(stream)
    assert caught.value.code == 280  # ChangeStreamFatalError
    await stream.close()


async def test_resume_after_a_token_and_start_at_an_operation_time(client: AsyncMongoClient[dict[str, Any]]) -> None:
    jobs = client.db.jobs
    stream = await jobs.watch(max_await_time_ms=100)
    for i in range(3):
        await jobs.insert_one({"_id": i})
    first = await next_event(stream)
    second = await next_event(stream)
    await stream.close()
    resumed = await jobs.watch(resume_after=first["_id"], max_await_time_ms=100)
    assert (await next_event(resumed))["documentKey"] == {"_id": 1}
    await resumed.close()
    at_time = await jobs.watch(start_at_operation_time=second["clusterTime"], max_await_time_ms=100)
    assert (await next_event(at_time))["documentKey"] == {"_id": 1}
    await at_time.close()


async def test_history_is_kept_while_nobody_watches(client: AsyncMongoClient[dict[str, Any]]) -> None:
    jobs = client.db.jobs
    stream = await jobs.watch(max_await_time_ms=100)
    await jobs.insert_one({"_id": 0})
    token = (await next_event(stream))["_id"]
    await stream.close()
    await jobs.insert_one({"_id": 1})  # no stream open anywhere
    resumed = await jobs.watch(resume_after=token, max_await_time_ms=100)
    assert (await next_event(resumed))["documentKey"] == {"_id": 1}
    await resumed.close()


async def test_drop_sends_drop_then_invalidate_and_start_after_continues(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    jobs = client.db.jobs
    stream = await jobs.watch(max_await_time_ms=100)
    await jobs.insert_one({"_id": 1})
    await jobs.drop()
    await jobs.insert_one({"_id": 2})  # the first write after a drop (the engine alone loses its event)
    kinds = [(await next_event(stream))["operationType"] for _ in range(2)]
    invalidate = await next_event(stream)
    assert kinds == ["insert", "drop"] and invalidate["operationType"] == "invalidate"
    assert not stream.alive
    with pytest.raises(OperationFailure) as caught:
        await jobs.watch(resume_after=invalidate["_id"])
    assert caught.value.code == 260  # InvalidResumeToken: resumeAfter cannot cross an invalidate
    after = await jobs.watch(start_after=invalidate["_id"], max_await_time_ms=100)
    assert (await next_event(after))["documentKey"] == {"_id": 2}
    await after.close()


async def test_rename_invalidates_the_stream(client: AsyncMongoClient[dict[str, Any]]) -> None:
    jobs = client.db.jobs
    await jobs.insert_one({"_id": 1})
    stream = await jobs.watch(max_await_time_ms=100)
    await jobs.rename("archived")
    rename = await next_event(stream)
    assert rename["operationType"] == "rename" and rename["to"] == {"db": "db", "coll": "archived"}
    assert (await next_event(stream))["operationType"] == "invalidate"


async def test_expired_or_foreign_token_is_history_lost() -> None:
    from jobwatch_embedded import server

    async with server.start(max_events=10) as running:
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(running.uri)
        jobs = mongo.db.jobs
        stream = await jobs.watch(max_await_time_ms=100)
        await jobs.insert_one({"_id": "first"})
        token = (await next_event(stream))["_id"]
        await stream.close()
        for i in range(20):
            await jobs.insert_one({"_id": i})
        for stale in (token,):
            with pytest.raises(OperationFailure) as caught:
                await jobs.watch(resume_after=stale)
            assert caught.value.code == 286  # ChangeStreamHistoryLost
            assert caught.value.has_error_label("NonResumableChangeStreamError")
            assert caught.value.details is not None and caught.value.details["codeName"] == "ChangeStreamHistoryLost"
        await mongo.close()


async def test_kill_cursors_then_get_more_is_cursor_not_found(client: AsyncMongoClient[dict[str, Any]]) -> None:
    db = client.db
    reply = await db.command({"aggregate": "jobs", "pipeline": [{"$changeStream": {}}], "cursor": {}})
    cursor_id = reply["cursor"]["id"]
    assert cursor_id != 0 and reply["cursor"]["firstBatch"] == []
    killed = await db.command({"killCursors": "jobs", "cursors": [cursor_id]})
    assert killed["cursorsKilled"] == [cursor_id]
    with pytest.raises(OperationFailure) as caught:
        await db.command({"getMore": cursor_id, "collection": "jobs", "maxTimeMS": 50})
    assert caught.value.code == 43  # CursorNotFound
    assert caught.value.details is not None and caught.value.details["codeName"] == "CursorNotFound"


async def test_idle_get_more_waits_max_time_and_advances_the_post_batch_token(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    db = client.db
    reply = await db.command({"aggregate": "jobs", "pipeline": [{"$changeStream": {}}], "cursor": {}})
    cursor_id, token = reply["cursor"]["id"], reply["cursor"]["postBatchResumeToken"]
    with anyio.fail_after(DEADLINE_S):  # an empty batch comes back: no hang
        idle = await db.command({"getMore": cursor_id, "collection": "jobs", "maxTimeMS": 200})
    assert idle["cursor"]["nextBatch"] == [] and idle["cursor"]["postBatchResumeToken"] == token
    await db.other.insert_one({"_id": 1})  # a change the stream filters out
    with anyio.fail_after(DEADLINE_S):
        moved = await db.command({"getMore": cursor_id, "collection": "jobs", "maxTimeMS": 200})
    assert moved["cursor"]["nextBatch"] == []
    assert moved["cursor"]["postBatchResumeToken"]["_data"] > token["_data"]
    stream = await db.jobs.watch(max_await_time_ms=100)
    before = stream.resume_token
    await db.other.insert_one({"_id": 2})
    with anyio.fail_after(DEADLINE_S):
        while stream.resume_token == before:
            assert await stream.try_next() is None
    await stream.close()


async def test_get_more_returns_as_soon_as_a_change_arrives(client: AsyncMongoClient[dict[str, Any]]) -> None:
    stream = await client.db.jobs.watch(max_await_time_ms=60_000)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.db.jobs.insert_one, {"_id": 1})
        with anyio.fail_after(DEADLINE_S):  # well before the minute the getMore may wait
            assert (await stream.try_next() or {}).get("documentKey") == {"_id": 1}
    await stream.close()


async def test_an_unsupported_command_gets_mongodb_error_shape(client: AsyncMongoClient[dict[str, Any]]) -> None:
    with anyio.fail_after(DEADLINE_S):
        with pytest.raises(OperationFailure) as caught:
            await client.db.command({"noSuchCommand": 1})
    assert caught.value.code == 59
    assert caught.value.details == {
        "ok": 0.0,
        "errmsg": "no such command: 'noSuchCommand'",
        "code": 59,
        "codeName": "CommandNotFound",
    }


async def test_unsupported_pipeline_stage_is_refused(client: AsyncMongoClient[dict[str, Any]]) -> None:
    with pytest.raises(OperationFailure) as caught:
        await client.db.jobs.watch([{"$group": {"_id": None}}])
    assert caught.value.code == 20  # IllegalOperation


async def test_hello_advertises_a_replica_set(client: AsyncMongoClient[dict[str, Any]]) -> None:
    hello = await client.admin.command("hello")
    assert hello["setName"] and hello["isWritablePrimary"] and hello["primary"] in hello["hosts"]


async def test_tokens_resume_across_a_restart_with_data(tmp_path: Path) -> None:
    from jobwatch_embedded import server

    async with server.start(data_dir=tmp_path) as first:
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(first.uri)
        stream = await mongo.db.jobs.watch(max_await_time_ms=100)
        await mongo.db.jobs.insert_one({"_id": 1, "n": 0})
        token = (await next_event(stream))["_id"]
        await stream.close()
        await mongo.db.jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})  # after the token, before the restart
        await mongo.close()
    async with server.start(data_dir=tmp_path) as second:
        mongo = AsyncMongoClient(second.uri)
        await mongo.db.jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})  # after the restart
        stream = await mongo.db.jobs.watch(resume_after=token, max_await_time_ms=100)
        before, after = await next_event(stream), await next_event(stream)
        assert [e["updateDescription"]["updatedFields"] for e in (before, after)] == [{"n": 1}, {"n": 2}]
        assert (await mongo.db.jobs.find_one({"_id": 1}) or {})["n"] == 2  # the data survived too
        await stream.close()
        await mongo.close()


def test_sync_client_watches_the_embedded_server_process(serving: Any) -> None:
    with serving() as running:
        mongo: MongoClient[dict[str, Any]] = MongoClient(running.uri)
        with mongo.db.jobs.watch(full_document="updateLookup", max_await_time_ms=100) as stream:
            mongo.db.jobs.insert_one({"_id": 1, "n": 0})
            mongo.db.jobs.update_one({"_id": 1}, {"$inc": {"n": 5}})
            seen = [stream.next() for _ in range(2)]
        assert [e["operationType"] for e in seen] == ["insert", "update"]
        assert seen[1]["updateDescription"]["updatedFields"] == {"n": 5} and seen[1]["fullDocument"]["n"] == 5
        mongo.close()
        assert running.stop() == 0  # SIGTERM: a clean exit


async def test_database_and_cluster_streams(client: AsyncMongoClient[dict[str, Any]]) -> None:
    database = await client.db.watch(max_await_time_ms=100)
    cluster = await client.watch(max_await_time_ms=100)
    await client.db.a.insert_one({"_id": 1})
    await client.other.b.insert_one({"_id": 2})
    await client.db.a.insert_one({"_id": 3})
    assert [(await next_event(database))["documentKey"]["_id"] for _ in range(2)] == [1, 3]
    seen = [await next_event(cluster) for _ in range(3)]
    assert [(e["ns"]["db"], e["documentKey"]["_id"]) for e in seen] == [("db", 1), ("other", 2), ("db", 3)]
    await database.close()
    await cluster.close()


def test_embedded_server_process_resumes_tokens_after_a_restart_with_data(tmp_path: Path, serving: Any) -> None:
    """``--data``: SIGTERM, start again, the old token resumes."""
    with serving("--data", str(tmp_path)) as first:
        mongo: MongoClient[dict[str, Any]] = MongoClient(first.uri)
        with mongo.db.jobs.watch(max_await_time_ms=100) as stream:
            mongo.db.jobs.insert_one({"_id": 1})
            token = stream.next()["_id"]
        mongo.db.jobs.insert_one({"_id": 2})  # nobody watching, then the server stops
        mongo.close()
        assert first.stop() == 0
    with serving("--data", str(tmp_path)) as second:
        mongo = MongoClient(second.uri)
        mongo.db.jobs.insert_one({"_id": 3})
        with mongo.db.jobs.watch(resume_after=token, max_await_time_ms=100) as stream:
            assert [stream.next()["documentKey"]["_id"] for _ in range(2)] == [2, 3]
        assert mongo.db.jobs.count_documents({}) == 3
        mongo.close()
        assert second.stop() == 0


async def test_many_document_writes_and_drop_database(client: AsyncMongoClient[dict[str, Any]]) -> None:
    cluster = await client.watch(max_await_time_ms=100)
    await client.db.jobs.insert_many([{"_id": i, "n": 0} for i in range(3)])
    await client.db.jobs.update_many({}, {"$inc": {"n": 1}})
    await client.db.jobs.delete_many({"_id": {"$lt": 2}})
    await client.db.more.insert_one({"_id": "more"})
    await client.drop_database("db")
    await client.other.jobs.insert_one({"_id": "after"})  # not lost after the drops
    seen = [await next_event(cluster) for _ in range(13)]
    assert [e["operationType"] for e in seen] == ["insert"] * 3 + ["update"] * 3 + ["delete"] * 2 + [
        "insert",
        "drop",
        "drop",
        "dropDatabase",
        "insert",
    ]
    assert {e["ns"]["coll"] for e in seen[9:11]} == {"jobs", "more"} and seen[11]["ns"] == {"db": "db"}
    assert seen[12]["documentKey"] == {"_id": "after"}
    await cluster.close()


async def test_the_engine_hands_back_what_the_history_holds(
    served: Any, client: AsyncMongoClient[dict[str, Any]]
) -> None:
    """The engine's own copies of recorded changes are released (the history
    keeps them as BSON), and the tap still resumes after a drop."""
    from jobwatch_embedded import engine, hooks

    stream = await client.db.jobs.watch(max_await_time_ms=100)
    written = engine.RELEASE_EVERY + 10
    await client.db.jobs.insert_many([{"_id": i, "n": 0} for i in range(written)])
    await served.engine.flush()
    with anyio.fail_after(DEADLINE_S):
        while hooks.retained_changes(served.engine.client) > 1:  # released once the tap is idle
            await anyio.sleep(0.05)
    await client.db.jobs.drop()
    await client.db.other.insert_one({"_id": "after"})
    seen = [await next_event(stream) for _ in range(written + 2)]
    assert [e["operationType"] for e in seen] == ["insert"] * written + ["drop", "invalidate"]
    cluster_after = await client.watch(max_await_time_ms=100, start_after=seen[-1]["_id"])
    await client.db.other.insert_one({"_id": "later"})
    assert [(await next_event(cluster_after))["documentKey"] for _ in range(2)] == [{"_id": "after"}, {"_id": "later"}]
    await cluster_after.close()


async def test_tokens_saved_before_tokens_carried_a_time_still_resume(client: AsyncMongoClient[dict[str, Any]]) -> None:
    """Earlier versions wrote tokens without the leading cluster time; a
    watcher that saved one (and a server kept with --data) still resumes."""
    stream = await client.db.jobs.watch(max_await_time_ms=100)
    await client.db.jobs.insert_many([{"_id": 1}, {"_id": 2}])
    token = (await next_event(stream))["_id"]
    await stream.close()
    legacy = {"_data": token["_data"][18:]}  # history id, sequence, kind
    resumed = await client.db.jobs.watch(resume_after=legacy, max_await_time_ms=100)
    assert (await next_event(resumed))["documentKey"] == {"_id": 2}
    await resumed.close()


def test_a_tls_handshake_on_the_plain_port_is_closed_at_once(serving: Any) -> None:
    """A client with tls=true: the server closes the connection instead of
    waiting for the megabytes its first bytes announce as a message length."""
    with serving() as running:
        port = int(running.uri.split(":")[2].split("/")[0])
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as raw:
            # A real ClientHello: what a driver with tls=true sends first.
            hello = ssl.MemoryBIO()
            client = context.wrap_bio(ssl.MemoryBIO(), hello, server_hostname="localhost")
            with contextlib.suppress(ssl.SSLWantReadError):
                client.do_handshake()
            raw.sendall(hello.read())
            assert raw.recv(1024) == b""  # closed by the server, not timed out (that raises)
        with MongoClient[dict[str, Any]](running.uri) as mongo:
            assert mongo.admin.command("ping")["ok"] == 1.0  # plain clients are served as before
