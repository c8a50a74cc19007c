"""Throughput: the highest increment rate the watcher keeps up with, and its CPU per event with the database removed.

    ./dev bench throughput              # 8 s windows, 5,000 replayed events per size (100 and 1,000 busy jobs)
    ./dev bench throughput --full       # 60 s windows, 50,000 events per size (100, 1,000 and 10,000 busy jobs)
    ./dev bench throughput --profile    # also cProfile the replay at 10,000 busy jobs (bench/results/profile.txt)

1. ``max_increments_per_s``: consumers ``$inc`` at a stepped rate for one
   window each (100 concurrent jobs; the database is ``jobwatch
   embedded-server`` in a process of its own with ``--mode separate-process``,
   the default when this tree has it, or the embedded server inside this
   process, or ``MONGODB_URI``; the watcher runs in this process so its
   counters can be read). The watcher keeps up when the events it read are at
   least 95 % of those written in the window (the consumers' increments, the
   inserts and its own writes, counted on its client) and its backlog
   (events written minus events read, sampled every 0.5 s) is not growing
   over the window's second half. The figure is the highest achieved rate
   that kept up; when the consumers could not reach the asked rate, the
   database (not the watcher) was the limit, and the JSON says so
   (``limited_by``). Each window also records this process's CPU time (the
   watcher, the consumers and the drivers; the database too in-process) and
   the load average, since wall-clock rates on a shared machine move with it.
2. ``max_events_per_s_database_removed``: the same stepping (change events
   per second) through the product's own ``StreamReader`` and ``Dispatcher``,
   fed by a paced source, every write answered at once (``bench/paced.py``):
   the watcher's ceiling, which the database hides in 1. Each window keeps
   the CPU per event read: the replay's work below plus the async plumbing
   around it (tasks, timeouts, signalling, metrics).
3. ``cpu_us_per_event``: process CPU time per event over events replayed
   through decode, path A's counter watch, coalescing, rules, the progress
   budget and update building, the built updates coming back as events
   (``bench/replay.py``), with 100, 1,000 and 10,000 busy jobs (each receiving
   2 events per simulated second, so progress writes are rate-limited and
   jobs wait in the queue). The headline is the highest of the sizes (the
   per-size figures are kept under ``cpu_us_per_event_by_busy_jobs``).
4. ``rules_evals_per_s``: ``rules.evaluate`` on the seed's document per
   second of this process's CPU time (one core's worth of work, which the
   goal is about), best of three windows after a warm-up (as
   ``rules_throughput``); the wall-clock rate, which a shared machine lowers,
   is kept beside it (``rules_evals_per_wall_s``).
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, load, paced, replay, workload  # noqa: E402

KEEP_UP_RATIO = 0.95
BUSY_JOBS = (100, 1_000)
BUSY_JOBS_FULL = (100, 1_000, 10_000)


def _total(counter: Any) -> float:
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


def _total_gauge(gauge: Any) -> float:
    return sum(s.value for m in gauge.collect() for s in m.samples)


async def step(backend: workload.Backend, rate: float, window_s: float) -> dict[str, Any]:
    """One window of ``window_s`` wall-clock seconds at ``rate`` asked: produced
    vs read, and the backlog's trend.

    The window starts once the 100 jobs are inserted (the increments are what
    is paced) and ends at its deadline: the consumers are stopped there, so a
    database slower than the asked rate cannot stretch the window. The plan
    has half as many items again as the window needs, so it does not run out
    first when the rate is reached."""
    from watcher.service import Watcher
    from watcher.settings import Settings

    database = f"bench_throughput_{int(rate)}_{int(time.time() * 1000) % 10**8}"
    counter = common.CommandCounter()
    load_client = workload.AsyncMongoClient(backend.uri)
    keeper_client = workload.AsyncMongoClient(backend.uri, event_listeners=[counter])
    concurrency = 100
    items = math.ceil(1.5 * rate * window_s / (2 * concurrency))
    plan = workload.Plan(jobs=concurrency, concurrency=concurrency, items=items, rate=rate)
    settings = Settings(uri=backend.uri, database=database, health_port=0, sweep_interval_s=3600)
    watcher = Watcher(keeper_client, settings, change_source=backend.change_source(database))
    samples: list[tuple[float, float]] = []  # (seconds into the window, events written minus events read)
    watch = load.LoadWatch()
    try:
        async with watcher:
            counter.reset()
            outcome = workload.Outcome()
            finished = anyio.Event()
            producer = anyio.CancelScope()

            def written() -> int:
                return outcome.increments + len(outcome.job_ids) + counter.writes(workload.JOBS)

            def read() -> float:
                return _total(watcher.metrics.events)

            async def produce() -> None:
                with producer:
                    await workload.play(load_client[database], plan, common.Progress(f"throughput {rate:g}/s", rate * window_s), outcome)
                finished.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                while len(outcome.job_ids) < plan.concurrency and not finished.is_set():
                    await anyio.sleep(0.02)
                started, cpu_started = time.monotonic(), time.process_time()
                written_0, read_0, increments_0 = written(), read(), outcome.increments
                ended = started + window_s
                while not finished.is_set():
                    await anyio.sleep(min(0.5, max(started + window_s - time.monotonic(), 0.0)))
                    now = time.monotonic()
                    samples.append((now - started, (written() - written_0) - (read() - read_0)))
                    if len(samples) % 10 == 0:
                        watch.sample()
                    if now >= started + window_s:
                        ended = now
                        producer.cancel()
                        break
                else:
                    ended = time.monotonic()  # the plan ran out first
            cpu_s = time.process_time() - cpu_started
            elapsed = ended - started
            increments = outcome.increments - increments_0
            produced = written() - written_0
            handled = read() - read_0
            pending = _total_gauge(watcher.metrics.pending_jobs)
    finally:
        await load_client.close()
        await keeper_client.close()
    achieved = increments / elapsed if elapsed else 0.0
    handled_ratio = handled / produced if produced else 1.0
    # Backlog (events written minus events read since the window began) over its second half.
    per_s = produced / elapsed if elapsed else 0.0
    half = [b for b in samples if b[0] >= elapsed / 2]
    growth_per_s = (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) if len(half) >= 2 and half[-1][0] > half[0][0] else 0.0
    growing = growth_per_s > 0.05 * per_s
    return {
        "rate_asked": rate,
        "rate_achieved": round(achieved, 1),
        "window_s": round(elapsed, 2),
        "increments": increments,
        "events_written": produced,
        "events_read": int(handled),
        "handled_ratio": round(handled_ratio, 3),
        "backlog_growth_events_per_s": round(growth_per_s, 1),
        "backlog_growing": growing,
        "backlog_events_at_end": samples[-1][1] if samples else 0,
        "backlog_events_max": max((b for _, b in samples), default=0),
        "pending_jobs_at_end": pending,
        "kept_up": handled_ratio >= KEEP_UP_RATIO and not growing,
        # This process's CPU over the window (watcher, consumers, drivers; the
        # database too in-process): near 1.0 it was CPU-bound on one core.
        "process_cpu_s": round(cpu_s, 2),
        "process_cpu_share": round(cpu_s / elapsed, 2) if elapsed else None,
        "process_cpu_us_per_event_read": round(1e6 * cpu_s / handled, 1) if handled else None,
        "load_avg_1m": watch.summary(),
    }


async def sustained(rates: list[float], window_s: float, mode: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    steps = []
    backend_cm = workload.in_process() if mode == "in-process" else workload.separate_process()
    async with backend_cm as backend:
        info = backend.info()
        best = 0.0
        for rate in rates:
            result = await step(backend, rate, window_s)
            steps.append(result)
            if not result["kept_up"]:
                break  # the watcher is at its limit
            if result["rate_achieved"] < 0.8 * rate and result["rate_achieved"] < 1.1 * best:
                break  # the database feeding it is: asking more no longer gives more
            best = max(best, result["rate_achieved"])
    return steps, info


async def watcher_only(rates: list[float], window_s: float) -> list[dict[str, Any]]:
    """The same stepping through the watcher's own intake and dispatch, database removed (``bench/paced.py``)."""
    steps = []
    for rate in rates:
        result = await paced.step(rate, window_s)
        steps.append(result)
        if not result["kept_up"]:
            break
    return steps


def cpu_per_event(sizes: tuple[int, ...], count: int, progress: common.Progress | None = None) -> dict[str, Any]:
    by_jobs: dict[str, Any] = {}
    for jobs in sizes:
        tally = replay.busy(jobs, count)
        by_jobs[str(jobs)] = {
            "cpu_us_per_event": round(tally.cpu_us_per_event, 1),
            "events": tally.events,
            "echo_events": tally.echo_events,  # of events: the watcher's own writes seen back
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
    """cProfile of the same replay the CPU figure times (warm-up excluded)."""
    profiler = cProfile.Profile()
    tally = replay.busy(jobs, count, profiler=profiler)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(
        f"cProfile of the replayed hot path: {count} events over {jobs} busy jobs (bench/replay.py), "
        f"{tally.cpu_s:.2f} s CPU under the profiler; {tally.evaluations} evaluations, {tally.deferred} deferred, "
        f"{tally.updates_built} updates built, {tally.over_budget} over budget\n\n"
    )
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    text = out.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def profile_async(rate: float, window_s: float, path: Path) -> str:
    """cProfile of one window of the watcher alone (``bench/paced.py``): where
    the async path's time goes beyond the replay's work."""
    profiler = cProfile.Profile()
    profiler.enable()
    result = anyio.run(paced.step, rate, window_s)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(
        f"cProfile of the watcher alone (StreamReader + Dispatcher, database removed, bench/paced.py): one {window_s:g} s window "
        f"at {rate:g} events/s asked; {result['events_read']} events read ({result['rate_achieved']}/s), CPU share {result['process_cpu_share']}\n\n"
    )
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(60)
    text = out.getvalue()
    path.write_text(text)
    return text


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--rates", default="50,100,200,400,800,1600", help="stepped increment rates (stops at the first that is not kept up)")
    p.add_argument("--window-s", type=float, help="seconds per rate (default 8; --full 60)")
    p.add_argument("--events", type=int, help="replayed events per busy-job size (default 5,000; --full 50,000)")
    p.add_argument("--busy-jobs", help="busy-job sizes for the CPU figure, comma-separated (default 100,1000; --full 100,1000,10000)")
    p.add_argument("--paced-rates", default="500,1000,2000,4000,8000", help="stepped event rates for the watcher alone, database removed (stops at the first not kept up)")
    p.add_argument("--skip-sustained", action="store_true", help="only the database-free figures")
    p.add_argument("--skip-paced", action="store_true", help="skip the watcher-alone stepping")
    p.add_argument("--profile", action="store_true", help="write bench/results/profile.txt")
    p.add_argument("--profile-jobs", type=int, default=10_000, help="busy jobs for --profile (default 10,000)")
    p.add_argument("--profile-async", type=float, metavar="EVENTS_PER_S", help="also cProfile one 6 s window of the watcher alone at this rate (bench/results/profile_async.txt)")
    p.add_argument(
        "--mode",
        choices=("separate-process", "in-process"),
        default="separate-process",
        help="where the database runs for the sustained rate (default: jobwatch embedded-server in its own process; falls back to in-process when this tree lacks it)",
    )
    args = p.parse_args()
    from watcher.ops import logs

    logs.setup(level="ERROR")
    window_s = args.window_s or (60.0 if args.full else 8.0)
    count = args.events or (50_000 if args.full else 5_000)
    figures: dict[str, Any] = {}
    info = common.backend("database removed")
    watch = load.LoadWatch()
    mode = args.mode
    if mode == "separate-process" and common.mongodb_uri() is None:
        ok, why = workload.embedded_server_available()
        if not ok:
            print(f"separate-process mode unavailable ({why}); measuring in-process", flush=True)
            mode = "in-process"
    if not args.skip_sustained:
        steps, info = anyio.run(sustained, [float(r) for r in args.rates.split(",")], window_s, mode)
        kept = [s for s in steps if s["kept_up"]]
        best = max(kept, key=lambda s: s["rate_achieved"], default=None)
        figures["max_increments_per_s"] = best["rate_achieved"] if best else 0.0
        last = steps[-1]
        figures["limited_by"] = (
            "watcher" if not last["kept_up"] else "engine/consumers (the asked rate was not reached; the watcher kept up with all of it)"
        )
        figures["steps"] = steps
        common.table(
            ["$inc/s asked", "achieved", "window s", "events written", "read", "handled", "backlog +/s", "kept up", "CPU share", "load"],
            [
                [s["rate_asked"], s["rate_achieved"], s["window_s"], s["events_written"], s["events_read"], s["handled_ratio"], s["backlog_growth_events_per_s"], s["kept_up"], s["process_cpu_share"], f"{s['load_avg_1m']['min']}-{s['load_avg_1m']['max']}"]
                for s in steps
            ],
            title=f"sustained rate ({info['kind']}, {info['mode']}, {window_s:g} s windows)",
        )
    if not args.skip_paced:
        paced_steps = anyio.run(watcher_only, [float(r) for r in args.paced_rates.split(",")], window_s)
        kept_paced = [s for s in paced_steps if s["kept_up"]]
        figures["max_events_per_s_database_removed"] = max((s["rate_achieved"] for s in kept_paced), default=0.0)
        figures["database_removed_steps"] = paced_steps
        common.table(
            ["events/s asked", "achieved", "window s", "due", "read", "handled", "backlog +/s", "kept up", "CPU share", "CPU us/event", "load"],
            [
                [s["rate_asked"], s["rate_achieved"], s["window_s"], s["events_due"], s["events_read"], s["handled_ratio"], s["backlog_growth_events_per_s"], s["kept_up"], s["process_cpu_share"], s["cpu_us_per_event_read"], f"{s['load_avg_1m']['min']}-{s['load_avg_1m']['max']}"]
                for s in paced_steps
            ],
            title=f"the watcher alone: its StreamReader and Dispatcher, database removed ({window_s:g} s windows)",
        )
    sizes = tuple(int(n) for n in args.busy_jobs.split(",")) if args.busy_jobs else (BUSY_JOBS_FULL if args.full else BUSY_JOBS)
    progress = common.Progress("replaying events", len(sizes))
    by_jobs = cpu_per_event(sizes, count, progress)
    progress.close()
    figures["cpu_us_per_event"] = max(f["cpu_us_per_event"] for f in by_jobs.values())
    figures["cpu_us_per_event_by_busy_jobs"] = by_jobs
    per_wall_s, per_cpu_s = rules_rate(3.0 if args.full else 1.5)
    figures["rules_evals_per_s"] = round(per_cpu_s)
    figures["rules_evals_per_wall_s"] = round(per_wall_s)
    figures["definitions"] = {
        "max_increments_per_s": "highest achieved $inc/s among the windows that kept up (handled >= keep_up_ratio, backlog not growing over the second half)",
        "cpu_us_per_event": "highest over the busy-job sizes of process CPU time per replayed event, database removed",
        "rules_evals_per_s": "rules.evaluate on the seed job per second of process CPU time (one core), best of three windows",
        "max_events_per_s_database_removed": "highest event rate the product's StreamReader + Dispatcher kept up with, fed by a paced source, writes answered at once (bench/paced.py)",
    }
    common.table(
        ["busy jobs", "CPU us/event", "events", "evaluations", "deferred", "over budget", "updates built"],
        [[jobs, f["cpu_us_per_event"], f["events"], f["evaluations"], f["deferred"], f["over_budget"], f["updates_built"]] for jobs, f in by_jobs.items()],
        title="hot path with the database removed (decode, path A watch, JobQueue, rules, budget, update building; own writes echoed)",
    )
    print(f"rules.evaluate on the seed job: {figures['rules_evals_per_s']:,} evaluations per CPU second (one core), {figures['rules_evals_per_wall_s']:,} per wall-clock second")
    if args.profile:
        text = profile(count, args.profile_jobs, common.RESULTS / "profile.txt")
        print("\n".join(text.splitlines()[:40]))
    if args.profile_async:
        text = profile_async(args.profile_async, 6.0, common.RESULTS / "profile_async.txt")
        print("\n".join(text.splitlines()[:30]))
    figures["load_avg_1m"] = watch.summary()
    common.save(common.result_name("throughput", args), parameters={"window_s": window_s, "rates_asked": args.rates, "mode": mode, "replayed_events": count, "busy_jobs": list(sizes), "paced_rates_asked": args.paced_rates, "keep_up_ratio": KEEP_UP_RATIO, "full": args.full}, figures=figures, backend_info=info, save_file=not args.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
