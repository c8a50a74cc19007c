"""MongoDB's exact change-stream replies, played to the real PyMongo driver by
MockupDB (MongoDB's own wire-protocol test server), read through jobwatch's
default change source and stream reader.

The embedded server imitates these replies; here they are MongoDB's own, so
what is pinned does not depend on that imitation: events carrying
``updateDescription`` (ignored: decisions come from fullDocument),
post-batch resume tokens on idle batches (the position advances on a quiet
collection), a reply of several events handed over as one batch, PyMongo's
own resume on a ResumableChangeStreamError, and code 286 with its
NonResumableChangeStreamError label.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from bson import ObjectId, Timestamp
from mockupdb import Request
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from tests.support.mockup import CURSOR_ID, NS, WAIT_S, reader_for
from watcher.intake import stream
from watcher.storage import errors


async def answer(
    server: Any, action: Callable[[], Awaitable[Any]], reply: Callable[[Request], Any]
) -> tuple[Any, Request]:
    """Run ``action`` (which sends one command) while the mock answers it with ``reply``."""
    result: dict[str, Any] = {}

    async def run() -> None:
        try:
            result["value"] = await action()
        except Exception as exc:  # handed to the test
            result["error"] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        request = await anyio.to_thread.run_sync(lambda: server.receives(timeout=WAIT_S))
        reply(request)
    if "error" in result:
        raise result["error"]
    return result.get("value"), request


def batch(request: Request, docs: list[dict[str, Any]], token: str, first: bool = False) -> None:
    key = "firstBatch" if first else "nextBatch"
    request.reply({"cursor": {"id": CURSOR_ID, "ns": NS, key: docs, "postBatchResumeToken": {"_data": token}}})


def update_event(token: str, job: dict[str, Any]) -> dict[str, Any]:
    """An update event as MongoDB sends it, with the looked-up document."""
    return {
        "_id": {"_data": token},
        "operationType": "update",
        "clusterTime": Timestamp(1_760_000_000, 1),
        "wallTime": None,
        "documentKey": {"_id": job["_id"]},
        "updateDescription": {
            "updatedFields": {"stages.thumbnail.completedItems": 132},
            "removedFields": [],
            "truncatedArrays": [],
        },
        "fullDocument": job,
    }


async def test_open_sends_our_pipeline_with_update_lookup(server: Any, client: AsyncMongoClient[Any]) -> None:
    reader, _ = reader_for(client)
    opened, request = await answer(server, lambda: reader.open(None), lambda r: batch(r, [], "01", first=True))
    pipeline = request.doc["pipeline"]
    assert pipeline[0]["$changeStream"] == {"fullDocument": "updateLookup"}
    assert pipeline[1]["$match"]["operationType"]["$in"][:3] == ["insert", "update", "replace"]
    assert "fullDocument.stages" in pipeline[2]["$project"]
    assert opened.resume_token == {"_data": "01"}
    await opened.close()


async def test_idle_batches_advance_the_position_by_their_post_batch_token(
    server: Any, client: AsyncMongoClient[Any]
) -> None:
    reader, queue = reader_for(client)
    opened, _ = await answer(server, lambda: reader.open(None), lambda r: batch(r, [], "01", first=True))
    with anyio.move_on_after(1.0):  # the reader loops over idle batches; stop it after the second
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.consume, opened)
            for token in ("02", "03"):
                request = await anyio.to_thread.run_sync(lambda: server.receives(timeout=WAIT_S))
                assert "getMore" in request.doc
                batch(request, [], token)
            with anyio.fail_after(WAIT_S):
                while reader.last_token != {"_data": "03"}:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert queue.advance(0) == {"_data": "03"}  # saved position moves on a quiet collection


async def test_events_are_decided_from_the_looked_up_document(server: Any, client: AsyncMongoClient[Any]) -> None:
    reader, queue = reader_for(client)
    opened, _ = await answer(server, lambda: reader.open(None), lambda r: batch(r, [], "01", first=True))
    job = {
        "_id": ObjectId(),
        "status": "Pending",
        "stages": {"thumbnail": {"status": "InProgress", "completedItems": 132, "totalItems": 132}},
    }
    event = update_event("02", job)
    assert event["updateDescription"]["updatedFields"]  # MongoDB sends it ...
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader.consume, opened)
        request = await anyio.to_thread.run_sync(lambda: server.receives(timeout=WAIT_S))
        batch(request, [event], "02")
        with anyio.fail_after(WAIT_S):
            while queue.idle:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    work = queue.take(0)
    assert work is not None and work.doc == job  # ... jobwatch decides from fullDocument
    assert stream.event_time_s(event) == 1_760_000_000.0
    await opened.close()


async def test_a_reply_of_several_events_is_one_batch_with_its_post_batch_token(
    server: Any, client: AsyncMongoClient[Any]
) -> None:
    # The driver decodes the whole reply; the seam hands all of it over at
    # once (PyMongo's cursor says it holds more), then the next read asks again.
    reader, _ = reader_for(client)
    opened, _ = await answer(server, lambda: reader.open(None), lambda r: batch(r, [], "01", first=True))
    jobs = [{"_id": ObjectId(), "status": "Pending", "stages": {}} for _ in range(3)]
    events = [update_event(f"0{n + 2}", job) for n, job in enumerate(jobs)]
    got, request = await answer(server, opened.next_batch, lambda r: batch(r, events, "09"))
    assert "getMore" in request.doc
    assert [event["fullDocument"] for event in got] == jobs
    assert opened.resume_token == {"_data": "09"}  # the reply's post-batch token, past the last event
    await opened.close()


async def test_pymongo_resumes_a_resumable_error_itself_from_the_last_token(
    server: Any, client: AsyncMongoClient[Any]
) -> None:
    reader, _ = reader_for(client)
    opened, _ = await answer(server, lambda: reader.open(None), lambda r: batch(r, [], "01", first=True))
    job = {"_id": ObjectId(), "status": "Pending", "stages": {}}
    result: dict[str, Any] = {}

    async def next_event() -> None:
        result["batch"] = await opened.next_batch()

    async with anyio.create_task_group() as tg:
        tg.start_soon(next_event)
        failing = await anyio.to_thread.run_sync(lambda: server.receives(timeout=WAIT_S))
        failing.reply(
            {
                "ok": 0,
                "code": 91,
                "codeName": "ShutdownInProgress",
                "errmsg": "shutting down",
                "errorLabels": ["ResumableChangeStreamError"],
            }
        )
        resumed = await anyio.to_thread.run_sync(lambda: server.receives(timeout=WAIT_S))
        assert resumed.doc["pipeline"][0]["$changeStream"]["resumeAfter"] == {"_data": "01"}
        resumed.reply(
            {
                "cursor": {
                    "id": CURSOR_ID + 1,
                    "ns": NS,
                    "firstBatch": [update_event("02", job)],
                    "postBatchResumeToken": {"_data": "02"},
                }
            }
        )
    assert [event["fullDocument"] for event in result["batch"]] == [job]
    assert opened.resume_token == {"_data": "02"}
    await opened.close()


async def test_history_lost_reaches_the_watcher_as_a_restart(server: Any, client: AsyncMongoClient[Any]) -> None:
    reader, _ = reader_for(client)
    opened, _ = await answer(server, lambda: reader.open({"_data": "00"}), lambda r: batch(r, [], "01", first=True))
    lost = {
        "ok": 0,
        "code": 286,
        "codeName": "ChangeStreamHistoryLost",
        "errmsg": "history lost",
        "errorLabels": ["NonResumableChangeStreamError"],
    }
    with pytest.raises(OperationFailure) as caught:
        await answer(server, opened.next_batch, lambda r: r.reply(lost))
    assert caught.value.code == 286
    assert errors.classify(caught.value) is errors.Action.RESTART
    assert errors.name(caught.value) == "ChangeStreamHistoryLost"
