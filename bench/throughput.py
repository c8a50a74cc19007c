"""Throughput: the change events one watcher keeps up with on one core, the database removed.

    ./dev bench throughput              # 5 s windows (about 2 minutes)
    ./dev bench throughput --full       # 30 s windows, the goal rate five times
    ./dev bench throughput --no-profile # skip the cProfile window at the goal rate (bench/results/profile.txt)

Through the product's own hot path (``bench/paced.py``: ``StreamReader``,
``Dispatcher``, ``JobQueue``, the rules, as ``Watcher`` wires them), fed by a
process that plays the server over a pipe; every write answered at once, and
its change event coming back:

1. ``steps``: windows at stepped rates of the consumers' events (half of the
   increments to jobs with many items, whose events coalesce, half to jobs
   with one); each keeps the events read, whether the watcher kept up (read
   >= 95 % of due, backlog not growing), this process's CPU share and CPU
   per event, and the load average. ``max_events_per_s_database_removed``
   is the highest rate kept up.
2. ``at_goal``: the goal's rate (25,000 events/s) again, several times: the
   CPU per event the stream delivered (the consumers' events and those of
   the watcher's own writes) is the figure that does not move with the
   machine's load; 1,000,000 us over it is what one core can keep up with.
3. ``mixes``: the goal's rate with every increment to busy jobs, then to
   single-item jobs (the two ends of the mix).
4. ``rules_evals_per_s``: ``rules.evaluate`` on the seed's document per CPU
   second (one core), best of three windows after a warm-up (as
   ``rules_throughput``); the wall-clock rate beside it. Also the machine's
   speed of the moment, against which the rest can be read.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, load, paced, report  # noqa: E402

GOAL_EVENTS_PER_S = 25_000
GOAL_CPU_US_PER_EVENT = 40.0
RATES = (5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000)


def run(rate: float, window_s: float, **kw: Any) -> dict[str, Any]:
    return anyio.run(lambda: paced.step(rate, window_s, **kw))


def rules_rate(seconds: float) -> tuple[float, float]:
    """(per wall-clock second, per CPU second): the second is the steadier on a shared machine."""
    import rules
    from bench.rules_throughput import rate
    from tests.support.documents import seed_job

    doc = seed_job()
    return rate(lambda: rules.evaluate(doc), seconds)


def profile(rate: float, window_s: float, path: Path) -> dict[str, Any]:
    """cProfile of one window at ``rate``: the text to ``path``, the top
    functions by their own time (share of the profiled time) as figures."""
    profiler = cProfile.Profile()
    result = run(rate, window_s, profiler=profiler)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(
        "cProfile of the watcher alone (bench/paced.py: StreamReader + Dispatcher, database removed): one "
        f"{window_s:g} s window at "
        f"{rate:g} events/s asked; {result['events_read']} consumer events read ({result['rate_achieved']}/s), "
        f"{result['events_with_own_writes']} with the watcher's own; CPU share {result['process_cpu_share']} (the "
        "profiler slows it)\n\n"
    )
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(40)
    path.write_text(out.getvalue())
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    top = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:15]  # type: ignore[attr-defined]
    return {
        "window": {k: result[k] for k in ("rate_asked", "events_read", "events_with_own_writes", "process_cpu_share")},
        "top_own_time": [
            {"function": f"{Path(file).name}:{line}({name})", "share": round(row[2] / total, 3), "calls": row[1]}
            for (file, line, name), row in top
        ],
    }


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--rates", default=",".join(str(r) for r in RATES), help="stepped consumer event rates")
    p.add_argument("--window-s", type=float, help="seconds per window (default 5; --full 30)")
    p.add_argument("--repeats", type=int, help="windows at the goal rate (default 3; --full 5)")
    p.add_argument("--no-profile", action="store_true", help="skip the profiled window (bench/results/profile.txt)")
    args = p.parse_args()
    from watcher.ops import logs

    logs.setup(level="WARNING")  # as a high-rate deployment would: no INFO line per completed job
    window_s = args.window_s or (30.0 if args.full else 5.0)
    repeats = args.repeats or (5 if args.full else 3)
    watch = load.LoadWatch()
    steps = []
    for rate in (float(r) for r in args.rates.split(",")):
        steps.append(run(rate, window_s))
        print(
            f"  {rate:>8,.0f}/s asked: {steps[-1]['rate_achieved']:>9,.0f}/s read, kept up {steps[-1]['kept_up']}, "
            f"CPU {steps[-1]['cpu_us_per_event']} us/event",
            flush=True,
        )
    at_goal = [run(GOAL_EVENTS_PER_S, window_s) for _ in range(repeats)]
    mixes = {
        "busy_only": run(GOAL_EVENTS_PER_S, window_s, single_share=0.0),
        "single_only": run(GOAL_EVENTS_PER_S, window_s, single_share=1.0),
    }
    per_event = statistics.median(s["cpu_us_per_event"] for s in at_goal)
    per_consumer_event = statistics.median(s["cpu_us_per_consumer_event"] for s in at_goal)
    per_wall_s, per_cpu_s = rules_rate(3.0 if args.full else 1.5)
    kept = [s for s in steps if s["kept_up"]]
    figures: dict[str, Any] = {
        "max_events_per_s_database_removed": max((s["rate_achieved"] for s in kept), default=0.0),
        "goal": {"events_per_s": GOAL_EVENTS_PER_S, "cpu_us_per_event": GOAL_CPU_US_PER_EVENT},
        "cpu_us_per_event_at_goal": per_event,
        "cpu_us_per_consumer_event_at_goal": per_consumer_event,
        "cpu_us_per_event_at_goal_range": [
            min(s["cpu_us_per_event"] for s in at_goal),
            max(s["cpu_us_per_event"] for s in at_goal),
        ],
        "events_per_cpu_s": round(1e6 / per_event),
        "consumer_events_per_cpu_s": round(1e6 / per_consumer_event),
        "kept_up_at_goal": sum(s["kept_up"] for s in at_goal),
        "windows_at_goal": len(at_goal),
        "goal_met": per_consumer_event <= GOAL_CPU_US_PER_EVENT and all(s["kept_up"] for s in at_goal),
        "steps": steps,
        "at_goal": at_goal,
        "mixes": mixes,
        "rules_evals_per_s": round(per_cpu_s),
        "rules_evals_per_wall_s": round(per_wall_s),
        "log_level": "WARNING",
        "definitions": {
            "cpu_us_per_event_at_goal": (
                "median over the goal-rate windows of this process's CPU time per change event delivered (the "
                "consumers' and the watcher's own writes')"
            ),
            "cpu_us_per_consumer_event_at_goal": (
                "the same per consumer event (what the goal's rate counts): the figure held against the goal"
            ),
            "max_events_per_s_database_removed": (
                "highest consumer event rate among the stepped windows that kept up (read >= 95 % of due, backlog not "
                "growing); moves with the machine's load"
            ),
            "rules_evals_per_s": (
                "rules.evaluate on the seed job per second of process CPU time (one core), best of three windows"
            ),
        },
    }
    if not args.no_profile:
        text_path = common.side_file("profile.txt", save_file=not args.no_save)
        figures["profile"] = profile(GOAL_EVENTS_PER_S, min(window_s, 6.0), text_path)
    figures["load_avg_1m"] = watch.summary()
    common.table(
        ["window", "asked/s", "read/s", "kept up", "CPU share", "us/event", "us/consumer event", "batch", "load"],
        [
            report.window_row(label, s)
            for label, s in [*(("step", s) for s in steps), *(("goal", s) for s in at_goal), *mixes.items()]
        ],
        title=f"the watcher alone, database removed ({window_s:g} s windows)",
    )
    print(
        f"at {GOAL_EVENTS_PER_S:,}/s: {per_consumer_event} us of CPU per consumer event ({per_event} per event "
        f"delivered); goal <= {GOAL_CPU_US_PER_EVENT}: {'met' if figures['goal_met'] else 'not met'}"
    )
    print(f"rules.evaluate on the seed job: {figures['rules_evals_per_s']:,} evaluations per CPU second")
    common.save(
        common.result_name("throughput", args),
        parameters={
            "window_s": window_s,
            "rates": args.rates,
            "repeats": repeats,
            "busy_jobs": paced.BUSY_JOBS,
            "items": paced.ITEMS,
            "single_share": paced.SINGLE_SHARE,
            "full": args.full,
        },
        figures=figures,
        backend_info=common.backend("database removed", "none"),
        save_file=not args.no_save,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
