"""Completion latency and write cost: jobwatch against the seed's 5-second poller.

    ./dev bench latency_vs_poller [--jobs 20] [--items 60] [--rate 400]

All three run in this process against the embedded server (real PyMongo and
its change streams over the wire), one after another, each on its own database, under the same
consumer load (``watcher.simulate``):

- ``seed poller (original)``: the incident's JobMonitoringService, every 5 s,
  with its filter ``collectionId != null`` (legacy jobs never complete);
- ``seed poller (fixed)``: the same with the seed's fix (no collectionId filter);
- ``jobwatch``: the change-stream watcher.

Latency is measured on one clock by an observer stream: from the moment the
stream shows a job's last item counted to the moment it shows the job
Completed. Writes are update commands the status-keeper sent.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from watcher.embedded import server
from watcher.ops import logs
from watcher.cli import simulate  # noqa: E402
from watcher.service import Watcher  # noqa: E402
from watcher.settings import Settings  # noqa: E402

POLL_INTERVAL_S = 5.0
OPEN = ["Pending", "InProgress"]


class SeedPoller:
    """The seed's JobMonitoringService, faithfully: poll, then per stage one
    update, then the job. ``require_collection`` is the bug."""

    def __init__(self, db: Any, *, require_collection: bool) -> None:
        self.jobs = db["background_jobs"]
        self.require_collection = require_collection
        self.writes = 0

    async def run(self) -> None:
        while True:
            await anyio.sleep(POLL_INTERVAL_S)
            await self.poll()

    async def poll(self) -> None:
        query: dict[str, Any] = {"jobType": {"$in": ["collection-scan", "resume-collection"]}, "status": {"$in": OPEN}}
        if self.require_collection:
            query["collectionId"] = {"$ne": None}
        async for job in self.jobs.find(query):
            stages = job.get("stages", {})
            for name, stage in stages.items():
                if stage["completedItems"] >= stage["totalItems"] > 0 and stage["status"] != "Completed":
                    await self.jobs.update_one(
                        {"_id": job["_id"]},
                        {"$set": {f"stages.{name}.status": "Completed", f"stages.{name}.progress": 100}, "$currentDate": {f"stages.{name}.completedAt": True}},
                    )
                    self.writes += 1
                    stage["status"] = "Completed"
            if stages and all(s["status"] == "Completed" for s in stages.values()):
                await self.jobs.update_one(
                    {"_id": job["_id"]},
                    {"$set": {"status": "Completed", "progress": 100, "message": "All stages completed successfully"}, "$currentDate": {"completedAt": True}},
                )
                self.writes += 1


async def observe(events: Any, counted: dict[Any, float], done: dict[Any, float]) -> None:
    while True:
        event = await events.try_next()
        if event is None:
            await anyio.sleep(0)
            continue
        doc, now = event.get("fullDocument") or {}, time.monotonic()
        stages = list((doc.get("stages") or {}).values())
        if stages and all(s.get("completedItems", 0) >= s.get("totalItems", 1) for s in stages):
            counted.setdefault(doc["_id"], now)
        if doc.get("status") == "Completed":
            done.setdefault(doc["_id"], now)


async def scenario(uri: str, client: AsyncMongoClient[Any], name: str, plan: simulate.Plan, settle_s: float) -> dict[str, Any]:
    database = "bench_" + name.replace(" ", "_").replace("(", "").replace(")", "")
    settings = Settings(uri=uri, database=database, health_port=0, sweep_interval_s=3600)
    db = client[database]
    counted: dict[Any, float] = {}
    done: dict[Any, float] = {}
    # Each write's post-image ("whenAvailable": the embedded server keeps it).
    events = await db.background_jobs.watch(full_document="whenAvailable", max_await_time_ms=50)
    writes = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(observe, events, counted, done)
        if name == "jobwatch":
            watcher = Watcher(client, settings)
            async with watcher:
                outcome = await simulate.play(db, settings, plan)
                await _settle(done, outcome.job_ids, settle_s)
            writes = int(sum(s.value for m in watcher.metrics.writes.collect() for s in m.samples if s.name.endswith("_total")))
        else:
            poller = SeedPoller(db, require_collection="original" in name)
            tg.start_soon(poller.run)
            outcome = await simulate.play(db, settings, plan)
            await _settle(done, outcome.job_ids, settle_s)
            writes = poller.writes
        tg.cancel_scope.cancel()
    await events.close()
    latencies = [(done[j] - counted[j]) * 1000 for j in outcome.job_ids if j in done and j in counted]
    return {
        "name": name,
        "completed": sum(j in done for j in outcome.job_ids),
        "jobs": len(outcome.job_ids),
        "increments": outcome.increments,
        "inc_per_s": outcome.increments / outcome.elapsed_s if outcome.elapsed_s else 0.0,
        "writes": writes,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": _quantile(latencies, 0.95),
        "max": max(latencies, default=float("nan")),
    }


async def _settle(done: dict[Any, float], job_ids: list[Any], deadline_s: float) -> None:
    with anyio.move_on_after(deadline_s):
        while not all(j in done for j in job_ids):
            await anyio.sleep(0.05)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--items", type=int, default=60, help="items per stage (2 stages)")
    parser.add_argument("--consumers", type=int, default=8)
    parser.add_argument("--rate", type=float, default=400.0, help="increments/s over all consumers")
    parser.add_argument("--legacy-fraction", type=float, default=0.3)
    args = parser.parse_args()
    logs.setup(level="WARNING")
    plan = simulate.Plan(jobs=args.jobs, items=args.items, consumers=args.consumers, rate=args.rate, legacy_fraction=args.legacy_fraction, seed=42)
    rows = []
    async with server.start() as embedded_server:
        client: AsyncMongoClient[Any] = AsyncMongoClient(embedded_server.uri)
        for name in ("seed poller (original)", "seed poller (fixed)", "jobwatch"):
            rows.append(await scenario(embedded_server.uri, client, name, plan, settle_s=POLL_INTERVAL_S * 2.5))
        await client.close()
    print(f"load: {args.jobs} jobs x 2 stages x {args.items} items, {args.consumers} consumers at {args.rate:g} $inc/s, "
          f"{args.legacy_fraction:.0%} legacy (collectionId null); embedded server, one process")
    print(f"{'status keeper':<24} {'completed':>10} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9} {'writes':>7} {'writes/job':>10} {'$inc':>6} {'$inc/s':>7}")
    for r in rows:
        print(f"{r['name']:<24} {r['completed']:>4}/{r['jobs']:<5} {r['p50']:>9.1f} {r['p95']:>9.1f} {r['max']:>9.1f} {r['writes']:>7} {r['writes'] / r['jobs']:>10.1f} {r['increments']:>6} {r['inc_per_s']:>7.0f}")


if __name__ == "__main__":
    anyio.run(main)
