"""The jobs collection as the watcher uses it: the storage boundary.

Driver exceptions stop here: transient ones become ``errors.StoreUnavailable``,
a write the server refuses for one job becomes ``WriteRejected`` (logged with
the job's id, never fatal).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from pymongo import ASCENDING
from pymongo import errors as pymongo_errors
from pymongo.asynchronous.database import AsyncDatabase

from rules import Evaluation
from rules.status import Status, spellings
from watcher.ops import logs
from watcher.storage import errors
from watcher.decide import updates
from watcher.settings import Settings

#: The fields the rules read: sweeps and the change stream fetch only these.
JOB_FIELDS = ("jobType", "status", "progress", "totalItems", "completedItems", "collectionId", "stages")
OPEN_SPELLINGS = spellings(Status.PENDING, Status.IN_PROGRESS)
KNOWN_SPELLINGS = OPEN_SPELLINGS + spellings(Status.COMPLETED, Status.FAILED, Status.CANCELLED)
SWEEP_INDEX = "jobwatch_open_status"


class WriteRejected(Exception):
    """The server refused a write to one job (validation, type mismatch)."""


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        with errors.at_storage_boundary(what):
            yield
    except pymongo_errors.WriteError as exc:
        raise WriteRejected(f"{what}: {errors.name(exc)}: {exc.details.get('errmsg') if exc.details else exc}") from exc


class JobStore:
    def __init__(self, db: AsyncDatabase[Any], settings: Settings) -> None:
        self._jobs = db[settings.jobs_collection]
        self._collections = db[settings.collections_collection]
        self._settings = settings

    async def apply(self, evaluation: Evaluation) -> bool:
        """One conditional update round trip. False when the guard no longer
        held (the document moved on; its own change event re-evaluates it).
        With ``settings.observe`` the update is logged, not sent, and counts as applied."""
        query, update = updates.for_evaluation(evaluation)
        if self._settings.observe:  # --observe: decide and log as usual, write nothing
            logs.event("write_observed", "INFO", "observe mode: not written", job_id=evaluation.job_id, outcome=evaluation.outcome.value, update=update)
            return True
        with _translated(f"update of job {evaluation.job_id!r}"):
            result = await self._jobs.update_one(query, update)
        return result.matched_count == 1

    async def get(self, job_id: Any) -> dict[str, Any] | None:
        with _translated(f"read of job {job_id!r}"):
            return await self._jobs.find_one({"_id": job_id})

    def _type_filter(self, job_types: Iterable[str]) -> dict[str, Any]:
        types = list(job_types) or list(self._settings.job_types)
        return {"jobType": {"$in": types}} if types else {}

    async def open_jobs(self, *, full: bool, job_types: Iterable[str] = ()) -> AsyncIterator[list[dict[str, Any]]]:
        """Open jobs in batches, projected to what the rules read.

        The indexed pass reads jobs whose status is an open spelling (partial
        index: cost follows open jobs). ``full`` adds the jobs with a missing
        or unknown status, which no index can select: an unindexed scan.
        """
        queries = [{"status": {"$in": OPEN_SPELLINGS}}]
        if full:
            queries.append({"status": {"$nin": KNOWN_SPELLINGS}})
        projection = dict.fromkeys(JOB_FIELDS, 1)
        for query in queries:
            query.update(self._type_filter(job_types))
            with _translated("sweep read"):
                cursor = self._jobs.find(query, projection, batch_size=self._settings.sweep_batch_size)
                batch: list[dict[str, Any]] = []
                async for doc in cursor:
                    batch.append(doc)
                    if len(batch) >= self._settings.sweep_batch_size:
                        yield batch
                        batch = []
            if batch:
                yield batch

    async def collection_counts(self, collection_ids: Iterable[Any]) -> dict[Any, dict[str, int]]:
        """Path A: per collection, the number of items per stage, counted on the
        server with ``$size`` (the arrays themselves never cross the wire)."""
        ids = list({job_key(cid): cid for cid in collection_ids}.values())
        if not ids:
            return {}
        sizes = {stage: {"$size": {"$ifNull": [f"${field}", []]}} for stage, field in self._settings.stage_arrays.items()}
        pipeline: list[Mapping[str, Any]] = [{"$match": {"_id": {"$in": ids}}}, {"$project": sizes}]
        with _translated("collection counts"):
            cursor = await self._collections.aggregate(pipeline)
            docs = await cursor.to_list()
        return {job_key(doc.pop("_id")): doc for doc in docs}

    async def ensure_sweep_index(self) -> bool:
        """Create the partial index on open statuses if absent. True if created."""
        with _translated("sweep index"):
            existing = await self._jobs.index_information()
            if SWEEP_INDEX in existing:
                return False
            await self._jobs.create_index(
                [("status", ASCENDING), ("jobType", ASCENDING)],
                name=SWEEP_INDEX,
                partialFilterExpression={"status": {"$in": OPEN_SPELLINGS}},
            )
        return True

    async def count_open(self) -> list[dict[str, Any]]:
        """Open jobs grouped by status and type, for ``jobwatch status``."""
        pipeline: list[Mapping[str, Any]] = [
            {"$match": {"status": {"$nin": spellings(Status.COMPLETED, Status.FAILED, Status.CANCELLED)}}},
            {"$group": {"_id": {"status": "$status", "jobType": "$jobType"}, "count": {"$sum": 1}}},
            {"$sort": {"count": -1}},
        ]
        with _translated("open job counts"):
            cursor = await self._jobs.aggregate(pipeline)
            return await cursor.to_list()


def job_key(value: Any) -> Any:
    """A dict key for an ``_id``: the id itself, or its repr when unhashable
    (legacy rows may hold a document as ``_id``)."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
