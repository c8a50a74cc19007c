"""Completion latency: jobwatch against the seed's fixed 5-second poller, side by side.

    ./dev bench latency              # 200 jobs per rate and keeper, both modes (about 8 minutes on 2 busy cores)
    ./dev bench latency --full       # 1,000 completions per rate and keeper (the issue's size)
    ./dev bench latency --mode separate-process   # jobwatch run + jobwatch embedded-server

From the acknowledgement of a job's last ``$inc`` (the earlier of the
consumer's call returning and the reader seeing that increment: see
``bench/workload.py``) to the moment a reader (a change stream of its own, in
this process, on the same clock) sees the job ``Completed``; at 200 and 1,000
increments/s spread over 100 concurrent jobs. Each rate runs jobwatch, then
the fixed poller, under the same generated load on the same backend, each on
a fresh database. The achieved increment rate is reported beside the one
asked.

Where the time goes: first, the backend's own ceiling under this load (the
same consumers and reader, no keeper, increments as fast as they are
acknowledged); then, beside the asked rates, a run at 30 % of that ceiling
(``--sustained-share``), where no queue builds in the server. For jobwatch,
two parts of each completion are reported apart: the server delivering the
last ``$inc``'s event to a reader, and the watcher's own share (its
``job_completed`` log line: the event's server time to its write being
acknowledged).

Modes: ``in-process`` (the embedded server and the watcher in this process,
the watcher reading a real change stream over the wire) and ``separate-process``
(``jobwatch embedded-server`` and ``jobwatch run --uri`` as processes of
their own: the production stream path). With ``MONGODB_URI`` set, both modes
use that server instead of the embedded engine.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, workload  # noqa: E402

RATES = (200.0, 1000.0)
DEFAULT_JOBS = 200
FULL_JOBS = 1000


CAPACITY_JOBS = 100
#: The extra rate below the backend's ceiling: latency without a queue in the server.
SUSTAINED_SHARE = 0.3
SUSTAINED_MAX_JOBS = 200


async def measure(mode: str, plans: dict[float, workload.Plan], keepers: tuple[str, ...], sustained_share: float = SUSTAINED_SHARE) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]], dict[str, Any]]:
    by_rate: dict[str, Any] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    backend_cm = workload.in_process() if mode == "in-process" else workload.separate_process()
    async with backend_cm as backend:
        info = backend.info()
        # The backend's ceiling under this load (no keeper): an asked rate above
        # it queues in the server, and every latency then includes the queue.
        first = next(iter(plans.values()))
        ceiling = await workload.capacity(backend, workload.Plan(jobs=CAPACITY_JOBS, items=first.items))
        info = {**info, "capacity_inc_per_s": round(ceiling.outcome.achieved_rate, 1), "capacity_delivery_ms": common.distribution_ms(ceiling.delivery_ms)}
        runs = dict(plans)
        if sustained_share > 0 and ceiling.outcome.achieved_rate > 0:
            sustained = round(ceiling.outcome.achieved_rate * sustained_share)
            runs = {float(sustained): dataclasses.replace(first, rate=float(sustained), jobs=min(first.jobs, SUSTAINED_MAX_JOBS)), **runs}
            info["sustained_rate"] = {"inc_per_s": sustained, "share_of_capacity": sustained_share}
        for rate, plan in runs.items():
            key = f"{rate:g}"
            entry: dict[str, Any] = {}
            samples[key] = {}
            for keeper in keepers:
                run = await workload.run_keeper(backend, keeper, plan, label=f"latency_{key}")
                latencies = run.latencies_ms
                samples[key][keeper] = latencies
                entry[keeper] = {
                    **common.distribution_ms(latencies),
                    "jobs": len(run.outcome.job_ids),
                    "not_completed": len(run.outcome.job_ids) - run.completed,
                    "increments": run.outcome.increments,
                    "rate_asked": rate,
                    "rate_achieved": round(run.outcome.achieved_rate, 1),
                    "from_consumer_ack_only": common.distribution_ms(run.latencies_from_consumer_ack_ms),
                    # Where the time goes: the server delivering the last $inc's
                    # event, and (jobwatch) the watcher's own share.
                    "delivery_ms": common.distribution_ms(run.delivery_ms),
                }
                if keeper == "jobwatch":
                    entry[keeper]["watcher_ms"] = common.distribution_ms(run.watcher_latencies_ms)
            if "jobwatch" in entry and "poller_fixed" in entry:
                entry["ratio_p50"] = common.ratio(entry["poller_fixed"]["p50_ms"] or float("nan"), entry["jobwatch"]["p50_ms"] or float("nan"))
                entry["ratio_p99"] = common.ratio(entry["poller_fixed"]["p99_ms"] or float("nan"), entry["jobwatch"]["p99_ms"] or float("nan"))
            by_rate[key] = entry
    return by_rate, samples, info


def _quartet(distribution: dict[str, Any] | None) -> list[Any]:
    d = distribution or {}
    return [d.get("p50_ms"), d.get("p95_ms"), d.get("p99_ms"), d.get("max_ms")]


def plot(samples: dict[str, dict[str, dict[str, list[float]]]], path: Path, subtitle: str) -> Path:
    """Latency distributions (empirical CDFs, log time axis), jobwatch against the poller."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(mode, rate, keepers) for mode, by_rate in samples.items() for rate, keepers in by_rate.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    colours = {"jobwatch": "tab:blue", "poller_fixed": "tab:orange", "poller_original": "tab:red"}
    for ax, (mode, rate, keepers) in zip(axes[0], panels, strict=True):
        for keeper, values in keepers.items():
            if not values:
                continue
            ordered = sorted(values)
            ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
            p50 = common.quantile(ordered, 0.5)
            ax.step(ordered, ys, where="post", color=colours.get(keeper), label=f"{keeper} (p50 {p50:,.1f} ms, n={len(ordered)})")
        ax.set_xscale("log")
        ax.set_xlabel("last $inc acknowledged -> reader sees Completed (ms, log)")
        ax.set_ylabel("share of jobs completed")
        ax.set_title(f"{rate} $inc/s asked, 100 concurrent jobs ({mode})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"jobwatch against the seed's fixed 5 s poller: {subtitle}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--mode", choices=["in-process", "separate-process", "both"], default="both")
    p.add_argument("--jobs", type=int, help=f"completions per rate and keeper (default {DEFAULT_JOBS}; --full {FULL_JOBS})")
    p.add_argument("--items", type=int, default=10, help="items per stage, 2 stages (default 10)")
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES), help="increments/s, comma-separated")
    p.add_argument("--original", action="store_true", help="also run the original (buggy) poller")
    p.add_argument("--sustained-share", type=float, default=SUSTAINED_SHARE, help=f"also run at this share of the backend's measured ceiling, at most {SUSTAINED_MAX_JOBS} jobs (default {SUSTAINED_SHARE}; 0: no)")
    args = p.parse_args()
    from watcher.ops import logs

    logs.setup(level="ERROR")
    jobs = args.jobs or (FULL_JOBS if args.full else DEFAULT_JOBS)
    rates = [float(r) for r in args.rates.split(",")]
    plans = {rate: workload.Plan(jobs=jobs, items=args.items, rate=rate) for rate in rates}
    keepers = ("jobwatch", "poller_fixed", "poller_original") if args.original else ("jobwatch", "poller_fixed")
    modes = ["in-process", "separate-process"] if args.mode == "both" else [args.mode]
    figures: dict[str, Any] = {
        "reader": "a change stream of its own (fullDocument updateLookup) in the benchmark process, same monotonic clock as the consumers",
        "start": "the earlier of: the consumer's update_one returning for the job's last $inc; the reader seeing that increment's event",
    }
    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    backends: dict[str, Any] = {}
    for mode in modes:
        if mode == "separate-process" and common.mongodb_uri() is None:
            ok, why = workload.embedded_server_available()
            if not ok:
                print(f"separate-process mode skipped: {why}", flush=True)
                figures.setdefault("modes", {})[mode] = {"skipped": why}
                continue
        by_rate, mode_samples, info = anyio.run(measure, mode, plans, keepers, args.sustained_share)
        samples[mode] = mode_samples
        backends[mode] = info
        figures.setdefault("modes", {})[mode] = {"by_rate": by_rate}
        rows = []
        for rate, entry in by_rate.items():
            for keeper in keepers:
                e = entry[keeper]
                rows.append([keeper, rate, e["rate_achieved"], f"{e['completions']}/{e['jobs']}", e["p50_ms"], e["p95_ms"], e["p99_ms"], e["max_ms"]])
            rows.append(["  fixed poller p50 / jobwatch p50", rate, None, None, entry.get("ratio_p50"), None, None, None])
            rows.append(["  server: last $inc acked -> event seen", rate, None, None, *_quartet(entry["jobwatch"]["delivery_ms"])])
            rows.append(["  jobwatch's own share (event -> write acked)", rate, None, None, *_quartet(entry["jobwatch"].get("watcher_ms"))])
        common.table(["keeper", "$inc/s asked", "achieved", "completed", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows, title=f"latency ({mode}, {info['kind']}; backend alone sustains {info['capacity_inc_per_s']} $inc/s)")
    # The headline keys: the production path when it ran, else in-process.
    headline = "separate-process" if "separate-process" in samples else "in-process"
    if headline in samples:
        figures["by_rate"] = figures["modes"][headline]["by_rate"]
        figures["headline_mode"] = headline
    parameters = {"plans": {f"{r:g}": plan.as_dict() for r, plan in plans.items()}, "modes": modes, "keepers": list(keepers), "full": args.full, "sustained_share": args.sustained_share}
    path = common.save(common.result_name("latency", args), parameters=parameters, figures=figures, backend_info=backends, save_file=not args.no_save)
    if path is not None and samples:
        subtitle = f"{jobs} jobs x 2 stages x {args.items} items per rate; {common.machine()['cpu_count']} CPUs, Python {common.machine()['python']}"
        png = plot(samples, path.with_suffix(".png"), subtitle)
        print(f"wrote {path.relative_to(common.ROOT)} and {png.relative_to(common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
