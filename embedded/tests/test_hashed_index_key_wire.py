"""``$toHashedIndexKey`` over the wire, through an unmodified PyMongo client:
in ``find``/``count``/``aggregate`` filters, in pipeline stages and in a
change stream's pipeline, with MongoDB's values (the ones the hasher's
published vectors pin, see test_hashing.py)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from bson import Int64, ObjectId
from pymongo.errors import OperationFailure

from jobwatch_embedded import hashing
from streams import DEADLINE_S

PARTITIONS = 3
IDS: list[Any] = [0, 1, 2, 3, 4, 5, "string to hash", ObjectId("010203040506070809101112"), 42.5, Int64(7)]


def partition_filter(path: str, partition: int) -> dict[str, Any]:
    hashed = {"$toHashedIndexKey": path}
    return {"$expr": {"$eq": [{"$abs": {"$mod": [hashed, PARTITIONS]}}, partition]}}


def partition_of(value: object) -> int:
    """MongoDB's $mod keeps the dividend's sign (truncated division); $abs drops it."""
    return abs(hashing.hashed_index_key(value)) % PARTITIONS


async def test_queries_compute_mongodb_hashes(client: Any) -> None:
    jobs = client.db.jobs
    await jobs.insert_many([{"_id": i} for i in IDS])
    projected = [
        d
        async for d in await jobs.aggregate(
            [{"$project": {"h": {"$toHashedIndexKey": "$_id"}, "t": {"$type": {"$toHashedIndexKey": "$_id"}}}}]
        )
    ]
    assert {repr(d["_id"]): d["h"] for d in projected} == {repr(i): hashing.hashed_index_key(i) for i in IDS}
    assert {d["t"] for d in projected} == {"long"}
    assert (
        next(d["h"] for d in projected if d["_id"] == "string to hash") == 763543691661428748
    )  # MongoDB's documented example
    for partition in range(PARTITIONS):
        expected = sorted(repr(i) for i in IDS if partition_of(i) == partition)
        found = sorted([repr(d["_id"]) async for d in jobs.find(partition_filter("$_id", partition))])
        assert found == expected
        assert await jobs.count_documents(partition_filter("$_id", partition)) == len(expected)
        matched = [d async for d in await jobs.aggregate([{"$match": partition_filter("$_id", partition)}])]
        assert sorted(repr(d["_id"]) for d in matched) == expected
    assert sum([await jobs.count_documents(partition_filter("$_id", p)) for p in range(PARTITIONS)]) == len(IDS)


async def test_missing_hashes_as_null_and_arity_is_checked(client: Any) -> None:
    await client.db.jobs.insert_one({"_id": 1})
    [doc] = [
        d
        async for d in await client.db.jobs.aggregate(
            [{"$project": {"h": {"$toHashedIndexKey": "$absent"}, "l": {"$toHashedIndexKey": ["$_id"]}}}]
        )
    ]
    assert doc == {"_id": 1, "h": hashing.hashed_index_key(None), "l": hashing.hashed_index_key(1)}
    with pytest.raises(OperationFailure) as caught:
        await client.db.jobs.aggregate([{"$project": {"h": {"$toHashedIndexKey": [1, 2]}}}])
    assert caught.value.code == 16020


async def test_a_change_stream_partitioned_by_hashed_document_key(client: Any) -> None:
    jobs = client.db.jobs
    streams = [
        await jobs.watch([{"$match": partition_filter("$documentKey._id", p)}], max_await_time_ms=100)
        for p in range(PARTITIONS)
    ]
    await jobs.insert_many([{"_id": i} for i in IDS])
    seen: list[list[str]] = []
    for partition, stream in enumerate(streams):
        expected = [repr(i) for i in IDS if partition_of(i) == partition]
        got: list[str] = []
        with anyio.fail_after(DEADLINE_S):
            while len(got) < len(expected):
                event = await stream.try_next()
                if event is not None:
                    got.append(repr(event["documentKey"]["_id"]))
        seen.append(got)
        assert got == expected
        await stream.close()
    assert sorted(sum(seen, [])) == sorted(repr(i) for i in IDS)  # every event in exactly one partition
