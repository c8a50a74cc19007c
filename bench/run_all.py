"""Every benchmark at its default size (minutes on 2 busy cores), one after another, then the benchmarks page.

    ./dev bench run_all            # or: ./dev bench   (no name)
    ./dev bench run_all --full     # the issue's sizes (an hour or more on 2 cores)
    ./dev bench run_all --only latency --only throughput

Each runs in a process of its own (so one's memory and event loop do not
colour the next) and writes ``bench/results/<name>.json`` (``<name>_full.json``
with ``--full``); a run never touches the files of benchmarks it did not run.
The headline figures are printed at the end and merged into
``bench/results/summary.json``; ``docs/benchmarks/index.md`` is rewritten
from the results files (``bench/report.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, report  # noqa: E402

BENCHMARKS = ("latency", "cost", "throughput", "sweep", "memory", "embedded", "scale")


def headline(name: str, figures: dict[str, Any]) -> list[tuple[str, Any]]:
    if name == "latency":
        rows: list[tuple[str, Any]] = [("server capacity $inc/s (same run)", figures.get("capacity_inc_per_s"))]
        for key, point in figures.get("points", {}).items():
            jw, poller = point["jobwatch"], point["poller_fixed"]
            rows.append((f"{key} % of capacity: jobwatch p50/p99 ms", f"{jw['p50_ms']} / {jw['p99_ms']}"))
            rows.append(
                (
                    "  poller p50 ms (expected), ratio",
                    f"{poller['p50_ms']} ({poller['expected_p50_ms']}), x{point['ratio_p50']}",
                )
            )
        return rows
    if name == "cost":
        return [
            (
                "writes per job / per increment",
                f"{figures.get('writes_per_job')} / {figures.get('writes_per_increment')}",
            ),
            ("progress goal met (< 10 % of increments)", figures.get("progress_goal_met")),
        ]
    if name == "throughput":
        return [
            ("events/s kept up, database removed", figures.get("max_events_per_s_database_removed")),
            ("CPU us per consumer event at 25,000/s", figures.get("cpu_us_per_consumer_event_at_goal")),
            ("rules evaluations per CPU second", figures.get("rules_evals_per_s")),
        ]
    if name == "sweep":
        return [
            (key, f"{v['seconds']} s, {v['docs_read']} docs") for key, v in figures.items() if key.startswith("total_")
        ]
    if name == "memory":
        return [
            ("peak MB above idle", figures.get("peak_above_idle_mb")),
            ("growth after the first fifth MB", figures.get("growth_after_first_fifth_mb")),
        ]
    if name == "embedded":
        return [("embedded server $inc per CPU second", figures.get("inc_per_server_cpu_s"))]
    if name == "scale":
        by_n = figures.get("saturated", {}).get("by_instances", {})
        rows = [
            (
                f"{n} instance(s) as fast as read: events/s wall clock / a core each (from CPU time)",
                f"{row.get('consumer_events_per_s')} (x{row.get('wall_clock_ratio')}) / "
                f"{row.get('a_core_each_consumer_events_per_s')} (x{row.get('a_core_each_ratio')})",
            )
            for n, row in by_n.items()
        ]
        met = f"{figures.get('goal_met')} / {figures.get('wall_clock_goal_met')}"
        rows.append(("goal >= 0.8 x N: a core each / wall clock", met))
        return rows
    return []


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--only", action="append", choices=BENCHMARKS, help="run only this one (repeatable)")
    p.add_argument(
        "--summary-only",
        action="store_true",
        help="run nothing: summarise the results files already there and rewrite the page",
    )
    args = p.parse_args()
    names = args.only or list(BENCHMARKS)
    extra = ["--full"] if args.full else []
    timings: dict[str, float] = {}
    failed: list[str] = []
    for name in [] if args.summary_only else names:
        print(f"\n== {name} ==", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(common.ROOT / "bench" / f"{name}.py"), *extra])
        timings[name] = round(time.monotonic() - started, 1)
        if code != 0:
            failed.append(name)
    summary_path = common.RESULTS / "summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary.setdefault("benchmarks", {})
    rows: list[tuple[str, Any]] = []
    for name in names:
        path = report.results_path(name)
        if path is None or name in failed:
            continue
        doc = json.loads(path.read_text())
        summary["benchmarks"][name] = {
            "file": path.name,
            "commit": doc["machine"].get("git_commit"),
            "finished_at": doc.get("finished_at"),
            "seconds": timings.get(name),
        }
        rows.extend((f"{name}: {label}", value) for label, value in headline(name, doc["figures"]))
    print()
    common.table(["figure", "value"], rows, title="summary (bench/results/*.json)")
    if timings:
        print("seconds per benchmark:", ", ".join(f"{n} {s:g}" for n, s in timings.items()))
    summary["last_run"] = {"benchmarks": names, "failed": failed, "full": args.full, "machine": common.machine()}
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    report.write()
    print(f"wrote {report.PAGE.relative_to(common.ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
