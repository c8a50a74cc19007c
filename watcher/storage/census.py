"""The job census: what the metrics say about all jobs, not just the ones the
watcher touched. One aggregation on the server every ``census_interval_s``:
open jobs, open jobs whose every stage counter says done (the watcher should
have completed them: an alert when it stays above 0), and the oldest open
job's age.

A census failure is logged and retried at the next interval; it never stops
the watcher (``run`` below catches every storage error).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from pymongo.asynchronous.database import AsyncDatabase

from rules.status import Status, spellings
from watcher.ops import logs
from watcher.ops.metrics import Metrics
from watcher.settings import Settings
from watcher.storage import errors

TERMINAL = spellings(Status.COMPLETED, Status.FAILED, Status.CANCELLED)


@dataclass(frozen=True)
class Census:
    open_jobs: int
    done_but_open: int
    oldest_open_at: dt.datetime | None


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


def pipeline(job_types: Iterable[str] = ()) -> list[Mapping[str, Any]]:
    match: dict[str, Any] = {"status": {"$nin": TERMINAL}}
    types = list(job_types)
    if types:
        match["jobType"] = {"$in": types}
    return [
        {"$match": match},
        {"$group": {"_id": None, "open": {"$sum": 1}, "done": {"$sum": {"$cond": [_DONE, 1, 0]}}, "oldest": {"$min": _CREATED}}},
    ]


async def take(db: AsyncDatabase[Any], settings: Settings) -> Census:
    with errors.translated("job census", "retry"):
        cursor = await db[settings.jobs_collection].aggregate(pipeline(settings.job_types))
        docs = await cursor.to_list()
    if not docs:
        return Census(0, 0, None)
    oldest = docs[0].get("oldest")
    if isinstance(oldest, dt.datetime) and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return Census(int(docs[0].get("open", 0)), int(docs[0].get("done", 0)), oldest if isinstance(oldest, dt.datetime) else None)


def publish(census: Census, metrics: Metrics, now: dt.datetime) -> None:
    metrics.open_jobs.set(census.open_jobs)
    metrics.done_but_open.set(census.done_but_open)
    age_s = (now - census.oldest_open_at).total_seconds() if census.oldest_open_at else 0.0
    metrics.oldest_open_age.set(max(age_s, 0.0))
    metrics.census_time.set(now.timestamp())


async def run(db: AsyncDatabase[Any], settings: Settings, metrics: Metrics) -> None:
    """Forever: a census now and every ``census_interval_s``. Storage errors
    (and a server that cannot run the aggregation) are logged and retried."""
    while True:
        try:
            publish(await take(db, settings), metrics, dt.datetime.now(dt.UTC))
        except (errors.StorageProblem, errors.ConfigurationProblem, errors.Unreachable) as exc:
            # The census only informs metrics: whatever the server says, the watcher goes on.
            metrics.errors.labels(errors.name(exc), "census").inc()
            logs.event("census_failed", "WARNING", "job census failed; the next one will retry", error=errors.name(exc), detail=str(exc)[:200])
        await anyio.sleep(settings.census_interval_s)

