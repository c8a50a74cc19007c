"""``jobwatch demo``: the seed incident end to end, on the embedded engine.

1. A legacy job exactly like the incident's (132/132 done, stages
   ``InProgress``, job ``Pending``, ``collectionId: null``) sits in the
   database before the watcher starts: the start-up sweep completes it.
2. A live job of two 132-item stages: consumers ``$inc`` its counters while
   the watcher streams; it completes the moment the last item is counted.
3. A collection-scan job whose consumer lost increments: path A raises its
   counters from the collection's arrays on the next sweep.

It runs on ``jobwatch embedded-server``'s server, started in-process: the
watcher is the production one (``PyMongoChangeSource``, the driver's
``collection.watch()`` over the wire), as with ``jobwatch run --uri``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
from bson import ObjectId
from pymongo import AsyncMongoClient

from watcher.cli import embedded, simulate
from watcher.service import Watcher
from watcher.settings import Settings

ITEMS = 132
CONSUMERS = 12
POLLER_INTERVAL_S = 5.0  # the service jobwatch replaces


def seed_job() -> dict[str, Any]:
    """The incident's document: 132 of 132 items through both stages, stuck at Pending."""
    return {
        "_id": ObjectId("68ebf7fb500d92ef82221ec2"),
        "jobType": "resume-collection",
        "status": "Pending",
        "progress": 0,
        "totalItems": 0,
        "completedItems": 0,
        "stages": {
            "thumbnail": {"status": "InProgress", "completedItems": ITEMS, "totalItems": ITEMS},
            "cache": {"status": "InProgress", "completedItems": ITEMS, "totalItems": ITEMS},
        },
        "collectionId": None,
    }


def _line(doc: dict[str, Any]) -> str:
    stages = ", ".join(
        f"{name} {s.get('status')} {s.get('completedItems')}/{s.get('totalItems')}"
        for name, s in doc.get("stages", {}).items()
    )
    items = f"{doc.get('completedItems')}/{doc.get('totalItems')}"
    return f"status={doc.get('status')} progress={doc.get('progress')} items={items} [{stages}]"


async def run(out: Callable[[str], None] = print) -> int:
    """Returns the exit code: 0 when every demo job ended Completed."""
    if not embedded.available():
        out(f"jobwatch demo: {embedded.INSTALL_HINT}.")
        return 2
    from jobwatch_embedded import server

    async with server.start() as embedded_server:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(embedded_server.uri)
        try:
            return await _run(embedded_server.uri, client, out)
        finally:
            await client.close()


async def _run(uri: str, client: AsyncMongoClient[dict[str, Any]], out: Callable[[str], None]) -> int:
    settings = Settings(
        uri=uri,
        database="imageviewer",
        health_port=0,
        sweep_interval_s=3600,
        progress_interval_s=0.25,
        path_a_quiet_s=0.5,
    )
    db = client[settings.database]
    jobs = db[settings.jobs_collection]
    out(
        "jobwatch demo: the seed incident on the embedded server "
        "(no MongoDB; PyMongo and its change streams over the wire)"
    )

    legacy = seed_job()
    await jobs.insert_one(legacy)
    out(f"\n1. legacy job {legacy['_id']} ({legacy['jobType']}, collectionId null) before the watcher starts:")
    out(f"   {_line(legacy)}")
    out("   the 5-second poller skipped it forever: its filter required collectionId != null")

    # The demo's own observer: each write's post-image ("whenAvailable"), which
    # MongoDB (and the embedded server) records once the collection asks for it.
    await db.command({"collMod": settings.jobs_collection, "changeStreamPreAndPostImages": {"enabled": True}})
    events = await jobs.watch(full_document="whenAvailable", max_await_time_ms=50)
    watcher = Watcher(client, settings)
    started = time.perf_counter()
    async with watcher:
        startup_ms = (time.perf_counter() - started) * 1000
        report = watcher.last_sweep
        after = await jobs.find_one({"_id": legacy["_id"]}) or {}
        scanned, completed = (report.scanned, report.jobs_completed) if report else (0, 0)
        out(
            f"\n   watcher started in {startup_ms:.1f} ms: stream open, then the start-up sweep "
            f"({_jobs(scanned, 'open job')}, {completed} completed)"
        )
        out(f"   -> {_line(after)}")
        out(f"      message={after.get('message')!r} completedAt={after.get('completedAt')}")

        out(f"\n2. live job: {CONSUMERS} consumers process 2 stages x {ITEMS} items ($inc per item)")
        plan = simulate.Plan(jobs=1, items=ITEMS, consumers=CONSUMERS, legacy_fraction=1.0, seed=7)
        seen: dict[Any, float] = {}
        counted: dict[Any, float] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_completions, events, counted, seen)  # concurrently: the time it happens
            outcome = await simulate.play(db, settings, plan)
            live_id = outcome.job_ids[0]
            with anyio.fail_after(30):
                while live_id not in seen:
                    await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
        completed_at = seen[live_id]
        live = await jobs.find_one({"_id": live_id}) or {}
        latency_ms = (completed_at - counted[live_id]) * 1000
        out(f"   {outcome.increments} increments in {outcome.elapsed_s * 1000:.0f} ms")
        out(f"   -> {_line(live)}")
        out(
            f"   Completed {latency_ms:.1f} ms after the change stream showed the last item counted "
            f"(the seed's poller: up to {POLLER_INTERVAL_S:.0f} s, and never without a collectionId)"
        )

        collection_id = ObjectId()
        await db[settings.collections_collection].insert_one(
            {"_id": collection_id, "thumbnails": list(range(ITEMS)), "cacheImages": list(range(ITEMS))}
        )
        lossy = simulate.new_job(
            simulate.Plan(items=ITEMS, job_type="collection-scan"), legacy=False, collection_id=collection_id
        )
        lossy["stages"]["thumbnail"]["completedItems"] = ITEMS - 7  # 7 increments lost by a crashed consumer
        lossy["stages"]["cache"]["completedItems"] = ITEMS
        await jobs.insert_one(lossy)
        await anyio.sleep(0.2)  # the stream sees it: cache completes, thumbnail waits for 7 items
        waiting = await jobs.find_one({"_id": lossy["_id"]}) or {}
        out(
            f"\n3. collection-scan job {lossy['_id']}: thumbnail counter {ITEMS - 7}/{ITEMS} (7 increments lost), "
            f"collection holds {ITEMS} thumbnails"
        )
        out(f"   stream: {_line(waiting)}")
        # settle: path A waits until the counter and the collection stood still (path_a_quiet_s)
        sweep = await watcher.sweep(settle=True)
        fixed = await jobs.find_one({"_id": lossy["_id"]}) or {}
        out(
            f"   sweep (path A, $size on the server, $max on the counter): {sweep.jobs_completed} job completed "
            f"in {sweep.duration_s * 1000:.1f} ms"
        )
        out(f"   -> {_line(fixed)}")
    await events.close()

    final = [doc async for doc in jobs.find({}, {"status": 1})]
    done = sum(doc.get("status") == "Completed" for doc in final)
    out(f"\n{done}/{len(final)} jobs Completed. Try: ./dev jobwatch explain --help, ./dev jobwatch sweep --help")
    return 0 if done == len(final) else 1


async def _watch_completions(events: Any, counted: dict[Any, float], seen: dict[Any, float]) -> None:
    """Record, per job, when the stream first shows every item counted and when
    it shows the job Completed: the watcher's reaction time, one clock."""
    while True:
        event = await events.try_next()
        if event is None:
            await anyio.sleep(0)
            continue
        doc = event.get("fullDocument") or {}
        job_id, now = doc.get("_id"), time.monotonic()
        stages = list((doc.get("stages") or {}).values())
        if stages and all(s.get("completedItems", 0) >= s.get("totalItems", 1) for s in stages):
            counted.setdefault(job_id, now)
        if doc.get("status") == "Completed":
            seen.setdefault(job_id, now)


def _jobs(n: int, noun: str) -> str:
    """``1 open job``, ``2 open jobs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
