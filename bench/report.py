"""The benchmarks page, ``docs/benchmarks/index.md``, written from ``bench/results/*.json``.

    ./dev bench report           # rewrite the page (every ./dev bench run does it too)

Every figure on the page comes from a results file: this script holds the
words around them and nothing else. ``tests/unit/test_benchmark_page.py``
fails when the committed page differs from what this writes from the
committed results. For each benchmark the newer of ``<name>.json`` (default
size) and ``<name>_full.json`` (the issue's) is shown, with the command,
commit, time and load average it was measured with. The plots are copied
next to the page.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.load import span as load_span

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "benchmarks" / "index.md"
PLOTS = ("latency", "scale")


def results_path(name: str) -> Path | None:
    """The newer of the default-size and full-size results of ``name``."""
    found = [p for p in (RESULTS / f"{name}.json", RESULTS / f"{name}_full.json") if p.exists()]
    return max(found, key=lambda p: json.loads(p.read_text()).get("finished_at", ""), default=None)


def _load(name: str) -> dict[str, Any] | None:
    path = results_path(name)
    return None if path is None else {**json.loads(path.read_text()), "_file": path.name}


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000 or digits == 0:
            return f"{value:,.0f}"
        if abs(value) < 10:
            return f"{value:.3g}"  # small figures keep three significant digits
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def _latency_goal_value(key: str, figures: dict[str, Any]) -> str:
    return _n(figures["goals_at_50_percent"].get(key, {}).get("value"), 2)


def _latency_goal_met(key: str, figures: dict[str, Any]) -> bool | None:
    met: bool | None = figures["goals_at_50_percent"].get(key, {}).get("met")
    return met


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("**met**" if ok else "**not met**")


def _source(doc: dict[str, Any]) -> str:
    machine = doc.get("machine", {})
    load = doc.get("figures", {}).get("load_avg_1m")
    shown = load_span(load) if isinstance(load, dict) else _n(machine.get("load_avg_1m"))
    return (
        f"`bench/results/{doc['_file']}`: `{doc.get('command', '?')}`, commit `{machine.get('git_commit')}`, "
        f"{doc.get('finished_at', '?')}, {machine.get('cpu_count')} CPUs ({machine.get('cpu_model')}), load "
        f"average {shown}"
    )


def _function(name: str) -> str:
    """A profile row's function, built-ins without cProfile's placeholder file."""
    return f"`{name.removeprefix('/~:0(')[:-1]}`" if name.startswith("/~:0(") else f"`{name}`"


def _profile_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """A profile's functions with the most time of their own: function, share, calls."""
    return [[_function(row["function"]), f"{100 * row['share']:.1f} %", row["calls"]] for row in rows]


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_n(cell) if not isinstance(cell, str) else cell for cell in row) + " |" for row in rows]
    return lines


# -- sections ----------------------------------------------------------------


def window_row(label: str, s: dict[str, Any]) -> list[Any]:
    """One window of the throughput benchmark as a table row (here and on its console)."""
    return [
        label,
        s["rate_asked"],
        s["rate_achieved"],
        s["kept_up"],
        s["process_cpu_share"],
        s["cpu_us_per_event"],
        s["cpu_us_per_consumer_event"],
        s["mean_batch_events"],
        load_span(s["load_avg_1m"]),
    ]


def _throughput(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    out = [
        "The product's own hot path (`StreamReader`, `JobQueue`, `Dispatcher`, the rules, wired by",
        "`watcher.group.pipeline.hot_path` as the service wires it), fed by a process that plays the server",
        "over a pipe: it keeps the jobs, applies the consumers' increments at the asked rate and",
        "sends each change event as BSON; the watcher reads whatever the pipe holds as one batch and",
        "decodes it as the driver would, and each write it sends comes back as an event. Half the",
        "increments go to jobs with many items (their events coalesce), half to jobs with one. CPU is",
        "the watcher's process time: one core at most.",
        "",
        *_table(
            [
                "window",
                "asked /s",
                "read /s",
                "kept up",
                "CPU share",
                "us per event",
                "us per consumer event",
                "events per batch",
                "load",
            ],
            [
                window_row(label, s)
                for label, s in [
                    *(("step", s) for s in f["steps"]),
                    *(("at the goal's rate", s) for s in f["at_goal"]),
                    ("busy jobs only", f["mixes"]["busy_only"]),
                    ("single-item jobs only", f["mixes"]["single_only"]),
                ]
            ],
        ),
        "",
        f"At {_n(f['goal']['events_per_s'])} events/s: **{_n(f['cpu_us_per_consumer_event_at_goal'])} us** of CPU "
        "per consumer event",
        f"(median of {f['windows_at_goal']} windows; {_n(f['cpu_us_per_event_at_goal'])} us per event delivered, "
        "the watcher's own",
        "writes' included, range "
        f"{_n(f['cpu_us_per_event_at_goal_range'][0])}-{_n(f['cpu_us_per_event_at_goal_range'][1])}): one core's "
        "worth is about",
        f"{_n(f['consumer_events_per_cpu_s'])} consumer events per second. Kept up in {f['kept_up_at_goal']} of "
        f"{f['windows_at_goal']} windows at that rate.",
        f"Rules on the seed job in the same run: {_n(f['rules_evals_per_s'])} evaluations per CPU second (the "
        "machine's speed of the moment).",
        f"Logs at {f.get('log_level', '?')} (no line per completed job).",
    ]
    profile = f.get("profile")
    if profile:
        out += [
            "",
            f"Where the time goes (cProfile of one window at {_n(profile['window']['rate_asked'])} events/s, own "
            "time, `bench/results/profile.txt`):",
            "",
            *_table(
                ["function", "share", "calls"],
                _profile_rows(profile["top_own_time"]),
            ),
        ]
    return out


def _latency(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    rows = []
    own_rows = []
    for key, point in f["points"].items():
        jw, poller, own = point["jobwatch"], point["poller_fixed"], point["jobwatch"]["own"]
        rows.append(
            [
                f"{key} % ({_n(point['rate_asked'])} asked)",
                f"{_n(jw['rate_achieved'])} / {_n(poller['rate_achieved'])}",
                f"{jw['completions']} / {poller['completions']}",
                f"{_n(jw['p50_ms'])} / {_n(jw['p95_ms'])} / {_n(jw['p99_ms'])} / {_n(jw['max_ms'])}",
                f"{_n(poller['p50_ms'], 0)} ({_n(poller['expected_p50_ms'], 0)}) / {_n(poller['p99_ms'], 0)}",
                poller["cycles"],
                f"x{_n(point['ratio_p50'], 0)}",
                f"{_n(jw['delivery_ms']['p50_ms'], 2)} / {_n(jw['delivery_ms']['p99_ms'], 2)}",
                load_span(point["load_avg_1m"]),
            ]
        )
        pair: Callable[[dict[str, Any]], str] = lambda d: f"{_n(d['p50_ms'], 2)} / {_n(d['p99_ms'], 2)}"  # noqa: E731
        own_rows.append(
            [
                f"{key} %",
                pair(own["event_lag"]),
                pair(own["event_lag_outside"]),
                pair(own["decision_job"]),
                pair(own["decision_outside"]),
                pair(own["reaction"]),
                pair(own["reaction_outside"]),
                " / ".join(_n(own[f"{k}_p50_disagreement"], 3) for k in ("event_lag", "decision", "reaction")),
            ]
        )
    return [
        "`jobwatch embedded-server`, `jobwatch run --uri` and the consumers (the CLI's simulator) in processes of",
        "their own, a change-stream reader in the benchmark's. First the server's capacity under this load in the",
        f"same run: **{_n(f['capacity_inc_per_s'])} `$inc`/s** (same consumers and reader, no keeper); then jobwatch",
        "and the seed's 5 s poller at shares of it. Latency: from the acknowledgement of a job's last `$inc` to the",
        "reader seeing it `Completed`; delivery: from that acknowledgement to the reader seeing the increment's",
        "event (the server's part, before the watcher has anything to do).",
        "",
        *_table(
            [
                "point",
                "$inc/s achieved (jobwatch / poller)",
                "completions",
                "jobwatch p50 / p95 / p99 / max ms",
                "poller p50 (expected) / p99 ms",
                "poller cycles",
                "poller / jobwatch p50",
                "delivery p50 / p99 ms",
                "load",
            ],
            rows,
        ),
        "",
        "The watcher's own histograms (scraped from its `/metrics` before it stopped, quantiles as Prometheus'",
        "`histogram_quantile` gives them) beside the same steps seen from outside: the event's lag",
        "(`jobwatch_event_lag_seconds`, its server time to being read; outside: to the benchmark's reader receiving",
        'it), deciding and writing (`jobwatch_decision_seconds{kind="job"}`, reading the job\'s newest event to its',
        "completing write acknowledged; outside: the benchmark's reader receiving the last increment's event to the",
        "server's time on the completing write), and both (`jobwatch_job_completion_latency_seconds`; outside: the",
        "server's time on the last increment to its time on the completing write). On the embedded server an event's",
        "`wallTime` is when its change history recorded it.",
        "",
        *_table(
            [
                "point",
                "lag p50 / p99 ms (its own)",
                "(outside)",
                "decision (its own)",
                "(outside)",
                "both (its own)",
                "(outside)",
                "p50 disagreement: lag / decision / both",
            ],
            own_rows,
        ),
        "",
        "Two goals here stay unmet, and why. The watcher's own share (`jobwatch_decision_seconds`, p99 <= 5 ms) holds",
        "the server's work on the completing write: the conditional update queues behind the consumers' writes on",
        "the embedded server, whose every write costs about a millisecond of its single core (see its ceiling",
        "below), so its p99 follows the server's load, not the watcher's CPU. The outside column measures the same",
        "step from another reader and ends at the server's write time rather than its acknowledgement. The p50",
        "disagreement compares two readers of one stream (the watcher's, behind its filtered pipeline, and the",
        "benchmark's) at one to three milliseconds, where a millisecond of `wallTime` resolution or of scheduling",
        "on two shared cores is already tens of percent; the absolute differences are in the table.",
        "",
        "![latency against the share of the server's capacity](latency.png)",
    ]


def _embedded(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    profile = f["profile"]
    return [
        "`jobwatch embedded-server` in a process of its own under the latency benchmark's load: consumers `$inc`ing",
        "job documents as fast as acknowledged, one change stream reading every change with `updateLookup`. The",
        "server's CPU is read from `/proc` over the window.",
        "",
        *_table(
            ["run", "$inc/s", "server CPU share", "server us per $inc", "$inc per server CPU second"],
            [
                [label, r["inc_per_s"], r["server_cpu_share"], r["server_cpu_us_per_inc"], r["inc_per_server_cpu_s"]]
                for label, r in [
                    *(("memory engine", r) for r in f["runs"]),
                    ("--data (SQLite, journal)", f["with_data_dir"]),
                    ("under cProfile", f["profiled_run"]),
                ]
            ],
        ),
        "",
        "Where the server's time goes (cProfile, `bench/results/embedded_profile.txt`); deep copies of documents",
        f"(`copy.deepcopy`, nearly all inside mongoeco) are {100 * profile['deep_copies']:.0f} % of all of it:",
        "",
        *_table(["part", "share"], [[label, f"{100 * share:.1f} %"] for label, share in profile["parts"].items()]),
        "",
        *_table(
            ["function (own time)", "share", "calls"],
            _profile_rows(profile["top_own_time"][:12]),
        ),
    ]


def _memory(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    return [
        "The product's hot path as in the throughput benchmark, fed as fast as it reads, 10,000 busy jobs at any",
        "moment plus as many single-item jobs, jobs completing and replaced all the time; RSS sampled ten times a",
        "second.",
        "",
        *_table(
            [
                "consumer events",
                "with own writes",
                "idle MB",
                "peak MB",
                "above idle",
                "growth after the first fifth MB",
                "slope MB per 1M events",
            ],
            [
                [
                    f.get("consumer_events", f.get("events")),
                    f.get("events"),
                    f["idle_mb"],
                    f["peak_mb"],
                    f["peak_above_idle_mb"],
                    f["growth_after_first_fifth_mb"],
                    f["slope_after_first_fifth_mb_per_million_events"],
                ]
            ],
        ),
    ]


def cost_row(case: str, keeper: str, c: dict[str, Any]) -> list[Any]:
    """One keeper in one case of the cost benchmark as a table row (here and on its console)."""
    return [
        f"{case} {keeper}",
        f"{c['completed']}/{c['jobs']}",
        c["rate_achieved"],
        c["writes_per_job"],
        c["writes_per_increment"],
        c["progress_writes_per_increment"],
        c["reads_per_job"],
    ]


def _cost(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    rows = []
    for name, case in f["cases"].items():
        for keeper in ("jobwatch", "poller_fixed"):
            rows.append(cost_row(name, keeper, case[keeper]))
    return [
        "Commands the keeper's own client sends (PyMongo command listener) per completed job and per increment.",
        "",
        *_table(
            [
                "case keeper",
                "completed",
                "$inc/s",
                "writes per job",
                "writes per increment",
                "progress writes per increment",
                "reads per job",
            ],
            rows,
        ),
    ]


def _sweep(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    rows = [
        [f"{r['total']:,} / {r['open']:,}", r["seconds"], r["docs_read"], r["indexed_seconds"], r["indexed_docs_read"]]
        for key, r in f.items()
        if key.startswith("total_")
    ]
    return [
        "The product's sweep (`Watcher.sweep(dry_run=True)`) over `total` jobs of which `open` are open, with the",
        "`(status, jobType)` index.",
        "",
        *_table(["total / open", "full sweep s", "documents read", "indexed pass s", "documents"], rows),
    ]


def _scale(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    cpus = f["cpus"]
    equal, same, saturated = f["equal_load"], f["same_total"], f["saturated"]
    load = f.get("load_avg_1m") or {}
    per = _n(f["per_instance_rate"])
    most = max(int(n) for n in saturated["by_instances"])
    can_show = ", ".join(map(str, f.get("saturated_can_show", []))) or "none"

    def lags(w: dict[str, Any]) -> str:
        return "; ".join(
            f"{p['partition']}: {_n(p['event_lag_ms']['p50_ms'], 2)} / {_n(p['event_lag_ms']['p99_ms'], 2)}"
            for row in w["per_instance"]
            for p in row["per_partition"]
        )

    def instances(w: dict[str, Any]) -> str:
        return "; ".join(
            f"{','.join(map(str, row['partitions']))}: {_n(row['cpu_share'], 2)}, "
            f"{_n(row['consumer_events_per_cpu_s'])}/CPU s"
            for row in w["per_instance"]
        )

    def span(row: dict[str, Any]) -> str:
        low, high = row["consumer_events_per_s_range"]
        return f"{_n(row['consumer_events_per_s'])} ({_n(low)}-{_n(high)})"

    return [
        f"`partitions={f['partitions']}` spread over 1, 2 and 4 instances as the group spreads them (a fair share",
        "each), each instance a process of its own running the product's hot path for each partition it holds, set",
        "up as `jobwatch run` sets up its process. One server process (`bench/paced.py`) plays the server: each",
        "consumer's change event goes to the partition its job's `_id` hashes to (MongoDB's `$toHashedIndexKey`, the",
        "partition's `$match`), each write's event back to the same. Windows go round robin over N, so the",
        "machine's load falls on every N alike.",
        "",
        f"**What {cpus} cores can and cannot show.** This machine has {cpus} cores, shared with other work (load",
        f"average {load.get('min')}-{load.get('max')} along the run), and the server process needs its share too.",
        "Scaling out shows on the wall clock only while every instance and the server have a core: here for N =",
        f"{can_show}; {most} instances and the server would need {most + 1}. As fast as the instances read, the",
        f"wall-clock aggregate is how {most + 1} processes share {cpus} cores, not how the watcher scales. What",
        'compares across N is each busy instance\'s events per second of its own CPU time: "a core each" divides',
        "each instance's by its share of the events and takes the lowest, the aggregate N instances would carry",
        "with a core each at the CPU per event they had (every input measured, that figure computed). The goal",
        "(at least 0.8 x N of one instance) is held against it; the wall-clock ratio is shown beside it.",
        "",
        "**The caveat.** An instance's CPU per event falls as its batches grow (more increments of a job coalesce",
        f"into one evaluation, per-batch costs spread: the plot's right panel), and on {cpus} shared cores the",
        "batch sizes follow the scheduling: as fast as read, one server process feeds every partition, and with",
        'more processes than cores each instance finds less waiting when its turn comes. So "a core each" moves',
        "from run to run with the machine's load (the range is over this run's windows), and the clean figure, a",
        "core for every instance and for the server side of each partition, needs a larger machine than this one.",
        "",
        "As fast as the instances read (the server waits for the slowest), medians over the windows:",
        "",
        *_table(
            [
                "instances",
                "read /s, wall clock (range)",
                "/ (N x one)",
                "CPU share: instances / server",
                "us per consumer event",
                "events per batch",
                "a core each /s (computed)",
                "/ (N x one)",
            ],
            [
                [
                    n,
                    span(row),
                    row.get("wall_clock_ratio"),
                    f"{_n(row['instances_cpu_share'], 2)} / {_n(row['server_cpu_share'], 2)}",
                    row["cpu_us_per_consumer_event"],
                    row["mean_batch_events"],
                    row["a_core_each_consumer_events_per_s"],
                    row.get("a_core_each_ratio"),
                ]
                for n, row in saturated["by_instances"].items()
            ],
        ),
        "",
        f"At the same total rate, {_n(f['total_rate'])} consumer events/s at every N (every partition's stream the",
        "same, only the number of processes changes): what N processes cost in CPU at a load one instance carries,",
        "where batches are a few events and each one wakes a process. A low load's cost, not a capacity:",
        "",
        *_table(
            [
                "instances",
                "read /s (range)",
                "kept up",
                "CPU share per instance",
                "server CPU share",
                "us per consumer event",
                "events per batch",
                "a core each /s (computed)",
                "/ (N x one)",
            ],
            [
                [
                    n,
                    span(row),
                    f"{row['kept_up']} of {row['windows']}",
                    row["instance_cpu_share"],
                    row["server_cpu_share"],
                    row["cpu_us_per_consumer_event"],
                    row["mean_batch_events"],
                    row["a_core_each_consumer_events_per_s"],
                    row.get("a_core_each_ratio"),
                ]
                for n, row in same["by_instances"].items()
            ],
        ),
        "",
        f"At the same load per instance, {per} consumer events/s each (N times that in all): whether N instances",
        "keep up with N times the load on this machine, each one's CPU share and CPU per event, and each partition's",
        "event lag. Each partition's rate grows with N here, so its batches grow and its CPU per event falls: these",
        "windows do not measure what an instance can carry.",
        "",
        *_table(
            [
                "instances",
                "asked /s",
                "read /s (range)",
                "kept up",
                "CPU share per instance",
                "server CPU share",
                "us per consumer event",
                "events per batch",
            ],
            [
                [
                    n,
                    row["rate_asked"],
                    span(row),
                    f"{row['kept_up']} of {row['windows']}",
                    row["instance_cpu_share"],
                    row["server_cpu_share"],
                    row["cpu_us_per_consumer_event"],
                    row["mean_batch_events"],
                ]
                for n, row in equal["by_instances"].items()
            ],
        ),
        "",
        "Each window at the same load per instance: per instance, its partitions, its CPU share and its consumer",
        "events per CPU second; per partition, its event lag p50 / p99 ms (the product's histogram: the event's",
        "server time to the watcher reading it):",
        "",
        *_table(
            ["instances", "read /s", "server CPU share", "per instance", "partition: lag p50 / p99 ms", "load"],
            [
                [
                    w["instances"],
                    w["consumer_events_per_s"],
                    w["server_cpu_share"],
                    instances(w),
                    lags(w),
                    load_span(w["load_avg_1m"]),
                ]
                for w in equal["windows"]
            ],
        ),
        "",
        "Each window as fast as read:",
        "",
        *_table(
            ["instances", "read /s", "CPU share: instances / server", "per instance", "events per batch", "load"],
            [
                [
                    w["instances"],
                    w["consumer_events_per_s"],
                    f"{_n(w['instances_cpu_share'], 2)} / {_n(w['server_cpu_share'], 2)}",
                    instances(w),
                    ", ".join(_n(row["mean_batch_events"]) for row in w["per_instance"]),
                    load_span(w["load_avg_1m"]),
                ]
                for w in saturated["windows"]
            ],
        ),
        "",
        "![events/s against instances](scale.png)",
    ]


def _goals(docs: dict[str, dict[str, Any] | None]) -> list[str]:
    rows: list[list[str]] = []

    def add(
        goal: str,
        name: str,
        measured: Callable[[dict[str, Any]], str],
        met: Callable[[dict[str, Any]], bool | None],
        verdict: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        doc = docs.get(name)
        if doc is None:
            rows.append([goal, "not measured", "-", "-"])
            return
        said = verdict(doc["figures"]) if verdict is not None else _met(met(doc["figures"]))
        rows.append([goal, measured(doc["figures"]), said, f"`{doc['_file']}`"])

    add(
        "one watcher keeps up with 25,000 events/s on one core, about 40 us per event (database removed)",
        "throughput",
        lambda f: (
            f"{_n(f['cpu_us_per_consumer_event_at_goal'])} us per consumer event; kept up in "
            f"{f['kept_up_at_goal']} of {f['windows_at_goal']} windows, the process using "
            f"{_n(min(s['process_cpu_share'] for s in f['at_goal']), 2)}-"
            f"{_n(max(s['process_cpu_share'] for s in f['at_goal']), 2)} of a core"
        ),
        lambda f: f["goal_met"],
    )
    for key, goal in (
        ("p50_ms", "latency at 50 % of capacity: p50 <= 10 ms"),
        ("p99_ms", "p99 <= 50 ms"),
        ("watcher_p99_ms", "the watcher's own share p99 <= 5 ms"),
        ("ratio_p50", "poller p50 / jobwatch p50 >= 250"),
        ("own_p50_within_10_percent", "its own histograms agree with the outside within 10 % at p50"),
    ):
        add(goal, "latency", functools.partial(_latency_goal_value, key), functools.partial(_latency_goal_met, key))
    add(
        "the embedded server: 2,000 `$inc`/s on one core",
        "embedded",
        lambda f: f"{_n(f['inc_per_server_cpu_s'])} `$inc` per server CPU second",
        lambda f: f["goal_met"],
    )
    add(
        "rules >= 50,000 evaluations per CPU second",
        "throughput",
        lambda f: _n(f["rules_evals_per_s"]),
        lambda f: f["rules_evals_per_s"] >= 50_000,
    )
    add(
        "memory flat",
        "memory",
        lambda f: f"{_n(f['growth_after_first_fifth_mb'], 2)} MB after the first fifth",
        lambda f: abs(f["growth_after_first_fifth_mb"]) <= 5,
    )
    add(
        "progress writes < 10 % of increments",
        "cost",
        lambda f: "; ".join(
            f"{n}: {_n(c['jobwatch']['progress_writes_per_increment'], 3)}" for n, c in f["cases"].items()
        ),
        lambda f: f["progress_goal_met"],
    )
    add(
        "the sweep follows the open jobs, not the total",
        "sweep",
        lambda f: ", ".join(
            f"{r['docs_read']} documents at {r['total']:,}"
            for k, r in f.items()
            if k.startswith("total_") and r["open"] == 100
        ),
        lambda f: len({r["docs_read"] for k, r in f.items() if k.startswith("total_") and r["open"] == 100}) == 1,
    )

    def scale_measured(f: dict[str, Any]) -> str:
        def ratios(kind: str, key: str) -> str:
            rows = [(n, row) for n, row in f[kind]["by_instances"].items() if n != "1"]
            return ", ".join(f"{n}: x{_n(row[key], 2)}" for n, row in rows)

        return (
            f"a core each (busy instances' CPU time) {ratios('saturated', 'a_core_each_ratio')}; wall clock as fast "
            f"as read on {f['cpus']} shared cores {ratios('saturated', 'wall_clock_ratio')}; at a low load "
            f"({_n(f['total_rate'])}/s in all) N processes carry {ratios('same_total', 'a_core_each_ratio')} of N x "
            "one per CPU second"
        )

    def scale_verdict(f: dict[str, Any]) -> str:
        most = max(int(n) for n in f["saturated"]["by_instances"])
        return (
            f"{_met(f['goal_met'])} a core each (see the caveat below); {_met(f['wall_clock_goal_met'])} "
            f"on the wall clock ({f['cpus']} cores: {most} instances and the server need {most + 1})"
        )

    add(
        "scale-out: 1, 2, 4 instances with 4 partitions, >= 0.8 x N of one",
        "scale",
        scale_measured,
        lambda f: f["goal_met"],
        scale_verdict,
    )
    return _table(["goal", "measured", "", "from"], rows)


SECTIONS: tuple[tuple[str, str, Callable[[dict[str, Any]], list[str]]], ...] = (
    ("throughput", "Throughput: the watcher alone, database removed", _throughput),
    ("latency", "Latency against the server's capacity", _latency),
    ("embedded", "The embedded server's ceiling", _embedded),
    ("memory", "Memory", _memory),
    ("cost", "Database cost", _cost),
    ("sweep", "Sweep", _sweep),
    ("scale", "Scale-out: several instances, database removed", _scale),
)


def render() -> str:
    docs = {name: _load(name) for name, _, _ in SECTIONS}
    lines = [
        "# Benchmarks",
        "",
        "<!-- Written by bench/report.py from bench/results/*.json: `./dev bench report` rewrites it. -->",
        "",
        "Each benchmark writes `bench/results/<name>.json` (`<name>_full.json` with `--full`: the issue's sizes)",
        "with its parameters, the machine, the commit, the load average along the run and its figures; this page",
        "is written from those files, the newer of the two for each. On these build machines (2 cores shared with",
        "other work) wall-clock figures move with the load: the CPU-time figures are the steadier ones.",
        "",
        "```",
        "./dev bench                     # every benchmark at its default size, then this page",
        "./dev bench run_all --full      # the issue's sizes",
        "./dev bench throughput --rates 20000,25000 --window-s 10   # one benchmark, other sizes",
        "./dev bench report              # this page, from the results files",
        "MONGODB_URI='mongodb://host:27017/?replicaSet=rs0' ./dev bench latency   # against a real replica set",
        "```",
        "",
        "With `MONGODB_URI` (or a `mongod` on PATH) the benchmarks use that server, as the test suite does.",
        "",
        "## Goals",
        "",
        *_goals(docs),
    ]
    for name, title, section in SECTIONS:
        lines += ["", f"## {title}", ""]
        doc = docs.get(name)
        if doc is None:
            lines.append(f"Not measured yet (`./dev bench {name}`).")
            continue
        lines += section(doc)
        lines += ["", f"Measured: {_source(doc)}."]
    lines.append("")
    return "\n".join(lines)


def write() -> None:
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(render())
    for name in PLOTS:
        path = results_path(name)
        if path is not None and path.with_suffix(".png").exists():
            shutil.copyfile(path.with_suffix(".png"), PAGE.parent / f"{name}.png")


def main() -> int:
    write()
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
