"""Completion latency at 25, 50 and 75 % of the server's measured capacity: jobwatch against the seed's poller.

    ./dev bench latency              # 200 completions per point for jobwatch (about 5 minutes)
    ./dev bench latency --full       # 1,000 completions per point (the issue's size)

The database is ``jobwatch embedded-server`` in a process of its own (or
``MONGODB_URI``, or a ``mongod`` on PATH: the test suite's resolver); jobwatch
is ``jobwatch run --uri`` in another, as an operator runs them; the consumers
(the CLI's simulator) and a reader of its own run in the benchmark's process.

First the server's capacity under this load, in this run: the same
consumers and reader, no keeper, increments as fast as they are
acknowledged. Then, at each share of it, jobwatch and then the poller, each
on a fresh database under the same generated load. The poller runs for at
least ``POLLER_CYCLES`` of its cycles per point (more jobs if the point's
jobs would take less), so its figure does not depend on where a short run
falls in its cycle; its expected p50 (half its interval) is reported beside
the measured one.

Latency is from the acknowledgement of a job's last ``$inc`` (the earlier of
the consumer's call returning and the reader seeing that increment: see
``bench/workload.py``) to the reader seeing the job ``Completed``.

The watcher measures itself too (``/metrics``, scraped before it stops):
``jobwatch_event_lag_seconds`` (the event's server time to the watcher
reading it) and ``jobwatch_decision_seconds{kind="job"}`` (reading it to the
completing write acknowledged), as Prometheus' ``histogram_quantile`` would
give them. Beside them, the same two steps seen from outside: the server's
time on the last increment to the benchmark's reader receiving its event,
and that moment to the server's time on the completing write; and both
together (``jobwatch_job_completion_latency_seconds``) against the server's time
on the last increment to its time on the completing write. On the embedded
server an event's ``wallTime`` is when its change history recorded it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, load, workload  # noqa: E402
from bench.poller import POLL_INTERVAL_S  # noqa: E402

SHARES = (0.25, 0.5, 0.75)
DEFAULT_JOBS = 200
FULL_JOBS = 1000
ITEMS = 5  # per stage, two stages: ten increments per job
ACTIVE = 100
CAPACITY_JOBS = 100
POLLER_CYCLES = 10
#: The goals at 50 % of capacity.
GOAL_P50_MS, GOAL_P99_MS, GOAL_WATCHER_P99_MS, GOAL_RATIO = 10.0, 50.0, 5.0, 250.0
AGREEMENT = 0.10


def poller_jobs(jobs: int, rate: float) -> int:
    """More jobs than the poller's ``POLLER_CYCLES`` cycles can take (a poll
    under load stretches its cycle; the load stops once it has polled that often)."""
    per_job = 2 * ITEMS
    return max(jobs, math.ceil(4 * POLLER_CYCLES * POLL_INTERVAL_S * rate / per_job))


def agreement(product: float | None, outside: float | None) -> float | None:
    if product is None or outside is None or not outside:
        return None
    return round(abs(product - outside) / outside, 3)


def entry(run: workload.Run) -> dict[str, Any]:
    return {
        **common.distribution_ms(run.latencies_ms),
        "jobs": len(run.outcome.job_ids),
        "not_completed": len(run.outcome.job_ids) - run.completed,
        "increments": run.outcome.increments,
        "rate_asked": run.plan.rate,
        "rate_achieved": round(workload.achieved_rate(run.outcome), 1),
        "duration_s": round(run.outcome.elapsed_s, 1),
        "delivery_ms": common.distribution_ms(run.delivery_ms),
    }


async def measure(jobs: int, shares: tuple[float, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    async with workload.backend(separate=True) as backend:
        info = backend.info()
        ceiling = await workload.capacity(backend, workload.plan(jobs=CAPACITY_JOBS, items=ITEMS, active=ACTIVE))
        capacity = workload.achieved_rate(ceiling.outcome)
        figures: dict[str, Any] = {
            "capacity_inc_per_s": round(capacity, 1),
            "capacity_delivery_ms": common.distribution_ms(ceiling.delivery_ms),
            "points": {},
        }
        for share in shares:
            rate = round(capacity * share, 1)
            load_ = workload.plan(jobs=jobs, items=ITEMS, active=ACTIVE, rate=rate)
            watch = load.LoadWatch()
            run = await workload.run_keeper(backend, "jobwatch", load_, label=f"latency_{int(share * 100)}")
            point: dict[str, Any] = {"share_of_capacity": share, "rate_asked": rate, "jobwatch": entry(run)}
            lag = common.histogram_ms(run.metrics, "jobwatch_event_lag_seconds")
            decision = common.histogram_ms(run.metrics, "jobwatch_decision_seconds", kind="job")
            reaction = common.histogram_ms(run.metrics, "jobwatch_job_completion_latency_seconds")
            lag_outside = common.distribution_ms(run.lag_outside_ms)
            decision_outside = common.distribution_ms(run.decision_outside_ms)
            reaction_outside = common.distribution_ms(run.reaction_outside_ms)
            point["jobwatch"]["own"] = {
                "event_lag": lag,
                "decision_job": decision,
                "reaction": reaction,
                "event_lag_outside": lag_outside,
                "decision_outside": decision_outside,
                "reaction_outside": reaction_outside,
                "event_lag_p50_disagreement": agreement(lag["p50_ms"], lag_outside["p50_ms"]),
                "decision_p50_disagreement": agreement(decision["p50_ms"], decision_outside["p50_ms"]),
                "reaction_p50_disagreement": agreement(reaction["p50_ms"], reaction_outside["p50_ms"]),
            }
            poller_load = dataclasses.replace(load_, jobs=poller_jobs(jobs, rate))
            poller = await workload.run_keeper(
                backend, "poller_fixed", poller_load, label=f"latency_{int(share * 100)}", poller_cycles=POLLER_CYCLES
            )
            point["poller_fixed"] = {
                **entry(poller),
                "cycles": poller.polls,
                "expected_p50_ms": POLL_INTERVAL_S / 2 * 1000,
            }
            point["ratio_p50"] = common.ratio(
                point["poller_fixed"]["p50_ms"] or math.nan, point["jobwatch"]["p50_ms"] or math.nan
            )
            point["load_avg_1m"] = watch.summary()
            figures["points"][f"{int(share * 100)}"] = point
            print(
                f"  {int(share * 100)} % ({rate:g} $inc/s asked): jobwatch p50 {point['jobwatch']['p50_ms']} ms, "
                f"p99 {point['jobwatch']['p99_ms']} ms; "
                f"poller p50 {point['poller_fixed']['p50_ms']} ms over {poller.polls} cycles; x{point['ratio_p50']}",
                flush=True,
            )
    return figures, info


def goals(figures: dict[str, Any]) -> dict[str, Any]:
    half = figures["points"].get("50")
    if half is None:
        return {}
    jw = half["jobwatch"]
    watcher_p99 = jw["own"]["decision_job"]["p99_ms"]
    checks = {
        "p50_ms": (jw["p50_ms"], GOAL_P50_MS, jw["p50_ms"] is not None and jw["p50_ms"] <= GOAL_P50_MS),
        "p99_ms": (jw["p99_ms"], GOAL_P99_MS, jw["p99_ms"] is not None and jw["p99_ms"] <= GOAL_P99_MS),
        "watcher_p99_ms": (
            watcher_p99,
            GOAL_WATCHER_P99_MS,
            watcher_p99 is not None and watcher_p99 <= GOAL_WATCHER_P99_MS,
        ),
        "ratio_p50": (half["ratio_p50"], GOAL_RATIO, half["ratio_p50"] is not None and half["ratio_p50"] >= GOAL_RATIO),
        "own_p50_within_10_percent": (
            max(
                jw["own"]["event_lag_p50_disagreement"] or math.inf, jw["own"]["decision_p50_disagreement"] or math.inf
            ),
            AGREEMENT,
            all(
                d is not None and d <= AGREEMENT
                for d in (jw["own"]["event_lag_p50_disagreement"], jw["own"]["decision_p50_disagreement"])
            ),
        ),
    }
    return {name: {"value": value, "goal": goal, "met": met} for name, (value, goal, met) in checks.items()}


def plot(figures: dict[str, Any], path: Path, subtitle: str) -> Path:
    """p50 and p99 against the rate as a share of the server's capacity, log time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(figures["points"].values(), key=lambda p: p["share_of_capacity"])
    shares = [100 * p["share_of_capacity"] for p in points]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for keeper, colour in (("jobwatch", "tab:blue"), ("poller_fixed", "tab:orange")):
        for q, style in (("p50_ms", "-o"), ("p99_ms", "--s")):
            ax.plot(
                shares,
                [p[keeper][q] for p in points],
                style,
                color=colour,
                label=f"{'jobwatch' if keeper == 'jobwatch' else 'seed poller (5 s)'} {q[:3]}",
            )
    ax.plot(
        shares,
        [p["jobwatch"]["own"]["decision_job"]["p99_ms"] for p in points],
        ":^",
        color="tab:green",
        label="jobwatch's own share p99 (its /metrics)",
    )
    for value, label in ((GOAL_P50_MS, "goal p50"), (GOAL_P99_MS, "goal p99")):
        ax.axhline(value, color="grey", lw=0.8, ls=":")
        ax.text(shares[0], value * 1.08, label, fontsize=7, color="grey")
    ax.set_yscale("log")
    ax.set_xlabel(
        f"increment rate, % of the server's capacity measured in the run ({figures['capacity_inc_per_s']:g} $inc/s)"
    )
    ax.set_ylabel("last $inc acknowledged -> Completed seen (ms, log)")
    ax.set_xticks(shares)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title(f"completion latency against load: {subtitle}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument(
        "--jobs", type=int, help=f"completions per point for jobwatch (default {DEFAULT_JOBS}; --full {FULL_JOBS})"
    )
    p.add_argument(
        "--shares", default=",".join(f"{s:g}" for s in SHARES), help="shares of the measured capacity, comma-separated"
    )
    args = p.parse_args()
    from watcher.ops import logs

    logs.setup(level="ERROR")
    jobs = args.jobs or (FULL_JOBS if args.full else DEFAULT_JOBS)
    shares = tuple(float(s) for s in args.shares.split(","))
    watch = load.LoadWatch()
    figures, info = anyio.run(measure, jobs, shares)
    figures["goals_at_50_percent"] = goals(figures)
    figures["load_avg_1m"] = watch.summary()
    figures["definitions"] = {
        "latency": (
            "the earlier of the consumer's update_one returning for a job's last $inc and the benchmark's reader "
            "seeing that increment, to the reader seeing the job Completed"
        ),
        "own.event_lag": (
            "jobwatch_event_lag_seconds from the watcher's /metrics: each event's server time to the watcher reading it"
        ),
        "own.decision_job": (
            "jobwatch_decision_seconds{kind=job}: the watcher reading the job's newest event to its completing write "
            "acknowledged"
        ),
        "own.event_lag_outside": (
            "the last increment's server time (wallTime) to the benchmark's reader receiving its event"
        ),
        "own.decision_outside": (
            "the benchmark's reader receiving the last increment's event to the server's time (wallTime) on the "
            "completing write"
        ),
        "own.reaction": (
            "jobwatch_job_completion_latency_seconds: the completing event's server time to the watcher's write "
            "acknowledged (lag and decision together)"
        ),
        "own.reaction_outside": "the server's time on the last increment to its time on the completing write",
    }
    rows = []
    for key, point in figures["points"].items():
        for keeper in ("jobwatch", "poller_fixed"):
            e = point[keeper]
            rows.append(
                [
                    f"{key} % {keeper}",
                    e["rate_achieved"],
                    f"{e['completions']}/{e['jobs']}",
                    e["p50_ms"],
                    e["p95_ms"],
                    e["p99_ms"],
                    e["max_ms"],
                ]
            )
        own = point["jobwatch"]["own"]
        rows.append(
            [
                "  its own: event lag p50/p99 (outside)",
                None,
                None,
                own["event_lag"]["p50_ms"],
                None,
                own["event_lag"]["p99_ms"],
                own["event_lag_outside"]["p50_ms"],
            ]
        )
        rows.append(
            [
                "  its own: decision p50/p99 (outside)",
                None,
                None,
                own["decision_job"]["p50_ms"],
                None,
                own["decision_job"]["p99_ms"],
                own["decision_outside"]["p50_ms"],
            ]
        )
    common.table(
        ["point keeper", "$inc/s", "completed", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        rows,
        title=f"latency ({info['kind']}, {info['mode']}; capacity {figures['capacity_inc_per_s']} $inc/s)",
    )
    for name, goal in figures["goals_at_50_percent"].items():
        print(f"  at 50 %: {name} {goal['value']} (goal {goal['goal']}): {'met' if goal['met'] else 'not met'}")
    parameters = {
        "jobs": jobs,
        "items_per_stage": ITEMS,
        "active_jobs": ACTIVE,
        "shares": list(shares),
        "poller_cycles_at_least": POLLER_CYCLES,
        "full": args.full,
    }
    path = common.save(
        common.result_name("latency", args),
        parameters=parameters,
        figures=figures,
        backend_info=info,
        save_file=not args.no_save,
    )
    if path is not None:
        png = plot(
            figures,
            path.with_suffix(".png"),
            f"{jobs} jobs per point, {os.cpu_count()} CPUs, load {load.span(figures['load_avg_1m'])}",
        )
        print(f"wrote {path.relative_to(common.ROOT)} and {png.relative_to(common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
