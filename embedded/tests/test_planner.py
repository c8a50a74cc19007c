"""The embedded engine serves ``$eq``/``$in``/``$nin`` on an index's leading
field from the index (as MongoDB does from index bounds), and answers
exactly what mongoeco's own engine answers by examining every document.
(That the product's sweep queries examine only the open jobs is jobwatch's
test: tests/unit/watcher/test_embedded_planner.py.)"""

from __future__ import annotations

import random
from typing import Any

from bson import Code, ObjectId
from mongoeco import AsyncMongoClient
from mongoeco.engines import MemoryEngine

from jobwatch_embedded import planner

#: A status field in a job collection's spellings: the shapes a sweep asks for.
OPEN_SPELLINGS = ["Pending", "pending", "InProgress", "inprogress"]
KNOWN_SPELLINGS = [*OPEN_SPELLINGS, "Completed", "completed", "Failed", "failed"]
SWEEP_INDEX_KEYS = [("status", 1), ("jobType", 1)]

#: Every shape a status (or job type) can take in the wild.
ODD_VALUES: list[Any] = [
    "InProgress",
    "Completed",
    "Pending",
    "Weird",
    "inprogress",
    "",
    None,
    5,
    1.0,
    True,
    ObjectId("68ebf7fb500d92ef82221ec2"),
    ["InProgress"],
    ["Completed", "Weird"],
    ["Completed"],
    [],
    [["InProgress"]],
    {"status": "InProgress"},
    Code("InProgress"),
    b"InProgress",
]
MISSING = object()


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for n, (status, job_type) in enumerate(
        (s, t) for s in [*ODD_VALUES, MISSING] for t in ["a", "b", None, ["a"], MISSING]
    ):
        if isinstance(status, list) and isinstance(job_type, list):
            continue  # parallel arrays: no compound index takes them (nor does MongoDB's)
        doc: dict[str, Any] = {"_id": n}
        if status is not MISSING:
            doc["status"] = status
        if job_type is not MISSING:
            doc["jobType"] = job_type
        docs.append(doc)
    return docs


def filters(rng: random.Random, count: int) -> list[dict[str, Any]]:
    strings = ["InProgress", "Completed", "Pending", "Weird", "inprogress", "", "a", "b", "zzz"]
    found: list[dict[str, Any]] = [
        {"status": {"$in": OPEN_SPELLINGS}},
        {"status": {"$nin": KNOWN_SPELLINGS}},
        {"status": {"$in": OPEN_SPELLINGS}, "jobType": {"$in": ["a"]}},
        {"status": {"$nin": KNOWN_SPELLINGS}, "jobType": {"$in": ["a", "b"]}},
    ]
    for _ in range(count):
        field = rng.choice(["status", "jobType"])
        values = rng.sample(strings, rng.randint(0, 4))
        op = rng.choice(["$in", "$nin", "$eq", "$ne"])
        condition: Any = {op: values} if op in ("$in", "$nin") else {op: values[0] if values else "x"}
        query = {field: condition}
        if rng.random() < 0.4:
            query["jobType" if field == "status" else "status"] = {"$in": rng.sample(strings, 2)}
        found.append(query)
    return found


async def loaded(engine: MemoryEngine, docs: list[dict[str, Any]]) -> Any:
    client = AsyncMongoClient(engine)
    db = client["t"]
    await db.compound.create_index(SWEEP_INDEX_KEYS)
    await db.single.create_index([("status", 1)])
    await db.single.create_index([("jobType", -1)])
    await db.partial.create_index(SWEEP_INDEX_KEYS, partial_filter_expression={"jobType": "a"})
    await db.sparse.create_index(SWEEP_INDEX_KEYS, sparse=True)
    for name in ("compound", "single", "partial", "sparse", "plain"):
        await db[name].insert_many([dict(doc) for doc in docs])
    return client


async def test_the_indexed_engine_answers_exactly_what_the_engine_answers() -> None:
    docs = documents()
    widened, plain = await loaded(planner.engine(), docs), await loaded(MemoryEngine(), docs)
    assert type(widened._engine).__name__ == "IndexedMemoryEngine"  # the widened engine, not a plain one
    try:
        for query in filters(random.Random(11), 60):
            for name in ("compound", "single", "partial", "sparse", "plain"):
                got = [doc["_id"] for doc in await widened["t"][name].find(query).to_list()]
                expected = [doc["_id"] for doc in await plain["t"][name].find(query).to_list()]
                assert got == expected, (name, query)
    finally:
        await widened.close()
        await plain.close()
