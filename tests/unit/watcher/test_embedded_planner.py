"""The product's sweep queries, on the embedded engine, examine the open jobs
through the sweep's index, not the whole collection. (That the widened
engine answers exactly what mongoeco answers is the embedded server's own
test: embedded/tests/test_planner.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from watcher.storage.store import KNOWN_SPELLINGS, OPEN_SPELLINGS, SWEEP_INDEX_KEYS

pytest.importorskip("mongoeco")

from mongoeco import AsyncMongoClient  # noqa: E402

from jobwatch_embedded import planner  # noqa: E402


async def test_the_sweep_queries_examine_the_open_jobs_not_the_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = planner.engine()
    client = AsyncMongoClient(engine)
    jobs = client["t"]["jobs"]
    await jobs.create_index(SWEEP_INDEX_KEYS)
    await jobs.insert_many([{"status": "Completed", "jobType": "a"} for _ in range(2_000)])
    await jobs.insert_many(
        [{"status": "InProgress", "jobType": "a"} for _ in range(10)] + [{"status": "Odd"}, {"jobType": "a"}]
    )
    examined = 0
    borrow = engine._borrow_storage_document

    def counted(data: Any) -> Any:
        nonlocal examined
        examined += 1
        return borrow(data)

    monkeypatch.setattr(engine, "_borrow_storage_document", counted)
    try:
        assert len(await jobs.find({"status": {"$in": OPEN_SPELLINGS}}).to_list()) == 10
        assert examined == 11  # and the missing status: only string keys are ruled out
        examined = 0
        assert len(await jobs.find({"status": {"$nin": KNOWN_SPELLINGS}, "jobType": {"$in": ["a"]}}).to_list()) == 1
        assert examined == 2  # the missing status and "Odd": the index cannot tell their type apart
    finally:
        await client.close()
