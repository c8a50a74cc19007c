"""The jobs collection as the watcher uses it: the storage boundary.

``JobStore`` is the seam the dispatcher and the sweep are written against
(tests give them an in-memory one); ``MongoJobStore`` is the real one.
Every driver call runs inside ``errors.translated``: what comes out is a
result or one of the outcomes in ``watcher.storage.errors`` (retry later,
skip this job, fatal), never a ``pymongo.errors`` exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Protocol

import bson
from bson import ObjectId, json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from rules import status as job_status
from watcher.ops import logs
from watcher.settings import Settings
from watcher.storage import errors
from watcher.storage.partitions import EVERYTHING, Slice

#: The fields the rules read: sweeps and the change stream fetch only these.
JOB_FIELDS = ("jobType", "status", "progress", "totalItems", "completedItems", "collectionId", "stages")
OPEN_SPELLINGS = job_status.OPEN_SPELLINGS
KNOWN_SPELLINGS = job_status.KNOWN_SPELLINGS
#: A plain index on (status, jobType). MongoDB 5.0 rejects ``$in`` in a
#: partial filter, and a plain index serves both sweep passes: the ``$in``
#: pass reads only open statuses, and the ``$nin`` pass's index bounds skip
#: the terminal values, so neither reads the finished jobs that make up
#: most of the collection.
SWEEP_INDEX = "jobwatch_status_type"
SWEEP_INDEX_KEYS = [("status", ASCENDING), ("jobType", ASCENDING)]
#: Read jobs raw, decode one by one: an undecodable document costs one job.
RAW = CodecOptions(document_class=RawBSONDocument)


class Unreadable(dict[str, Any]):
    """A job document the driver could not decode: its ``_id`` and why."""

    def __init__(self, job_id: Any, reason: str) -> None:
        super().__init__(_id=job_id)
        self.reason = reason


class JobStore(Protocol):
    """What the dispatcher and the sweep need of the jobs: one guarded write,
    the open jobs, path A's counts. Raises only the outcomes of
    ``watcher.storage.errors``."""

    async def apply(self, job_id: Any, query: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
        """One conditional update; False when the guard no longer held."""
        ...

    def open_jobs(
        self, *, full: bool, job_types: Iterable[str] = (), fields: Iterable[str] = ()
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Open jobs in batches (an ``Unreadable`` for a document that cannot be decoded)."""
        ...

    async def collection_counts(self, collection_ids: Iterable[Any]) -> dict[Any, dict[str, int]]:
        """Path A: per collection id, the number of items per stage."""
        ...


class MongoJobStore:
    """The jobs (and their collections) in MongoDB.

    Plain values, not the whole ``Settings`` (``from_settings`` reads them
    there): the collections, the job types a sweep reads (empty: every
    type), the stage -> collection array map, the sweep's batch size,
    ``observe`` (decide and log every write, send none) and the partition
    whose jobs a sweep reads (every job by default).
    """

    def __init__(
        self,
        jobs: AsyncCollection[Any],
        collections: AsyncCollection[Any],
        *,
        stage_arrays: Mapping[str, str],
        job_types: Iterable[str] = (),
        batch_size: int = 500,
        observe: bool = False,
        partition: Slice = EVERYTHING,
    ) -> None:
        self._jobs = jobs
        self._collections = collections
        self._stage_arrays = dict(stage_arrays)
        self._job_types = tuple(job_types)
        self._batch_size = batch_size
        self._observe = observe
        self._mine = partition.match("$_id")

    @classmethod
    def from_settings(
        cls, db: AsyncDatabase[Any], settings: Settings, *, partition: Slice = EVERYTHING
    ) -> MongoJobStore:
        return cls(
            db[settings.jobs_collection],
            db[settings.collections_collection],
            stage_arrays=settings.stage_arrays,
            job_types=settings.job_types,
            batch_size=settings.sweep_batch_size,
            observe=settings.observe,
            partition=partition,
        )

    async def apply(self, job_id: Any, query: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
        """One conditional update round trip (``query`` carries the guard).
        False when the guard no longer held (the document moved on; its own
        change event re-evaluates it). Raises ``errors.StoreUnavailable``
        (retry) or ``errors.Rejected`` (skip). With ``observe`` the update is
        logged, not sent, and counts as applied."""
        if self._observe:  # --observe: decide and log as usual, write nothing
            # As MongoDB's tools show an update (Extended JSON), not as a Python dict.
            shown = json_util.dumps(update, json_options=json_util.RELAXED_JSON_OPTIONS)
            logs.event("write_observed", "INFO", "observe mode: not written", job_id=job_id, update=shown)
            return True
        with errors.translated(f"update of job {job_id!r}", "skip"):
            result = await self._jobs.update_one(query, update)
        return result.matched_count == 1

    async def get(self, job_id: Any) -> dict[str, Any] | None:
        with errors.translated(f"read of job {job_id!r}", "retry"):
            return await self._jobs.find_one({"_id": job_id})

    def _sweep_queries(self, full: bool, job_types: Iterable[str]) -> list[dict[str, Any]]:
        """The sweep's passes: open spellings; with ``full``, a missing or unknown status too."""
        types = list(job_types) or list(self._job_types)
        by_type: dict[str, Any] = {"jobType": {"$in": types}} if types else {}
        if self._mine is not None:
            by_type["$expr"] = self._mine
        queries: list[dict[str, Any]] = [{"status": {"$in": OPEN_SPELLINGS}, **by_type}]
        if full:
            queries.append({"status": {"$nin": KNOWN_SPELLINGS}, **by_type})
        return queries

    async def open_jobs(
        self, *, full: bool, job_types: Iterable[str] = (), fields: Iterable[str] = ()
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Open jobs in batches, projected to what the rules read (and ``fields``).

        The first pass reads jobs whose status is an open spelling; ``full``
        adds those with a missing or unknown status (together: every job
        whose status is not terminal). Documents are decoded one by one, so a
        document the driver cannot decode becomes one ``Unreadable`` entry
        (one skipped job), not a failed sweep. A failed find or getMore
        raises ``errors.StoreUnavailable``: the sweep retries.
        """
        projection = dict.fromkeys((*JOB_FIELDS, *fields), 1)
        raw_jobs = self._jobs.with_options(codec_options=RAW)
        for query in self._sweep_queries(full, job_types):
            batch: list[dict[str, Any]] = []
            with errors.translated("sweep read", "retry"):
                cursor = raw_jobs.find(query, projection, batch_size=self._batch_size)
                try:
                    async for raw in cursor:
                        batch.append(decode(raw))
                        if len(batch) >= self._batch_size:
                            yield batch
                            batch = []
                finally:
                    await cursor.close()
            if batch:
                yield batch

    async def collection_counts(self, collection_ids: Iterable[Any]) -> dict[Any, dict[str, int]]:
        """Path A: per collection, the number of items per stage, counted on the
        server (the arrays themselves never cross the wire).

        A field that is not an array (a string, a number, null, missing) gives
        no count: that stage falls back to its own counters. If the server
        still refuses the batch, each collection is asked alone, so one bad
        collection document costs at most its own job's path A.
        """
        ids = list({job_key(cid): cid for cid in collection_ids}.values())
        if not ids:
            return {}
        try:
            return await self._counts(ids)
        except errors.Rejected:
            pass
        counts: dict[Any, dict[str, int]] = {}
        for one in ids:
            try:
                counts.update(await self._counts([one]))
            except errors.Rejected:
                continue  # this collection's counts are no evidence; path B applies
        return counts

    async def _counts(self, ids: list[Any]) -> dict[Any, dict[str, int]]:
        sizes = {
            stage: {"$cond": [{"$isArray": f"${field}"}, {"$size": f"${field}"}, None]}
            for stage, field in self._stage_arrays.items()
        }
        pipeline: list[Mapping[str, Any]] = [{"$match": {"_id": {"$in": ids}}}, {"$project": sizes}]
        # "skip": an error the server gives for these documents skips them
        # (Rejected); transient trouble is StoreUnavailable, as for any read.
        with errors.translated("collection counts", "skip"):
            cursor = await self._collections.aggregate(pipeline)
            docs = await cursor.to_list()
        counts: dict[Any, dict[str, int]] = {}
        for doc in docs:
            key = job_key(doc.pop("_id", None))
            counts[key] = {
                stage: value for stage, value in doc.items() if isinstance(value, int) and not isinstance(value, bool)
            }
        return counts

    async def jobs_collection_exists(self) -> bool | None:
        """Whether the jobs collection exists in the database (a wrong
        ``--database`` or ``--jobs-collection`` reads nothing, silently);
        None when the server will not say. ``authorizedCollections`` lets the
        least-privilege role ask without the ``listCollections`` action."""
        name = self._jobs.name
        try:
            with errors.translated("list collections", "retry"):
                found = await self._jobs.database.list_collection_names(
                    filter={"name": name}, authorizedCollections=True
                )
        except (errors.StorageProblem, errors.ConfigurationProblem):
            return None
        return name in found

    async def ensure_sweep_index(self) -> bool:
        """Create the sweep's index if absent. True if created. Raises
        ``errors.Rejected`` when the server refuses it (the sweep works
        without it, only slower) or ``errors.StoreUnavailable``."""
        with errors.translated("sweep index", "skip"):
            existing = await self._jobs.index_information()
            if any(
                info.get("key") == SWEEP_INDEX_KEYS and "partialFilterExpression" not in info
                for info in existing.values()
            ):
                return False
            await self._jobs.create_index(SWEEP_INDEX_KEYS, name=SWEEP_INDEX)
        return True

    async def explain_sweep(self, *, full: bool, job_types: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The server's plan for each query ``open_jobs`` sends (for tests and operators)."""
        plans: list[dict[str, Any]] = []
        with errors.translated("sweep explain", "retry"):
            for query in self._sweep_queries(full, job_types):
                plans.append(await self._jobs.find(query, dict.fromkeys(JOB_FIELDS, 1)).explain())
        return plans

    async def count_open(self) -> list[dict[str, Any]]:
        """Open jobs grouped by status and type, for ``jobwatch status``."""
        pipeline: list[Mapping[str, Any]] = [
            {"$match": {"status": {"$nin": job_status.TERMINAL_SPELLINGS}}},
            {"$group": {"_id": {"status": "$status", "jobType": "$jobType"}, "count": {"$sum": 1}}},
            {"$sort": {"count": -1}},
        ]
        with errors.translated("open job counts", "retry"):
            cursor = await self._jobs.aggregate(pipeline)
            return await cursor.to_list()


def decode(raw: RawBSONDocument) -> dict[str, Any]:
    """One raw job document, or an ``Unreadable`` saying why it cannot be decoded."""
    try:
        return bson.decode(raw.raw)
    except (bson.errors.BSONError, ValueError, OverflowError) as exc:
        return Unreadable(_raw_id(raw), f"undecodable document ({type(exc).__name__})")


def _raw_id(raw: RawBSONDocument) -> Any:
    try:
        return raw["_id"]
    except (bson.errors.BSONError, ValueError, KeyError, OverflowError):  # the _id itself cannot be decoded
        return "<undecodable _id>"


def job_key(value: Any) -> Any:
    """A dict key for an ``_id``: the id itself, or its repr when unhashable
    (legacy rows may hold a document as ``_id``)."""
    if type(value) is ObjectId:
        return value  # the common case, at once (its hash is a Python call)
    if isinstance(value, float) and value != value:
        # NaN is not equal to itself: as a dict key each event's NaN would be
        # a new job (no coalescing, a skip warned again and again). One
        # object stands for it: no other job's key, and it logs as "nan".
        return _NAN_ID
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


class _NanId:
    def __repr__(self) -> str:
        return "nan"


_NAN_ID = _NanId()
