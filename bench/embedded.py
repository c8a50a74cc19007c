"""The embedded server's ceiling: ``$inc``/s on one core, its CPU per ``$inc``, and where that time goes.

    ./dev bench embedded             # 10 s of load, then a profiled run (about a minute)
    ./dev bench embedded --full      # 30 s

``jobwatch embedded-server`` runs in a process of its own (here under
cProfile for the profile, else plain), with the load the latency benchmark
puts on it: consumers ``$inc``ing stage counters of job documents over the
wire, and a change stream reading every change with ``fullDocument:
updateLookup`` (as the watcher does). The consumers run in this process,
as fast as the server acknowledges; the server's CPU is read from
``/proc/<pid>/stat`` over the window, so the figure is the server's own
(one process, one core's worth at most: its event loop is one thread).

The profile puts each function's own time in one part of the server:
the wire front (mongoeco's proxy and OP_MSG codec, ``jobwatch_embedded.wire``),
the engine (mongoeco's update and the command API around it), the change
tap and history (``jobwatch_embedded.engine``, ``history``), the change
streams served (``jobwatch_embedded.changes``), and the event loop. The
journal only exists with a data directory (and the SQLite engine with it):
that configuration is measured apart, unprofiled.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import pstats
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, load, workload  # noqa: E402
from watcher.cli import simulate  # noqa: E402
from watcher.intake.source import PyMongoChangeSource  # noqa: E402
from watcher.settings import Settings  # noqa: E402

GOAL_INC_PER_S = 2000
JOBS = 100
#: The server's parts, each the cumulative time of its entry point (file, function).
ENTRY_POINTS = {
    "engine: the update itself (mongoeco MemoryEngine.update_with_operation)": [
        ("mongoeco/engines/memory.py", "update_with_operation")
    ],
    "engine: the update command around it (mongoeco's command API)": [
        ("mongoeco/wire/_executor_passthrough.py", "_execute_database_command")
    ],
    "change tap and history (jobwatch_embedded.engine, history)": [("jobwatch_embedded/engine.py", "_pump")],
    "change streams served (getMore, lookup, event pipeline: jobwatch_embedded.changes)": [
        ("jobwatch_embedded/changes.py", "get_more"),
        ("jobwatch_embedded/changes.py", "aggregate"),
    ],
    "wire front (sockets, OP_MSG, BSON bridge, dispatch)": [("mongoeco/wire/proxy.py", "_handle_connection")],
}


#: pstats' table: (file, line, function) -> (primitive calls, calls, own time, cumulative time, callers).
RawStats = dict[tuple[str, int, str], tuple[int, int, float, float, dict[Any, Any]]]


def _cumulative(raw: RawStats, file: str, name: str) -> float:
    return sum(row[3] for (f, _, n), row in raw.items() if f.endswith(file) and n == name)


def serve_profiled(out: str, data_dir: str | None) -> None:
    """The server under cProfile until SIGTERM; the stats to ``out``."""
    from jobwatch_embedded import server

    profiler = cProfile.Profile()

    def emit(uri: str) -> None:
        print(uri, flush=True)
        profiler.enable()

    try:
        server.main(0, Path(data_dir) if data_dir else None, emit)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


async def load_window(uri: str, pid: int, window_s: float) -> dict[str, Any]:
    """Consumers ``$inc`` as fast as acknowledged for ``window_s``, a change
    stream reading; the server's CPU over the window."""
    database = f"bench_embedded_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri)
    settings = Settings(database=database)
    plan = workload.plan(jobs=10**6, items=50, rate=0, seed=3, active=JOBS)
    outcome = simulate.Outcome()
    events = 0
    stream = await PyMongoChangeSource(client[database][workload.JOBS]).open(
        workload.OBSERVED, resume_after=None, max_await_ms=100
    )
    try:
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                nonlocal events
                while True:
                    events += len(await stream.next_batch())

            async def consume() -> None:
                await simulate.play(client[database], settings, plan, outcome=outcome)

            tg.start_soon(read)
            tg.start_soon(consume)
            while len(outcome.job_ids) < JOBS:
                await anyio.sleep(0.05)
            await anyio.sleep(1.0)  # warm
            increments, read_events, cpu, started = outcome.increments, events, common.cpu_s(pid), time.monotonic()
            await anyio.sleep(window_s)
            elapsed = time.monotonic() - started
            increments, read_events, cpu = (
                outcome.increments - increments,
                events - read_events,
                common.cpu_s(pid) - cpu,
            )
            tg.cancel_scope.cancel()
    finally:
        await stream.close()
        await client.close()
    return {
        "inc_per_s": round(increments / elapsed, 1),
        "events_read_per_s": round(read_events / elapsed, 1),
        "server_cpu_share": round(cpu / elapsed, 3),
        "server_cpu_us_per_inc": round(1e6 * cpu / increments, 1) if increments else None,
        "inc_per_server_cpu_s": round(increments / cpu, 1) if cpu else None,
        "window_s": round(elapsed, 2),
    }


async def requests(uri: str, pid: int, count: int = 200) -> dict[str, Any]:
    """One request at a time on an idle server: a consumer's ``$inc``, and the
    watcher's completing write (the guarded update the rules decide), with and
    without its stage-set ``$expr`` guard: the server's time for each (its
    CPU per request, and the round trip)."""
    import rules
    from watcher.decide import updates

    database = f"bench_requests_{os.getpid()}"
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri)
    jobs = client[database][workload.JOBS]
    out: dict[str, Any] = {}
    try:
        plan = simulate.Plan(items=count, stages=("thumbnail", "cache"))
        job = simulate.new_job(plan, legacy=True, collection_id=None)
        await jobs.insert_one(job)

        async def timed(label: str, send: Any) -> None:
            cpu, started = common.cpu_s(pid), time.perf_counter()
            for n in range(count):
                await send(n)
            out[label] = {
                "round_trip_us": round(1e6 * (time.perf_counter() - started) / count, 1),
                "server_cpu_us": round(1e6 * (common.cpu_s(pid) - cpu) / count, 1),
            }

        await timed(
            "inc", lambda n: jobs.update_one({"_id": job["_id"]}, {"$inc": {"stages.thumbnail.completedItems": 1}})
        )
        done = simulate.new_job(plan, legacy=True, collection_id=None)
        for stage in done["stages"].values():
            stage["completedItems"] = stage["totalItems"]
        docs = [{**done, "_id": n} for n in range(count)]
        await jobs.insert_many(docs)
        query, update = updates.for_evaluation(rules.evaluate(docs[0]))
        await timed("completing_write", lambda n: jobs.update_one({**query, "_id": {"$eq": n}}, update))
        await jobs.delete_many({"_id": {"$in": list(range(count))}})
        await jobs.insert_many(docs)
        unguarded = {k: v for k, v in query.items() if k != "$expr"}
        await timed(
            "completing_write_without_expr_guard", lambda n: jobs.update_one({**unguarded, "_id": {"$eq": n}}, update)
        )
    finally:
        await client.drop_database(database)
        await client.close()
    return out


async def measure(
    window_s: float, *, profiled: str | None = None, data_dir: str | None = None, one_by_one: bool = False
) -> dict[str, Any]:
    if profiled is not None:
        args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-profiled",
            profiled,
            *(["--data-dir", data_dir] if data_dir else []),
        ]
    else:
        args = [*workload.jobwatch_command(), "embedded-server", *(["--data", data_dir] if data_dir else [])]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        uri = (await anyio.to_thread.run_sync(proc.stdout.readline)).strip()
        if not uri.startswith("mongodb://"):
            raise RuntimeError(f"the embedded server did not start (got {uri!r})")
        if one_by_one:
            return await requests(uri, proc.pid)
        return await load_window(uri, proc.pid, window_s)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def where(stats_path: Path, text_path: Path) -> dict[str, Any]:
    """Each part's share of the server's time (its entry point's cumulative
    time, minus the parts nested in it), deep copies among them, and the
    functions with the most time of their own."""
    stats = pstats.Stats(str(stats_path))
    raw: RawStats = stats.stats  # type: ignore[attr-defined]  # not in typeshed's pstats
    total = sum(row[2] for row in raw.values())
    cumulative = {label: sum(_cumulative(raw, f, n) for f, n in points) for label, points in ENTRY_POINTS.items()}
    labels = list(ENTRY_POINTS)
    update, command, tap, served, wire = (cumulative[label] for label in labels)
    parts = {
        labels[0]: update,
        labels[1]: command - update,  # the update command, its engine call aside
        labels[2]: tap,
        labels[3]: served,
        labels[4]: wire - command - served,  # all requests, what they run aside
        "event loop, garbage collection and the rest": max(
            total - wire - tap, 0.0
        ),  # overlaps can make it slightly negative
    }
    top = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:20]
    with text_path.open("w") as out:
        out.write("cProfile of jobwatch embedded-server under the bench's $inc load (bench/embedded.py)\n\n")
        printed = pstats.Stats(str(stats_path), stream=out)
        printed.sort_stats("tottime").print_stats(40)
        printed.sort_stats("cumulative").print_stats(60)
    return {
        "parts": {label: round(seconds / total, 3) for label, seconds in parts.items()},
        "deep_copies": round(_cumulative(raw, "copy.py", "deepcopy") / total, 3),
        "profiled_s": round(total, 2),
        "top_own_time": [
            {
                "function": f"{Path(file).parent.name}/{Path(file).name}:{line}({name})",
                "share": round(row[2] / total, 3),
                "calls": row[1],
            }
            for (file, line, name), row in top
        ],
    }


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--window-s", type=float, help="seconds of load per measurement (default 10; --full 30)")
    p.add_argument("--serve-profiled", metavar="OUT", help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_profiled:
        serve_profiled(args.serve_profiled, args.data_dir)
        return 0
    window_s = args.window_s or (30.0 if args.full else 10.0)
    watch = load.LoadWatch()
    one_by_one = anyio.run(lambda: measure(window_s, one_by_one=True))
    plain = [anyio.run(lambda: measure(window_s)) for _ in range(2)]
    import tempfile

    with tempfile.TemporaryDirectory() as data:
        journaled = anyio.run(lambda: measure(window_s, data_dir=data))
    with tempfile.TemporaryDirectory() as scratch:
        stats_path = Path(scratch) / "embedded.stats"
        profiled = anyio.run(lambda: measure(window_s, profiled=str(stats_path)))
        breakdown = where(stats_path, common.side_file("embedded_profile.txt", save_file=not args.no_save))
    best = max(plain, key=lambda r: r["inc_per_s"])
    per_cpu_s = max(r["inc_per_server_cpu_s"] or 0 for r in plain)
    figures: dict[str, Any] = {
        "inc_per_s": best["inc_per_s"],
        "inc_per_server_cpu_s": per_cpu_s,
        "server_cpu_us_per_inc": min(r["server_cpu_us_per_inc"] or math.inf for r in plain),
        "goal_inc_per_s": GOAL_INC_PER_S,
        "goal_met": per_cpu_s >= GOAL_INC_PER_S,
        "runs": plain,
        "one_request_at_a_time": one_by_one,
        "with_data_dir": journaled,
        "profiled_run": profiled,
        "profile": breakdown,
        "load_avg_1m": watch.summary(),
        "definitions": {
            "one_request_at_a_time": (
                "one client, one request after another on an idle server: a consumer's $inc, the watcher's completing "
                "write (as the rules build it), and the same write without its stage-set $expr guard"
            ),
            "inc_per_s": (
                "consumers' $inc acknowledged per second (4 consumers, 100 jobs, a change stream reading everything), "
                "best of two windows"
            ),
            "inc_per_server_cpu_s": "the same per second of the server process's CPU: what one core gives",
            "with_data_dir": "the same load with --data (SQLite engine and the change journal)",
        },
    }
    common.table(
        ["run", "$inc/s", "events read/s", "server CPU share", "server us/$inc", "$inc per CPU s"],
        [
            [
                label,
                r["inc_per_s"],
                r["events_read_per_s"],
                r["server_cpu_share"],
                r["server_cpu_us_per_inc"],
                r["inc_per_server_cpu_s"],
            ]
            for label, r in [*(("memory", r) for r in plain), ("--data", journaled), ("profiled", profiled)]
        ],
        title="jobwatch embedded-server under $inc load",
    )
    common.table(
        ["request, one at a time", "round trip us", "server CPU us"],
        [[label, r["round_trip_us"], r["server_cpu_us"]] for label, r in one_by_one.items()],
        title="the server's time per request, idle otherwise",
    )
    common.table(
        ["part of the server", "share of its time"],
        [*breakdown["parts"].items(), ("of all of it: deep copies (copy.deepcopy)", breakdown["deep_copies"])],
        title="where the time goes (cProfile)",
    )
    common.save(
        common.result_name("embedded", args),
        parameters={"window_s": window_s, "consumers": workload.CONSUMERS, "jobs": JOBS, "full": args.full},
        figures=figures,
        backend_info=common.backend("separate-process"),
        save_file=not args.no_save,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
