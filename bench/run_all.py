"""Every benchmark at its default size (a few minutes in all), one after another.

    ./dev bench run_all            # or: ./dev bench   (no name)
    ./dev bench run_all --full     # the issue's sizes (an hour or more on 2 cores)

Each runs in a process of its own (so one's memory and event loop do not
colour the next) and writes ``bench/results/<name>.json``; latency also
writes ``bench/results/latency.png``. A summary of the headline figures is
printed at the end and kept in ``bench/results/summary.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

BENCHMARKS = ("latency", "cost", "throughput", "sweep", "memory")


def headline(name: str, figures: dict[str, Any]) -> list[tuple[str, Any]]:
    if name == "latency":
        rows = []
        for rate, entry in figures.get("by_rate", {}).items():
            jw, poller = entry.get("jobwatch", {}), entry.get("poller_fixed", {})
            rows.append((f"latency p50/p99 ms at {rate} $inc/s asked ({jw.get('rate_achieved')} achieved)", f"{jw.get('p50_ms')} / {jw.get('p99_ms')}"))
            rows.append((f"  fixed poller p50/p99 ms, ratio p50", f"{poller.get('p50_ms')} / {poller.get('p99_ms')}, x{entry.get('ratio_p50')}"))
        return rows
    if name == "cost":
        return [
            ("writes per job / per increment", f"{figures.get('writes_per_job')} / {figures.get('writes_per_increment')}"),
            ("poller writes per job", figures.get("poller_writes_per_job")),
            ("reads per job (hot path)", figures.get("reads_per_job")),
        ]
    if name == "throughput":
        return [
            ("max sustained $inc/s", f"{figures.get('max_increments_per_s')} (limited by {figures.get('limited_by', '?').split(' ')[0]})"),
            ("watcher alone, database removed: events/s kept up", figures.get("max_events_per_s_database_removed")),
            ("CPU us per event (highest over busy-job sizes)", figures.get("cpu_us_per_event")),
            ("rules evaluations per CPU second (seed job)", figures.get("rules_evals_per_s")),
        ]
    if name == "sweep":
        return [(key, f"{v['seconds']} s, {v['docs_read']} docs (indexed pass {v['indexed_seconds']} s)") for key, v in figures.items() if key.startswith("total_")]
    if name == "memory":
        return [
            ("idle / peak MB over events", f"{figures.get('idle_mb')} / {figures.get('peak_mb')} over {figures.get('events'):,}"),
            ("growth after first fifth MB (slope per 1M events)", f"{figures.get('growth_after_first_fifth_mb')} ({figures.get('slope_after_first_fifth_mb_per_million_events')})"),
        ]
    return []


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--only", action="append", choices=BENCHMARKS, help="run only this one (repeatable)")
    p.add_argument("--summary-only", action="store_true", help="run nothing: summarise the results files already there (after benchmarks run one by one)")
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
    rows: list[tuple[str, Any]] = []
    summary: dict[str, Any] = {"seconds": timings, "failed": failed, "machine": common.machine(), "figures": {}}
    for name in names:
        path = common.RESULTS / f"{name}.json"
        if not path.exists() or name in failed:
            continue
        figures = json.loads(path.read_text())["figures"]
        summary["figures"][name] = figures
        rows.extend((f"{name}: {label}", value) for label, value in headline(name, figures))
    print()
    common.table(["figure", "value"], rows, title="summary (bench/results/*.json)")
    print("seconds per benchmark:", ", ".join(f"{n} {s:g}" for n, s in timings.items()))
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    (common.RESULTS / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "figures"}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
