"""The seed's JobMonitoringService, the baseline every headline figure is a ratio to.

Faithful to the incident report: every ``interval_s`` it reads the open jobs
of the two watched types, then sends one update per finished stage and one
for the job. ``require_collection=True`` is the original filter (the bug:
jobs with a null ``collectionId`` are never looked at); ``False`` is the
seed's fix.
"""

from __future__ import annotations

from typing import Any

import anyio

POLL_INTERVAL_S = 5.0
WATCHED_TYPES = ["collection-scan", "resume-collection"]
OPEN = ["Pending", "InProgress"]
VARIANTS = {"poller_original": True, "poller_fixed": False}


class SeedPoller:
    def __init__(
        self,
        db: Any,
        *,
        require_collection: bool,
        interval_s: float = POLL_INTERVAL_S,
        jobs_collection: str = "background_jobs",
    ) -> None:
        self.jobs = db[jobs_collection]
        self.require_collection = require_collection
        self.interval_s = interval_s
        self.writes = 0
        self.polls = 0

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval_s)
            await self.poll()

    def query(self) -> dict[str, Any]:
        query: dict[str, Any] = {"jobType": {"$in": WATCHED_TYPES}, "status": {"$in": OPEN}}
        if self.require_collection:
            query["collectionId"] = {"$ne": None}
        return query

    async def poll(self) -> None:
        self.polls += 1
        async for job in self.jobs.find(self.query()):
            stages = job.get("stages", {})
            for name, stage in stages.items():
                if stage["completedItems"] >= stage["totalItems"] > 0 and stage["status"] != "Completed":
                    await self.jobs.update_one(
                        {"_id": job["_id"]},
                        {
                            "$set": {f"stages.{name}.status": "Completed", f"stages.{name}.progress": 100},
                            "$currentDate": {f"stages.{name}.completedAt": True},
                        },
                    )
                    self.writes += 1
                    stage["status"] = "Completed"
            if stages and all(s["status"] == "Completed" for s in stages.values()):
                await self.jobs.update_one(
                    {"_id": job["_id"]},
                    {
                        "$set": {
                            "status": "Completed",
                            "progress": 100,
                            "message": "All stages completed successfully",
                        },
                        "$currentDate": {"completedAt": True},
                    },
                )
                self.writes += 1
