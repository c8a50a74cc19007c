"""Sweep scaling: time and documents read as total and open jobs grow.

    ./dev bench sweep           # 1k and 10k total with 100 open; 10k total with 1,000 open
    ./dev bench sweep --full    # 1k, 10k, 100k total with 100 open; 100k with 100, 1,000, 10,000 open

The product's sweep, ``Watcher.sweep(dry_run=True)``, on a collection of
``total`` jobs of which ``open`` are InProgress (the rest Completed), with the
watcher's ``(status, jobType)`` index in place (as ``jobwatch run`` creates
it). Two passes are timed: the default sweep (``full``: the indexed
pass plus the unknown-status ``$nin`` pass, what ``jobwatch sweep`` and every
``full_sweep_every``-th periodic sweep run) and the indexed pass alone (the
other periodic sweeps). Documents read are the documents the server returned
to the watcher's client (a command listener counts each batch); each figure
is the median of at least three runs (quick sizes run until a second is
spent). The embedded server serves these queries from the index, as
MongoDB does (``embedded/jobwatch_embedded/planner.py``), so on either the time of a
pass follows the documents the server examined; on MongoDB, ``explain``
says how many (``tests/integration/test_sweep_plan.py`` checks the plan).
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from bson import ObjectId
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, workload  # noqa: E402

DEFAULT_SIZES = [(1_000, 100), (10_000, 100), (10_000, 1_000)]
FULL_SIZES = [(1_000, 100), (10_000, 100), (100_000, 100), (100_000, 1_000), (100_000, 10_000)]
REPEATS = 3
#: Quick sizes repeat until this much time is spent (at most MAX_REPEATS
#: runs): a 40 ms sweep on two shared cores needs more than three samples for
#: its median to mean something.
MIN_TIMED_S = 1.0
MAX_REPEATS = 25
INSERT_BATCH = 5_000


def job(n: int, *, open_: bool) -> dict[str, Any]:
    items = 132
    done = items if not open_ else n % items
    return {
        "_id": ObjectId(),
        "jobType": "resume-collection" if n % 2 else "collection-scan",
        "status": "InProgress" if open_ else "Completed",
        "progress": 0 if open_ else 100,
        "totalItems": 0 if open_ else items,
        "completedItems": 0 if open_ else items,
        "collectionId": None,
        "createdAt": dt.datetime(2025, 10, 12, tzinfo=dt.UTC),
        "stages": {
            "thumbnail": {
                "status": "InProgress" if open_ else "Completed",
                "progress": 0,
                "totalItems": items,
                "completedItems": done,
            },
            "cache": {
                "status": "InProgress" if open_ else "Completed",
                "progress": 0,
                "totalItems": items,
                "completedItems": done,
            },
        },
    }


async def fill(db: Any, total: int, open_count: int, progress: common.Progress) -> None:
    """``total`` jobs with ``open_count`` open ones spread evenly among them.

    ``db`` is a PyMongo database, or on the embedded engine its in-process
    database: the engine's wire proxy takes about 25 ms per inserted document
    here, the engine itself about 1 ms, and filling is not what is measured.
    """
    every = max(total // open_count, 1)
    batch: list[dict[str, Any]] = []
    opened = 0
    for n in range(total):
        is_open = n % every == 0 and opened < open_count
        opened += is_open
        batch.append(job(n, open_=is_open))
        if len(batch) >= INSERT_BATCH:
            await db[workload.JOBS].insert_many(batch, ordered=False)
            progress.advance(len(batch))
            batch = []
    if batch:
        await db[workload.JOBS].insert_many(batch, ordered=False)
        progress.advance(len(batch))


async def one_size(backend: workload.Backend, total: int, open_count: int) -> dict[str, Any]:
    from watcher.service import Watcher
    from watcher.settings import Settings
    from watcher.storage.store import MongoJobStore

    database = f"bench_sweep_{total}_{open_count}_{int(time.time() * 1000) % 10**8}"
    counter = common.CommandCounter()
    client: AsyncMongoClient[Any] = AsyncMongoClient(backend.uri, event_listeners=[counter])
    try:
        settings = Settings(uri=backend.uri, database=database, health_port=0)
        progress = common.Progress(f"sweep: filling {total:,}/{open_count:,}", total)
        target = backend.local_database(database) or client[database]
        await fill(target, total, open_count, progress)
        progress.close()
        if backend.server is not None:
            # The engine's change tap records every insert (about 25 s of
            # CPU for 100k here): wait for it, or it runs during the timed sweeps.
            await backend.server.engine.flush()
        await MongoJobStore.from_settings(client[database], settings).ensure_sweep_index()
        watcher = Watcher(client, settings)
        result: dict[str, Any] = {"total": total, "open": open_count}
        for label, full in (("", True), ("indexed_", False)):
            seconds: list[float] = []
            docs: list[int] = []
            while len(seconds) < REPEATS or (sum(seconds) < MIN_TIMED_S and len(seconds) < MAX_REPEATS):
                counter.reset()
                started = time.perf_counter()
                report = await watcher.sweep(dry_run=True, full=full, settle=False)
                seconds.append(time.perf_counter() - started)
                docs.append(counter.docs_returned)
                assert report.scanned == open_count, (report.scanned, open_count)
            result[f"{label}seconds"] = round(statistics.median(seconds), 4)
            result[f"{label}docs_read"] = int(statistics.median(docs))
            result[f"{label}commands"] = counter.total()
            result[f"{label}runs"] = len(seconds)
        return result
    finally:
        await client.close()


async def measure(sizes: list[tuple[int, int]]) -> tuple[dict[str, Any], dict[str, Any]]:
    results: dict[str, Any] = {}
    async with workload.backend() as backend:
        info = backend.info()
        for total, open_count in sizes:
            results[f"total_{total}_open_{open_count}"] = await one_size(backend, total, open_count)
    return results, info


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--sizes", help="total:open pairs, comma-separated (e.g. 1000:100,100000:100)")
    args = p.parse_args()
    from watcher.ops import logs

    logs.setup(level="ERROR")
    sizes = (
        [(int(t), int(o)) for t, o in (pair.split(":") for pair in args.sizes.split(","))]
        if args.sizes
        else (FULL_SIZES if args.full else DEFAULT_SIZES)
    )
    results, info = anyio.run(measure, sizes)
    common.table(
        ["total / open", "sweep s", "docs read", "indexed pass s", "indexed docs"],
        [
            [
                f"{r['total']:,} / {r['open']:,}",
                r["seconds"],
                r["docs_read"],
                r["indexed_seconds"],
                r["indexed_docs_read"],
            ]
            for r in results.values()
        ],
        title=f"sweep, dry run ({info['kind']}, median of {REPEATS} to {MAX_REPEATS} runs)",
    )
    small = results.get("total_1000_open_100")
    large = results.get("total_100000_open_100") or results.get("total_10000_open_100")
    figures: dict[str, Any] = dict(results)
    if small and large:
        figures["time_ratio_largest_vs_1000_total"] = common.ratio(large["seconds"], small["seconds"])
        figures["indexed_time_ratio_largest_vs_1000_total"] = common.ratio(
            large["indexed_seconds"], small["indexed_seconds"]
        )
        figures["docs_ratio_largest_vs_1000_total"] = common.ratio(large["docs_read"], small["docs_read"])
    common.save(
        common.result_name("sweep", args),
        parameters={
            "sizes": sizes,
            "repeats": REPEATS,
            "min_timed_s": MIN_TIMED_S,
            "max_repeats": MAX_REPEATS,
            "full": args.full,
        },
        figures=figures,
        backend_info=info,
        save_file=not args.no_save,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
