"""Pre- and post-images (``changeStreamPreAndPostImages``,
``fullDocumentBeforeChange``, ``fullDocument: whenAvailable/required``),
expanded events (``showExpandedEvents``: DDL events, ``collectionUUID``,
``operationDescription``, ``disambiguatedPaths``) and events beyond 16 MiB
(``$changeStreamSplitLargeEvent``), as MongoDB 7.0 sends them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from bson import Binary
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from streams import fails, next_event


async def test_pre_and_post_images_once_the_collection_records_them(client: AsyncMongoClient[dict[str, Any]]) -> None:
    db = client.db
    await db.jobs.insert_one({"_id": 1, "n": 0})
    before = await db.jobs.watch(
        full_document="whenAvailable", full_document_before_change="whenAvailable", max_await_time_ms=100
    )
    await db.jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})  # not recording images yet
    plain = await next_event(before)
    assert plain["fullDocument"] is None and plain["fullDocumentBeforeChange"] is None

    await db.command({"collMod": "jobs", "changeStreamPreAndPostImages": {"enabled": True}})
    await db.jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})
    await db.jobs.replace_one({"_id": 1}, {"fresh": True})
    await db.jobs.delete_one({"_id": 1})
    update, replace, delete = [await next_event(before) for _ in range(3)]
    assert update["fullDocumentBeforeChange"] == {"_id": 1, "n": 1} and update["fullDocument"] == {"_id": 1, "n": 2}
    assert replace["fullDocumentBeforeChange"] == {"_id": 1, "n": 2} and replace["fullDocument"] == {
        "_id": 1,
        "fresh": True,
    }
    assert delete["fullDocumentBeforeChange"] == {"_id": 1, "fresh": True} and "fullDocument" not in delete
    await before.close()

    off = await db.jobs.watch(full_document_before_change="off", max_await_time_ms=100)
    await db.jobs.insert_one({"_id": 2})
    await db.jobs.update_one({"_id": 2}, {"$set": {"x": 1}})
    assert "fullDocumentBeforeChange" not in (await next_event(off)) and "fullDocumentBeforeChange" not in (
        await next_event(off)
    )
    await off.close()


async def test_required_images_fail_where_none_was_recorded(client: AsyncMongoClient[dict[str, Any]]) -> None:
    db = client.db
    await db.jobs.insert_one({"_id": 1})
    for full_document, before_change in (("required", None), (None, "required")):
        stream = await db.jobs.watch(
            max_await_time_ms=100, full_document=full_document, full_document_before_change=before_change
        )
        await db.jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})
        error = await fails(stream)
        assert error.code in (47, 51770)  # NoMatchingDocument; 51770: no pre-image was ever recorded
        assert "Change stream was configured to require a" in str(error)
        await stream.close()
    await db.create_collection("recorded", changeStreamPreAndPostImages={"enabled": True})  # create's option too
    await db.recorded.insert_one({"_id": 1})
    stream = await db.recorded.watch(
        full_document="required", full_document_before_change="required", max_await_time_ms=100
    )
    await db.recorded.update_one({"_id": 1}, {"$set": {"x": 1}})
    event = await next_event(stream)
    assert event["fullDocument"] == {"_id": 1, "x": 1} and event["fullDocumentBeforeChange"] == {"_id": 1}
    await stream.close()


async def test_expanded_events_report_ddl(client: AsyncMongoClient[dict[str, Any]]) -> None:
    db = client.db
    await db.create_collection("target")
    database = await db.watch(show_expanded_events=True, max_await_time_ms=100)
    plain = await db.watch(max_await_time_ms=100)
    await db.create_collection("jobs")
    await db.jobs.insert_one({"_id": 1})
    await db.jobs.create_index([("x", 1)], name="x_1")
    await db.command({"collMod": "jobs", "changeStreamPreAndPostImages": {"enabled": True}})
    await db.jobs.drop_index("x_1")
    await db.create_collection("view", viewOn="jobs", pipeline=[])
    await db.implicit.insert_one({"_id": 2})  # created by its first write
    await db.jobs.rename("target", dropTarget=True)
    kinds = [await next_event(database) for _ in range(9)]
    assert [e["operationType"] for e in kinds] == [
        "create", "insert", "createIndexes", "modify", "dropIndexes", "create", "create", "insert", "rename",
    ]  # fmt: skip
    create, insert, index, modify, drop_index, view, _, _, rename = kinds
    uuid_of_jobs = create["collectionUUID"]
    assert isinstance(uuid_of_jobs, uuid.UUID | Binary)
    assert insert["collectionUUID"] == index["collectionUUID"] == rename["collectionUUID"] == uuid_of_jobs
    assert create["operationDescription"] == {"idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
    assert index["operationDescription"] == {"indexes": [{"v": 2, "key": {"x": 1}, "name": "x_1"}]}
    assert modify["operationDescription"] == {"changeStreamPreAndPostImages": {"enabled": True}}
    assert drop_index["operationDescription"]["indexes"][0]["name"] == "x_1"
    assert view["ns"] == {"db": "db", "coll": "view"} and view["operationDescription"] == {
        "viewOn": "jobs",
        "pipeline": [],
    }
    assert rename["to"] == {"db": "db", "coll": "target"} and rename["operationDescription"]["to"] == {
        "db": "db",
        "coll": "target",
    }
    assert "dropTarget" in rename["operationDescription"]
    # Without showExpandedEvents: the DML and the rename only, no UUIDs.
    seen = [await next_event(plain) for _ in range(3)]
    assert [e["operationType"] for e in seen] == ["insert", "insert", "rename"]
    assert all("collectionUUID" not in e and "operationDescription" not in e for e in seen)
    await database.close()
    await plain.close()


async def test_disambiguated_paths_with_expanded_events_only(client: AsyncMongoClient[dict[str, Any]]) -> None:
    jobs = client.db.jobs
    await jobs.insert_one({"_id": 1, "a": {"1": 1}, "l": [{"1": 1}]})
    expanded = await jobs.watch(show_expanded_events=True, max_await_time_ms=100)
    plain = await jobs.watch(max_await_time_ms=100)
    await jobs.update_one({"_id": 1}, {"$set": {"a.1": 2, "l.0.1": 2}})
    event = await next_event(expanded)
    assert event["updateDescription"]["updatedFields"] == {"a.1": 2, "l.0.1": 2}
    assert event["updateDescription"]["disambiguatedPaths"] == {"a.1": ["a", "1"], "l.0.1": ["l", 0, "1"]}
    assert "disambiguatedPaths" not in (await next_event(plain))["updateDescription"]
    await expanded.close()
    await plain.close()


async def test_a_database_stream_ends_with_its_database(client: AsyncMongoClient[dict[str, Any]]) -> None:
    database = await client.db.watch(max_await_time_ms=100)
    await client.db.jobs.insert_one({"_id": 1})
    await client.drop_database("db")
    kinds = [(await next_event(database))["operationType"] for _ in range(4)]
    assert kinds == ["insert", "drop", "dropDatabase", "invalidate"]
    assert not database.alive


async def test_uuid_keys_and_values_do_not_stop_the_server(served: Any) -> None:
    """Standard UUIDs reach the server's history as uuid.UUID: it records them
    (before, such a write stopped the history and the server)."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(served.uri, uuidRepresentation="standard")
    stream = await mongo.db.jobs.watch(max_await_time_ms=100)
    key = uuid.uuid4()
    await mongo.db.jobs.insert_one({"_id": key, "ref": uuid.uuid4()})
    await mongo.db.jobs.update_one({"_id": key}, {"$set": {"other": uuid.uuid4()}})
    events = [await next_event(stream) for _ in range(2)]
    assert [e["documentKey"]["_id"] for e in events] == [key, key]
    await stream.close()
    await mongo.close()


async def test_events_beyond_16_mib(client: AsyncMongoClient[dict[str, Any]]) -> None:
    """PyMongo's prose test, and its converse: without the split stage the
    event is refused (BSONObjectTooLarge), with it it comes in fragments, each
    with its own token, and a stream resumed inside the event gets the rest."""
    db = client.db
    await db.create_collection("big", changeStreamPreAndPostImages={"enabled": True})
    await db.big.insert_one({"_id": 1, "value": "q" * 10 * 1024 * 1024})
    whole = await db.big.watch(full_document_before_change="required", max_await_time_ms=100)
    split = await db.big.watch(
        [{"$changeStreamSplitLargeEvent": {}}], full_document_before_change="required", max_await_time_ms=100
    )
    await db.big.update_one({"_id": 1}, {"$set": {"value": "z" * 10 * 1024 * 1024}})
    assert (await fails(whole)).code == 10334
    first, second = await next_event(split), await next_event(split)
    assert first["splitEvent"] == {"fragment": 1, "of": 2} and second["splitEvent"] == {"fragment": 2, "of": 2}
    assert first["_id"] != second["_id"] and {"fullDocumentBeforeChange", "updateDescription"} <= set(first) | set(
        second
    )
    resumed = await db.big.watch(
        [{"$changeStreamSplitLargeEvent": {}}], full_document_before_change="required", resume_after=first["_id"]
    )
    assert (await next_event(resumed))["splitEvent"] == {"fragment": 2, "of": 2}
    for stream in (whole, split, resumed):
        await stream.close()
    not_last = db.big.watch([{"$changeStreamSplitLargeEvent": {}}, {"$match": {}}])
    with pytest.raises(OperationFailure) as caught:
        await not_last
    assert caught.value.code == 40601


async def test_images_and_their_setting_survive_a_restart_with_data(tmp_path: Any) -> None:
    from pathlib import Path

    from jobwatch_embedded import server

    data = Path(tmp_path)
    async with server.start(data_dir=data) as first:
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(first.uri)
        stream = await mongo.db.jobs.watch(max_await_time_ms=100)
        await mongo.db.jobs.insert_one({"_id": 1, "n": 0})
        inserted = (await next_event(stream))["_id"]
        await stream.close()
        await mongo.db.command({"collMod": "jobs", "changeStreamPreAndPostImages": {"enabled": True}})
        await mongo.db.jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})  # its images go to the journal
        await mongo.close()
    async with server.start(data_dir=data) as second:
        mongo = AsyncMongoClient(second.uri)
        await mongo.db.jobs.update_one({"_id": 1}, {"$inc": {"n": 1}})  # the setting survived the restart
        stream = await mongo.db.jobs.watch(
            full_document_before_change="required", full_document="required", resume_after=inserted
        )
        events = [await next_event(stream) for _ in range(2)]
        assert [(e["fullDocumentBeforeChange"]["n"], e["fullDocument"]["n"]) for e in events] == [(0, 1), (1, 2)]
        await stream.close()
        await mongo.close()
