"""Progress never stays stale once consumers stop (issue 16): a progress write
the budget held back is made once the job has been quiet for
``progress_interval_s``, not at the next sweep (an hour away here)."""

from __future__ import annotations

import anyio

import rules
from tests.support.backends import Backend
from tests.support.documents import fresh_job
from tests.support.harness import metric, running, wait_until
from watcher import Watcher

#: More progress writes than the budget's burst of 10 can pay for when no
#: event earns any (``progress_write_share=0``).
INCREMENTS = 14
INTERVAL_S = 0.1


def evaluated(watcher: Watcher) -> float:
    """The stream's evaluations so far, whatever their outcome."""
    return sum(metric(watcher, "jobwatch_evaluations_total", source="stream", outcome=o.value) for o in rules.Outcome)


async def test_the_last_progress_is_stored_soon_after_the_consumers_stop(mongo: Backend) -> None:
    jobs = mongo.db.background_jobs
    job = fresh_job(40, stages=("thumbnail",))
    async with running(mongo, progress_interval_s=INTERVAL_S, progress_write_share=0.0) as watcher:
        await jobs.insert_one(job)
        for _ in range(INCREMENTS):
            before = evaluated(watcher)
            await jobs.update_one({"_id": job["_id"]}, {"$inc": {"stages.thumbnail.completedItems": 1}})

            async def seen(before: float = before) -> bool:
                return evaluated(watcher) > before

            # Each increment evaluated on its own, however loaded the machine (two in one batch would be one write).
            await wait_until(seen, what="the increment to be evaluated")
            await anyio.sleep(INTERVAL_S * 1.5)  # paced past the rate limit: the budget is what holds writes back

        async def current() -> bool:
            doc = await jobs.find_one({"_id": job["_id"]})
            return (
                doc is not None
                and doc["stages"]["thumbnail"]["completedItems"] == INCREMENTS
                and not rules.evaluate(doc).writes
            )

        await wait_until(current, what="the job's stored progress to catch up with its counters")
        assert metric(watcher, "jobwatch_writes_total", source="stream", kind="progress", result="applied") > 10
        assert (
            metric(watcher, "jobwatch_sweep_findings_total", kind="progress_updated") == 0
        )  # the stream did it, not a sweep
