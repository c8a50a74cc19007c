"""Change-stream errors with MongoDB 7.0's codes, names, messages and labels
(src/mongo/base/error_codes.yml, error_labels.cpp, resume_token.cpp), as the
real driver receives them."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Int64, Timestamp
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern

from streams import fails


async def refused(call: Any) -> OperationFailure:
    with pytest.raises(OperationFailure) as caught:
        await call
    return caught.value


async def test_a_pipeline_that_removes_the_token_is_fatal_and_not_resumable(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    stream = await client.db.jobs.watch([{"$project": {"_id": 0}}], max_await_time_ms=100)
    await client.db.jobs.insert_one({"_id": 1})
    error = await fails(stream)
    assert error.code == 280
    assert error.details is not None and error.details["codeName"] == "ChangeStreamFatalError"
    assert error.has_error_label("NonResumableChangeStreamError")
    await stream.close()


@pytest.mark.parametrize(
    ("stage", "code", "name"),
    [
        ({"$unsupported": "foo"}, 40324, "Location40324"),  # unrecognized: MongoDB fails it when parsing
        ({"$group": {"_id": None}}, 20, "IllegalOperation"),  # known, but not after $changeStream
        ({"$match": {}, "$project": {"a": 1}}, 40323, "Location40323"),
    ],
)
async def test_stages_after_change_stream(
    client: AsyncMongoClient[dict[str, Any]], stage: dict[str, Any], code: int, name: str
) -> None:
    error = await refused(client.db.jobs.watch([stage]))
    assert error.code == code and error.details is not None and error.details["codeName"] == name


async def test_change_stream_options_and_read_concern(client: AsyncMongoClient[dict[str, Any]]) -> None:
    unknown = await refused(
        client.db.command({"aggregate": "jobs", "pipeline": [{"$changeStream": {"nope": 1}}], "cursor": {}})
    )
    assert unknown.code == 40415 and "'$changeStream.nope' is an unknown field" in str(unknown)
    local = await refused(client.db.get_collection("jobs", read_concern=ReadConcern("local")).watch())
    assert local.code == 72 and "readConcern other than 'majority'" in str(local)
    async with await client.db.get_collection("jobs", read_concern=ReadConcern("majority")).watch():
        pass


@pytest.mark.parametrize(
    ("token", "code", "name", "message"),
    [
        ({"_data": 5}, 40647, "Location40647", "Bad resume token: _data of missing or of wrong type"),
        ({"nothing": 1}, 40647, "Location40647", "Bad resume token"),
        ({"_data": "xyz"}, 9, "FailedToParse", "resume token string was not a valid hex string"),
        ({"_data": "00" * 17}, 40649, "Location40649", "invalid empty resume token"),
        # A MongoDB token: its cluster time (2016) is older than anything this server kept.
        ({"_data": "825700000000000001"}, 286, "ChangeStreamHistoryLost", "resume point may no longer be in the oplog"),
        # One from a time this server covers, but not one of its events.
        (
            {"_data": "82FFFFFFFF000000012B022C0100296E5A1004"},
            280,
            "ChangeStreamFatalError",
            "the resume token was not found",
        ),
    ],
)
async def test_resume_tokens_it_cannot_use(
    client: AsyncMongoClient[dict[str, Any]], token: Any, code: int, name: str, message: str
) -> None:
    error = await refused(client.db.jobs.watch(resume_after=token))
    assert error.code == code and error.details is not None and error.details["codeName"] == name
    assert message in str(error)
    if code in (280, 286):
        assert error.has_error_label("NonResumableChangeStreamError")


async def test_get_more_on_a_killed_change_stream_cursor_is_cursor_not_found(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    """Drivers send cursor ids as Int64s (killCursors always): the cursor is
    killed, and the next getMore, whatever the id's type, is 43."""
    db = client.db
    opened = await db.command({"aggregate": "jobs", "pipeline": [{"$changeStream": {}}], "cursor": {}})
    cursor_id = opened["cursor"]["id"]
    killed = await db.command({"killCursors": "jobs", "cursors": [Int64(cursor_id)]})
    assert killed["cursorsKilled"] == [cursor_id]
    for form in (Int64(cursor_id), cursor_id):
        error = await refused(db.command({"getMore": form, "collection": "jobs", "maxTimeMS": 50}))
        assert error.code == 43 and error.details is not None
        assert (
            error.details["codeName"] == "CursorNotFound"
            and error.details["errmsg"] == f"cursor id {cursor_id} not found"
        )
    stream = await db.jobs.watch()
    await stream.close()  # the driver's own killCursors
    reply = await db.command({"killCursors": "jobs", "cursors": [Int64(cursor_id)]})
    assert reply["cursorsNotFound"] == [cursor_id]


async def test_a_unknown_command_and_every_reply_carry_mongodb_fields(client: AsyncMongoClient[dict[str, Any]]) -> None:
    error = await refused(client.db.command({"noSuchCommand": 1}))
    assert error.code == 59 and error.details is not None
    assert {k: error.details[k] for k in ("ok", "errmsg", "code", "codeName")} == {
        "ok": 0.0,
        "errmsg": "no such command: 'noSuchCommand'",
        "code": 59,
        "codeName": "CommandNotFound",
    }
    ping = await client.db.command("ping")
    assert isinstance(ping["operationTime"], Timestamp)  # a replica set member's reply
    await client.db.jobs.insert_one({"_id": 1})
    assert (await client.db.command("ping"))["operationTime"] > ping["operationTime"]
