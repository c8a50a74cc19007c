"""The job census: what the metrics say about all jobs, not just the ones the
watcher touched. One aggregation on the server every ``census_interval_s``:
open jobs, open jobs whose every stage counter says done (the watcher should
have completed them: an alert when it stays above 0), both by job type (the
most common types, then ``other``: a bounded label), and the oldest open
job's age.

A census failure is logged and retried at the next interval; it never stops
the watcher (``run`` below catches every storage error).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from pymongo.asynchronous.database import AsyncDatabase

from rules import status as job_status
from watcher.ops import logs, printable
from watcher.ops.metrics import JOB_TYPE_LABELS, OTHER_JOB_TYPES, Metrics
from watcher.settings import Settings
from watcher.storage import errors
from watcher.storage.partitions import EVERYTHING, Slice

TERMINAL = job_status.TERMINAL_SPELLINGS


@dataclass(frozen=True)
class Census:
    open_jobs: int
    done_but_open: int
    oldest_open_at: dt.datetime | None
    #: Open and done-but-open jobs by job-type label: the ``JOB_TYPE_LABELS``
    #: types with the most open jobs, then ``other`` for the rest.
    open_by_type: Mapping[str, int] = field(default_factory=dict)
    done_by_type: Mapping[str, int] = field(default_factory=dict)


def _number(path: str) -> dict[str, Any]:
    return {"$in": [{"$type": path}, ["int", "long", "double", "decimal"]]}


#: Every stage an object with numeric counters, completedItems >= totalItems,
#: and at least one stage. Type checks first: BSON order would rank a string
#: counter above any number.
_STAGES = {"$objectToArray": {"$cond": [{"$eq": [{"$type": "$stages"}, "object"]}, "$stages", {}]}}
_DONE = {
    "$let": {
        "vars": {"stages": _STAGES},
        "in": {
            "$and": [
                {"$gt": [{"$size": "$$stages"}, 0]},
                {
                    "$allElementsTrue": [
                        {
                            "$map": {
                                "input": "$$stages",
                                "in": {
                                    "$and": [
                                        {"$eq": [{"$type": "$$this.v"}, "object"]},
                                        _number("$$this.v.completedItems"),
                                        _number("$$this.v.totalItems"),
                                        {"$gte": ["$$this.v.completedItems", "$$this.v.totalItems"]},
                                    ]
                                },
                            }
                        }
                    ]
                },
            ]
        },
    }
}
_CREATED = {
    "$cond": [
        {"$eq": [{"$type": "$createdAt"}, "date"]},
        "$createdAt",
        {"$cond": [{"$eq": [{"$type": "$_id"}, "objectId"]}, {"$toDate": "$_id"}, None]},
    ]
}


def pipeline(job_types: Iterable[str] = (), partition: Slice = EVERYTHING) -> list[Mapping[str, Any]]:
    match: dict[str, Any] = {"status": {"$nin": TERMINAL}}
    types = list(job_types)
    if types:
        match["jobType"] = {"$in": types}
    mine = partition.match("$_id")
    if mine is not None:
        match["$expr"] = mine
    return [
        {"$match": match},
        {
            "$group": {
                "_id": "$jobType",
                "open": {"$sum": 1},
                "done": {"$sum": {"$cond": [_DONE, 1, 0]}},
                "oldest": {"$min": _CREATED},
            }
        },
        {"$sort": {"open": -1, "_id": 1}},  # ties in a stable order: the labelled types do not flap
    ]


def job_type_label(job_type: Any) -> str:
    """A job type as a metrics label: printable and short (a value from a
    document); a missing or null type, or one that is no text, says so."""
    if job_type is None:
        return "(none)"
    if not isinstance(job_type, str):
        return "(not text)"
    return printable.label(job_type)


async def take(db: AsyncDatabase[Any], settings: Settings, partition: Slice = EVERYTHING) -> Census:
    """The census of ``partition``'s jobs (every job by default). Read group by group (one per job type, most open jobs
    first): the first ``JOB_TYPE_LABELS`` labels are kept, the rest summed
    into ``other``, so memory does not grow with the number of types."""
    open_jobs = done = 0
    oldest: dt.datetime | None = None
    open_by_type: dict[str, int] = {}
    done_by_type: dict[str, int] = {}
    if partition.nothing:  # no partition held: all zero, nothing asked
        return Census(open_jobs, done, oldest, open_by_type, done_by_type)
    with errors.translated("job census", "retry"):
        cursor = await db[settings.jobs_collection].aggregate(pipeline(settings.job_types, partition))
        async for group in cursor:
            count, done_here = int(group.get("open", 0)), int(group.get("done", 0))
            open_jobs, done = open_jobs + count, done + done_here
            label = job_type_label(group.get("_id"))
            if label not in open_by_type and len(open_by_type) >= JOB_TYPE_LABELS:
                label = OTHER_JOB_TYPES
            open_by_type[label] = open_by_type.get(label, 0) + count
            done_by_type[label] = done_by_type.get(label, 0) + done_here
            at = group.get("oldest")
            if isinstance(at, dt.datetime):
                at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
                oldest = at if oldest is None else min(oldest, at)
    return Census(open_jobs, done, oldest, open_by_type, done_by_type)


def publish(census: Census, metrics: Metrics, now: dt.datetime) -> None:
    metrics.publish_by_job_type(census.open_by_type, census.done_by_type)
    age_s = (now - census.oldest_open_at).total_seconds() if census.oldest_open_at else 0.0
    metrics.oldest_open_age.set(max(age_s, 0.0))
    metrics.census_time.set(now.timestamp())


async def run(
    db: AsyncDatabase[Any], settings: Settings, metrics: Metrics, partition: Callable[[], Slice] = lambda: EVERYTHING
) -> None:
    """Forever: a census now and every ``census_interval_s``, of the jobs in
    ``partition()`` (the partitions this instance holds: a standby counts
    none). Storage errors (and a server that cannot run the aggregation) are
    logged and retried."""
    while True:
        try:
            publish(await take(db, settings, partition()), metrics, dt.datetime.now(dt.UTC))
        except (errors.StorageProblem, errors.ConfigurationProblem, errors.Unreachable) as exc:
            # The census only informs metrics: whatever the server says, the watcher goes on.
            metrics.errors.labels(errors.name(exc), "census").inc()
            logs.event(
                "census_failed",
                "WARNING",
                "job census failed; the next one will retry",
                error=errors.name(exc),
                detail=str(exc)[:200],
            )
        await anyio.sleep(settings.census_interval_s)
