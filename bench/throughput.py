"""Throughput: the highest increment rate the watcher keeps up with, and its CPU per event with the database removed.

    ./dev bench throughput              # 8 s windows, 5,000 replayed events per size
    ./dev bench throughput --full       # 60 s windows, 50,000 events per size
    ./dev bench throughput --profile    # also cProfile the replayed hot path (bench/results/profile.txt)

1. ``max_increments_per_s``: consumers ``$inc`` at a stepped rate for one
   window each (100 concurrent jobs, in-process on the embedded engine, or
   ``MONGODB_URI``). The watcher keeps up when the events it read are at
   least 95 % of those written in the window (the consumers' increments plus
   its own writes, counted on its client) and its backlog (unread events plus
   jobs queued) is not growing over the window's second half. The figure is
   the highest achieved rate that kept up; when the consumers could not reach
   the asked rate, the engine (not the watcher) was the limit, and the JSON
   says so (``limited_by``).
2. ``cpu_us_per_event``: process CPU time per event over events replayed
   through decode, coalescing, rules and update building (``bench/replay.py``),
   with 100, 1,000 and 10,000 busy jobs (each receiving 2 events per simulated
   second, so progress writes are rate-limited and jobs wait in the queue).
3. ``rules_evals_per_s``: ``rules.evaluate`` on the seed's document, one core,
   best of three windows after a warm-up (as ``rules_throughput``).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, replay, workload  # noqa: E402

KEEP_UP_RATIO = 0.95
BUSY_JOBS = (100, 1_000)
BUSY_JOBS_FULL = (100, 1_000, 10_000)


def _total(counter: Any) -> float:
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


def _total_gauge(gauge: Any) -> float:
    return sum(s.value for m in gauge.collect() for s in m.samples)


async def step(backend: workload.Backend, rate: float, window_s: float) -> dict[str, Any]:
    """One window at ``rate``: produced vs read, and the backlog's trend."""
    from watcher.service import Watcher
    from watcher.settings import Settings

    database = f"bench_throughput_{int(rate)}_{int(time.time() * 1000) % 10**8}"
    counter = common.CommandCounter()
    load_client = workload.AsyncMongoClient(backend.uri)
    keeper_client = workload.AsyncMongoClient(backend.uri, event_listeners=[counter])
    concurrency = 100
    items = max(round(rate * window_s / (2 * concurrency)), 1)
    plan = workload.Plan(jobs=concurrency, concurrency=concurrency, items=items, rate=rate)
    settings = Settings(uri=backend.uri, database=database, health_port=0, sweep_interval_s=3600)
    watcher = Watcher(keeper_client, settings, change_source=backend.change_source(database))
    samples: list[tuple[float, float]] = []
    try:
        async with watcher:
            counter.reset()
            read_before = _total(watcher.metrics.events)
            outcome = workload.Outcome()
            finished = anyio.Event()

            async def produce() -> None:
                await workload.play(load_client[database], plan, common.Progress(f"throughput {rate:g}/s", plan.increments), outcome)
                finished.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                started = time.monotonic()
                while not finished.is_set():
                    await anyio.sleep(0.5)
                    written_so_far = outcome.increments + len(outcome.job_ids) + counter.writes(workload.JOBS)
                    samples.append((time.monotonic() - started, written_so_far - (_total(watcher.metrics.events) - read_before)))
            elapsed = outcome.elapsed_s
            read = _total(watcher.metrics.events) - read_before
            written = counter.writes(workload.JOBS)
            pending = _total_gauge(watcher.metrics.pending_jobs)
    finally:
        await load_client.close()
        await keeper_client.close()
    produced_events = outcome.increments + written + plan.jobs  # increments, its own writes, inserts
    achieved = outcome.increments / elapsed if elapsed else 0.0
    handled_ratio = read / produced_events if produced_events else 1.0
    # Backlog (events written so far minus events read) over the window's second half.
    per_s = produced_events / elapsed if elapsed else 0.0
    half = [b for b in samples if b[0] >= elapsed / 2]
    growth_per_s = (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) if len(half) >= 2 and half[-1][0] > half[0][0] else 0.0
    growing = growth_per_s > 0.05 * per_s
    return {
        "rate_asked": rate,
        "rate_achieved": round(achieved, 1),
        "window_s": round(elapsed, 2),
        "increments": outcome.increments,
        "events_written": produced_events,
        "events_read": int(read),
        "handled_ratio": round(handled_ratio, 3),
        "backlog_growth_events_per_s": round(growth_per_s, 1),
        "backlog_growing": growing,
        "pending_jobs_at_end": pending,
        "backlog_events_max": max((b for _, b in samples), default=0),
        "kept_up": handled_ratio >= KEEP_UP_RATIO and not growing,
    }


async def sustained(rates: list[float], window_s: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    steps = []
    async with workload.in_process() as backend:
        info = backend.info()
        for rate in rates:
            result = await step(backend, rate, window_s)
            steps.append(result)
            if not result["kept_up"] or result["rate_achieved"] < 0.8 * rate:
                break  # the watcher, or the engine feeding it, is at its limit
    return steps, info


def cpu_per_event(sizes: tuple[int, ...], count: int, progress: common.Progress | None = None) -> dict[str, Any]:
    by_jobs: dict[str, Any] = {}
    for jobs in sizes:
        tally = replay.busy(jobs, count)
        by_jobs[str(jobs)] = {
            "cpu_us_per_event": round(tally.cpu_us_per_event, 1),
            "events": tally.events,
            "evaluations": tally.evaluations,
            "deferred": tally.deferred,
            "over_budget": tally.over_budget,
            "updates_built": tally.updates_built,
            "max_pending_jobs": tally.max_pending_jobs,
        }
        if progress is not None:
            progress.advance()
    return by_jobs


def rules_rate(seconds: float) -> tuple[float, float]:
    """(per wall-clock second, per CPU second): the second is the steadier on a shared machine."""
    import rules
    from bench.rules_throughput import rate
    from tests.support.documents import seed_job

    doc = seed_job()
    return rate(lambda: rules.evaluate(doc), seconds)


def profile(count: int, jobs: int, path: Path) -> str:
    events = list(replay.events(jobs, count))
    profiler = cProfile.Profile()
    profiler.enable()
    replay.run(iter(events), events_per_s=jobs * 2.0)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"cProfile of the replayed hot path: {count} events over {jobs} busy jobs (bench/replay.py)\n\n")
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    text = out.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--rates", default="50,100,200,400,800,1600", help="stepped increment rates (stops at the first that is not kept up)")
    p.add_argument("--window-s", type=float, help="seconds per rate (default 8; --full 60)")
    p.add_argument("--events", type=int, help="replayed events per busy-job size (default 5,000; --full 50,000)")
    p.add_argument("--busy-jobs", help="busy-job sizes for the CPU figure, comma-separated (default 100,1000; --full 100,1000,10000)")
    p.add_argument("--skip-sustained", action="store_true", help="only the database-free figures")
    p.add_argument("--profile", action="store_true", help="write bench/results/profile.txt")
    args = p.parse_args()
    from watcher.ops import logs

    logs.setup(level="ERROR")
    window_s = args.window_s or (60.0 if args.full else 8.0)
    count = args.events or (50_000 if args.full else 5_000)
    figures: dict[str, Any] = {}
    info = common.backend("database removed")
    if not args.skip_sustained:
        steps, info = anyio.run(sustained, [float(r) for r in args.rates.split(",")], window_s)
        kept = [s for s in steps if s["kept_up"]]
        best = max(kept, key=lambda s: s["rate_achieved"], default=None)
        figures["max_increments_per_s"] = best["rate_achieved"] if best else 0.0
        last = steps[-1]
        figures["limited_by"] = (
            "watcher" if not last["kept_up"] else "engine/consumers (the asked rate was not reached; the watcher kept up with all of it)"
        )
        figures["steps"] = steps
        common.table(
            ["$inc/s asked", "achieved", "events written", "read", "handled", "backlog +/s", "kept up"],
            [[s["rate_asked"], s["rate_achieved"], s["events_written"], s["events_read"], s["handled_ratio"], s["backlog_growth_events_per_s"], s["kept_up"]] for s in steps],
            title=f"sustained rate ({info['kind']}, {info['mode']}, {window_s:g} s windows)",
        )
    sizes = tuple(int(n) for n in args.busy_jobs.split(",")) if args.busy_jobs else (BUSY_JOBS_FULL if args.full else BUSY_JOBS)
    progress = common.Progress("replaying events", len(sizes))
    by_jobs = cpu_per_event(sizes, count, progress)
    progress.close()
    figures["cpu_us_per_event"] = by_jobs["100"]["cpu_us_per_event"]
    figures["cpu_us_per_event_by_busy_jobs"] = by_jobs
    per_wall_s, per_cpu_s = rules_rate(3.0 if args.full else 1.5)
    figures["rules_evals_per_s"] = round(per_wall_s)
    figures["rules_evals_per_cpu_s"] = round(per_cpu_s)
    common.table(
        ["busy jobs", "CPU us/event", "events", "evaluations", "deferred", "over budget", "updates built"],
        [[jobs, f["cpu_us_per_event"], f["events"], f["evaluations"], f["deferred"], f["over_budget"], f["updates_built"]] for jobs, f in by_jobs.items()],
        title="hot path with the database removed (decode, JobQueue, rules, budget, update building)",
    )
    print(f"rules.evaluate on the seed job: {figures['rules_evals_per_s']:,} evaluations/s of wall clock, {figures['rules_evals_per_cpu_s']:,} per CPU second (one core)")
    if args.profile:
        text = profile(count, 1000, common.RESULTS / "profile.txt")
        print("\n".join(text.splitlines()[:40]))
    common.save(common.result_name("throughput", args), parameters={"window_s": window_s, "replayed_events": count, "busy_jobs": list(sizes), "keep_up_ratio": KEEP_UP_RATIO, "full": args.full}, figures=figures, backend_info=info, save_file=not args.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
