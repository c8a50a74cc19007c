"""Scale-out: 1, 2 and 4 watcher instances sharing ``partitions=4``, the database removed.

    ./dev bench scale            # 6 s windows (about 4 minutes)
    ./dev bench scale --full     # 30 s windows, more of them (about 15 minutes)

The server process of ``bench/paced.py`` plays the server for four
partitions: each consumer's change event goes into the pipe of the
partition its job's ``_id`` hashes to (MongoDB's ``$toHashedIndexKey``, the
partition's ``$match``), and each watcher write's event back into the same
one. Each instance is a process of its own running the product's hot path
(``paced.watch``: ``StreamReader``, ``JobQueue``, ``Dispatcher``, its process
set up as ``jobwatch run`` sets up its own) for each partition it holds, in
one event loop, as the service runs the partitions whose leases it holds.
The partitions are spread as the group spreads them, a fair share each
(``watcher.group.share``): 1 instance holds 0-3, 2 hold 0-1 and 2-3, 4 hold
one each. The instances start, say they are ready, and only then does the
server start making events.

1. ``equal_load``: N instances at N times the same rate (``--per-instance-rate``
   consumer events/s each): the aggregate they read on this machine's
   clock, whether they kept up (read >= 95 % of due), each instance's CPU
   share (its process time over the window) and CPU per event, and each
   partition's lag from its own ``jobwatch_event_lag_seconds`` (the event's
   server time to the watcher reading it). Each partition's rate grows with
   N here (N x rate / 4), so its batches grow and its CPU per event falls:
   these windows show that N instances carry N times the load and what
   that does to the lag, not what one instance can carry.
2. ``same_total``: N instances at the same total rate (``--total-rate``):
   every partition's stream is the same at every N and what N changes is
   how many processes share the work: what N processes cost in CPU, at a
   load small enough for one instance, where batches are a few events and
   each one wakes a process.
3. ``saturated``: the server makes events as fast as the instances read them
   (it waits for the slowest): every instance as busy as the machine lets
   it be. Each instance's consumer events per second of its own CPU time,
   divided by its share of the events, is the aggregate the group would
   carry with a core per instance; the lowest over the instances is
   ``a_core_each`` (every input measured, that figure computed), and
   ``a_core_each_ratio`` at N over N x one instance's is the figure the goal
   (>= 0.8) is held against. The wall-clock aggregate is kept beside it:
   the most this machine carried, which scales only while every instance
   and the server have a core (``saturated_can_show``).

An instance's CPU per event falls as its batches grow (more increments of
a job coalesce into one evaluation, per-batch costs spread), and with fewer
cores than processes the batch sizes follow the scheduling: the plot's
right panel shows the CPU per event against the batch size, every instance
of every window. ``a_core_each`` is computed for the same-total and
equal-load windows too (``a_core_each_consumer_events_per_s``); there it
is a low load's cost, not a capacity.

Each kind's windows go round robin (1, 2, 4, 1, 2, 4, ...) so a change of the
machine's load falls on every N alike; the server's CPU share is read from
``/proc``. With fewer cores than instances plus the server, the saturated
wall-clock aggregate says how they share the machine, not how they scale.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, load, paced  # noqa: E402

PARTITIONS = 4
INSTANCES = (1, 2, 4)
GOAL_RATIO = 0.8
#: Consumer events/s per instance in the equal-load windows: 4 instances and the server fit in 2 cores at 4 x this.
PER_INSTANCE_RATE = 5_000
#: Consumer events/s in all in the same-total windows: one instance carries it on a busy shared core.
TOTAL_RATE = 10_000
#: An instance not ready within this long has failed (imports on a busy machine take a few seconds).
READY_TIMEOUT_S = 60.0


def spread(instances: int, partitions: int = PARTITIONS) -> list[list[int]]:
    """The partitions each instance holds: a fair share each, in order (as
    the group ends up spreading them once every instance has joined)."""
    from watcher.group.share import fair_share

    share = fair_share(partitions, instances)
    return [list(range(i * share, min((i + 1) * share, partitions))) for i in range(instances)]


# -- one instance (a process of its own) ------------------------------------


def instance(spec: dict[str, Any]) -> None:
    """Build the hot paths of the partitions held, say ``ready``, wait for
    ``go START WINDOW_S``, run them and print the window's figures (JSON)."""
    import anyio

    from watcher.ops import logs, runtime
    from watcher.settings import Settings

    runtime.tune()
    logs.setup(level="WARNING")  # as throughput runs it: no line per completed job
    settings = Settings(health_port=0, partitions=spec["partitions"])
    fds = {int(k): (events, requests) for k, (events, requests) in spec["fds"].items()}
    held = paced.lanes(settings, spec["partitions"], fds)
    print("ready", flush=True)
    word, start, window_s = sys.stdin.readline().split()
    assert word == "go"
    result = anyio.run(lambda: paced.watch(held, float(start), float(window_s)))
    print(json.dumps(result), flush=True)


# -- the benchmark -----------------------------------------------------------


def window(instances: int, rate: float, window_s: float) -> dict[str, Any]:
    """One window of ``instances`` instances (``rate``: consumer events/s, 0 as fast as read)."""
    pipes = paced.Pipes.make(PARTITIONS)
    holds = spread(instances)
    procs: list[subprocess.Popen[str]] = []
    server: subprocess.Popen[bytes] | None = None
    try:
        for held in holds:
            fds = {k: pipes.watcher_fds(k) for k in held}
            spec = {"partitions": PARTITIONS, "fds": fds}
            procs.append(
                subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), "--instance", json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    pass_fds=[fd for k in held for fd in fds[k]],
                )
            )
        pipes.close(fd for k in range(PARTITIONS) for fd in pipes.watcher_fds(k))
        _wait_ready(procs)
        start = time.monotonic() + 0.5
        from watcher.settings import Settings

        server = paced.start_server(pipes, rate, start, paced.keep(Settings(partitions=PARTITIONS)))
        pipes.close()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"go {start} {window_s}\n")
            proc.stdin.flush()
        watch = load.LoadWatch()
        time.sleep(max(start - time.monotonic(), 0))
        server_cpu0, started = common.cpu_s(server.pid), time.monotonic()
        time.sleep(max(start + window_s - time.monotonic(), 0))
        server_cpu = common.cpu_s(server.pid) - server_cpu0
        server_s = time.monotonic() - started
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=window_s + 60)
            if proc.returncode != 0:
                raise RuntimeError(f"an instance failed (exit {proc.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
        load_avg = watch.summary()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if server is not None:
            server.kill()
            server.wait()
        pipes.close()
    return summarize(instances, rate, holds, results, server_cpu / server_s if server_s else None, load_avg)


def _wait_ready(procs: Sequence[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    for proc in procs:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        if not ready or proc.stdout.readline().strip() != "ready":
            raise RuntimeError("an instance did not start")


def summarize(
    instances: int,
    rate: float,
    holds: list[list[int]],
    results: list[dict[str, Any]],
    server_cpu_share: float | None,
    load_avg: dict[str, Any],
) -> dict[str, Any]:
    elapsed = max(r["window_s"] for r in results)
    consumer_events = sum(r["events_read"] for r in results)
    rows = []
    for held, r in zip(holds, results, strict=True):
        share = r["events_read"] / consumer_events if consumer_events else None
        rows.append(
            {
                "partitions": held,
                "consumer_events": r["events_read"],
                "events_with_own_writes": r["events_with_own_writes"],
                "share_of_events": None if share is None else round(share, 4),
                "cpu_s": r["process_cpu_s"],
                "cpu_share": r["process_cpu_share"],
                "cpu_us_per_event": r["cpu_us_per_event"],
                "cpu_us_per_consumer_event": r["cpu_us_per_consumer_event"],
                "consumer_events_per_cpu_s": r["consumer_events_per_cpu_s"],
                "mean_batch_events": r["mean_batch_events"],
                "per_partition": r["partitions"],
            }
        )
    carried = [
        row["consumer_events_per_cpu_s"] / row["share_of_events"]
        for row in rows
        if row["consumer_events_per_cpu_s"] and row["share_of_events"]
    ]
    due = rate * elapsed if rate else consumer_events
    return {
        "instances": instances,
        "rate_asked": rate,
        "window_s": round(elapsed, 2),
        "consumer_events": consumer_events,
        "events_with_own_writes": sum(r["events_with_own_writes"] for r in results),
        "consumer_events_per_s": round(consumer_events / elapsed, 1) if elapsed else 0.0,
        "kept_up": consumer_events >= paced.KEEP_UP_RATIO * due if rate else None,
        "a_core_each_consumer_events_per_s": round(min(carried)) if len(carried) == len(rows) else None,
        "instances_cpu_share": round(sum(row["cpu_share"] or 0 for row in rows), 3),
        "server_cpu_share": None if server_cpu_share is None else round(server_cpu_share, 3),
        "per_instance": rows,
        "load_avg_1m": load_avg,
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


def by_instances(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per N: the medians over its windows, and the ratios to N x one instance."""
    out: dict[str, Any] = {}
    for n in sorted({w["instances"] for w in windows}):
        mine = [w for w in windows if w["instances"] == n]
        instances = [row for w in mine for row in w["per_instance"]]
        out[str(n)] = {
            "windows": len(mine),
            "rate_asked": mine[0]["rate_asked"],
            "kept_up": sum(bool(w["kept_up"]) for w in mine),
            "consumer_events_per_s": _median([w["consumer_events_per_s"] for w in mine]),
            "consumer_events_per_s_range": [
                min(w["consumer_events_per_s"] for w in mine),
                max(w["consumer_events_per_s"] for w in mine),
            ],
            "instance_cpu_share": _median([row["cpu_share"] for row in instances]),
            "instances_cpu_share": _median([w["instances_cpu_share"] for w in mine]),
            "server_cpu_share": _median([w["server_cpu_share"] for w in mine]),
            "cpu_us_per_consumer_event": _median([row["cpu_us_per_consumer_event"] for row in instances]),
            "mean_batch_events": _median([row["mean_batch_events"] for row in instances]),
            "a_core_each_consumer_events_per_s": _median([w["a_core_each_consumer_events_per_s"] for w in mine]),
        }
    one = out.get("1")
    for n, row in out.items():
        if one is None:
            break
        row["wall_clock_ratio"] = _ratio(row["consumer_events_per_s"], int(n) * (one["consumer_events_per_s"] or 0))
        row["a_core_each_ratio"] = _ratio(
            row["a_core_each_consumer_events_per_s"], int(n) * (one["a_core_each_consumer_events_per_s"] or 0)
        )
    return out


def _ratio(value: float | None, of: float) -> float | None:
    return None if value is None or not of else round(value / of, 3)


def lag_by_partition(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per N, per partition: its event lag (p50/p99 ms, the product's histogram) in each window."""
    out: dict[str, Any] = {}
    for w in windows:
        row = out.setdefault(str(w["instances"]), {})
        for i, inst in enumerate(w["per_instance"]):
            for p in inst["per_partition"]:
                lag = p["event_lag_ms"]
                row.setdefault(str(p["partition"]), []).append(
                    {"instance": i, "p50_ms": lag["p50_ms"], "p99_ms": lag["p99_ms"], "events": lag["count"]}
                )
    return out


def plot(figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, cost) = plt.subplots(1, 2, figsize=(12, 4.4), width_ratios=(3, 2))
    for key, label, marker in (
        ("equal_load", "equal load: read, all instances (wall clock)", "o"),
        ("saturated", "as fast as read: all instances (wall clock)", "^"),
    ):
        rows = figures[key]["by_instances"]
        ns = [int(n) for n in rows]
        mid = [rows[str(n)]["consumer_events_per_s"] for n in ns]
        low = [mid[i] - rows[str(n)]["consumer_events_per_s_range"][0] for i, n in enumerate(ns)]
        high = [rows[str(n)]["consumer_events_per_s_range"][1] - mid[i] for i, n in enumerate(ns)]
        ax.errorbar(ns, mid, yerr=[low, high], marker=marker, capsize=4, label=label)
    rows = figures["saturated"]["by_instances"]
    ns = [int(n) for n in rows]
    core = [rows[str(n)]["a_core_each_consumer_events_per_s"] for n in ns]
    if all(c is not None for c in core):
        ax.plot(ns, core, marker="s", linestyle="--", label="a core each: from each busy instance's CPU time")
        one = core[0] if ns[0] == 1 else None
        if one:
            ax.plot(
                ns,
                [GOAL_RATIO * n * one for n in ns],
                color="grey",
                linewidth=0.8,
                linestyle=":",
                label="0.8 x N x one instance (a core each)",
            )
    ax.set_xticks(ns)
    ax.set_xlabel(f"instances (partitions={figures['partitions']}, spread evenly)")
    ax.set_ylabel("consumer events per second")
    ax.set_title(f"Scale-out, database removed ({figures['cpus']} cores, shared)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    # What the CPU per event follows: each instance's batches, whatever N (every window, every instance).
    kinds = ("equal_load", "same_total", "saturated")
    for n in sorted({w["instances"] for key in kinds for w in figures[key]["windows"]}):
        rows = [
            row
            for key in kinds
            for w in figures[key]["windows"]
            if w["instances"] == n
            for row in w["per_instance"]
            if row["mean_batch_events"] and row["cpu_us_per_consumer_event"]
        ]
        cost.scatter(
            [row["mean_batch_events"] for row in rows],
            [row["cpu_us_per_consumer_event"] for row in rows],
            s=14,
            label=f"{n} instance(s)",
        )
    cost.set_xscale("log")
    cost.set_xlabel("events per batch (each instance, each window)")
    cost.set_ylabel("CPU us per consumer event")
    cost.set_title("CPU per event against batch size")
    cost.grid(alpha=0.3)
    cost.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--instance":
        instance(json.loads(sys.argv[2]))
        return 0
    p = common.parser(__doc__)
    p.add_argument("--instances", default=",".join(map(str, INSTANCES)), help="instance counts (default 1,2,4)")
    p.add_argument("--window-s", type=float, help="seconds per window (default 6; --full 30)")
    p.add_argument(
        "--per-instance-rate",
        type=float,
        default=PER_INSTANCE_RATE,
        help=f"equal-load windows: consumer events/s per instance (default {PER_INSTANCE_RATE:,})",
    )
    p.add_argument(
        "--total-rate",
        type=float,
        default=TOTAL_RATE,
        help=f"same-total windows: consumer events/s in all (default {TOTAL_RATE:,})",
    )
    p.add_argument("--rounds", type=int, help="equal-load windows per instance count (default 2; --full 3)")
    p.add_argument(
        "--saturated-rounds", type=int, help="as-fast-as-read windows per instance count (default 3; --full 4)"
    )
    args = p.parse_args()
    counts = [int(n) for n in args.instances.split(",")]
    window_s = args.window_s or (30.0 if args.full else 6.0)
    rounds = args.rounds or (3 if args.full else 2)
    saturated_rounds = args.saturated_rounds or (4 if args.full else 3)
    watch = load.LoadWatch()
    equal, same, saturated = [], [], []
    for _ in range(rounds):
        for n in counts:
            equal.append(window(n, n * args.per_instance_rate, window_s))
            w = equal[-1]
            lags = [p["event_lag_ms"] for row in w["per_instance"] for p in row["per_partition"]]
            print(
                f"  {n} instance(s) at {w['rate_asked']:,.0f}/s: {w['consumer_events_per_s']:,.0f}/s read, kept up "
                f"{w['kept_up']}; CPU share per instance "
                + ", ".join(str(row["cpu_share"]) for row in w["per_instance"])
                + "; lag p99 by partition "
                + ", ".join(f"{lag['p99_ms']} ms" for lag in lags)
                + f"; load {w['load_avg_1m']['max']}",
                flush=True,
            )
    for _ in range(rounds):
        for n in counts:
            same.append(window(n, args.total_rate, window_s))
            w = same[-1]
            print(
                f"  {n} instance(s) at {w['rate_asked']:,.0f}/s in all: {w['consumer_events_per_s']:,.0f}/s read, kept "
                f"up {w['kept_up']}; CPU share per instance "
                + ", ".join(str(r["cpu_share"]) for r in w["per_instance"])
                + f"; a core each {w['a_core_each_consumer_events_per_s']}/s; load {w['load_avg_1m']['max']}",
                flush=True,
            )
    for _ in range(saturated_rounds):
        for n in counts:
            saturated.append(window(n, 0, window_s))
            w = saturated[-1]
            print(
                f"  {n} instance(s) as fast as read: {w['consumer_events_per_s']:>9,.0f}/s; CPU share: instances "
                f"{w['instances_cpu_share']}, server {w['server_cpu_share']}; load {w['load_avg_1m']['max']}",
                flush=True,
            )
    equal_by_n, same_by_n, saturated_by_n = by_instances(equal), by_instances(same), by_instances(saturated)
    cpus = os.cpu_count() or 1
    more = [row for n, row in saturated_by_n.items() if n != "1"]
    figures: dict[str, Any] = {
        "partitions": PARTITIONS,
        "cpus": cpus,
        "goal_ratio": GOAL_RATIO,
        "per_instance_rate": args.per_instance_rate,
        "equal_load": {
            "by_instances": equal_by_n,
            "lag_by_partition": lag_by_partition(equal),
            "windows": equal,
        },
        "total_rate": args.total_rate,
        "same_total": {"by_instances": same_by_n, "windows": same},
        "saturated": {"by_instances": saturated_by_n, "windows": saturated},
        # Held against busy instances' CPU per event, a core each (each instance's events per CPU second over
        # its share of the events): >= 0.8 x N x one instance's.
        "goal_met": bool(more) and all((row["a_core_each_ratio"] or 0) >= GOAL_RATIO for row in more),
        "goal_basis": "saturated a_core_each_ratio",
        # The wall clock as fast as read: met only where every instance and the server had a core.
        "wall_clock_goal_met": bool(more) and all((row["wall_clock_ratio"] or 0) >= GOAL_RATIO for row in more),
        # N instances at N times the rate per instance: every window kept up.
        "equal_load_kept_up": all(row["kept_up"] == row["windows"] for row in equal_by_n.values()),
        # N instances and the server each with a core: what the saturated wall clock could show here.
        "saturated_can_show": [n for n in counts if n + 1 <= cpus],
        "definitions": {
            "consumer_events_per_s": (
                "consumer events read by all instances per second of the window, on this machine's clock (median over "
                "the windows)"
            ),
            "wall_clock_ratio": "consumer_events_per_s at N over N x its value at one instance",
            "a_core_each_consumer_events_per_s": (
                "the lowest, over the instances, of (its consumer events per second of its own CPU time) / (its share "
                "of the consumer events): what N instances would carry with a core each at the CPU per event they "
                "had; computed from measured figures, not itself measured. Held against the goal in the saturated "
                "windows (every instance busy); in the equal-load and same-total ones it is a low load's cost "
                "(batches of a few events), not a capacity"
            ),
            "a_core_each_ratio": "a_core_each_consumer_events_per_s at N over N x its value at one instance",
        },
    }
    figures["load_avg_1m"] = watch.summary()
    for title, rows in (
        ("equal load per instance", equal_by_n),
        ("same total", same_by_n),
        ("as fast as read", saturated_by_n),
    ):
        common.table(
            [
                "instances",
                "asked/s",
                "read/s",
                "/ (N x one)",
                "kept up",
                "CPU per instance",
                "server CPU",
                "us per consumer event",
                "batch",
                "a core each",
                "/ (N x one)",
            ],
            [
                [
                    n,
                    row["rate_asked"],
                    row["consumer_events_per_s"],
                    row.get("wall_clock_ratio"),
                    f"{row['kept_up']}/{row['windows']}",
                    row["instance_cpu_share"],
                    row["server_cpu_share"],
                    row["cpu_us_per_consumer_event"],
                    row["mean_batch_events"],
                    row["a_core_each_consumer_events_per_s"],
                    row.get("a_core_each_ratio"),
                ]
                for n, row in rows.items()
            ],
            title=f"scale-out, partitions={PARTITIONS}, {title} ({window_s:g} s windows, {cpus} cores)",
        )
    print(
        f"goal (>= {GOAL_RATIO} x N of one): a core each (busy instances' CPU time) "
        + ", ".join(f"{n}: x{row.get('a_core_each_ratio')}" for n, row in saturated_by_n.items())
        + f": {'met' if figures['goal_met'] else 'not met'}; wall clock as fast as read "
        + ", ".join(f"{n}: x{row.get('wall_clock_ratio')}" for n, row in saturated_by_n.items())
        + f" ({cpus} cores: it can show N in {figures['saturated_can_show']})"
    )
    path = common.save(
        common.result_name("scale", args),
        parameters={
            "instances": counts,
            "partitions": PARTITIONS,
            "window_s": window_s,
            "per_instance_rate": args.per_instance_rate,
            "total_rate": args.total_rate,
            "rounds": rounds,
            "saturated_rounds": saturated_rounds,
            "busy_jobs": paced.BUSY_JOBS,
            "items": paced.ITEMS,
            "single_share": paced.SINGLE_SHARE,
            "full": args.full,
        },
        figures=figures,
        backend_info=common.backend("database removed", "none"),
        save_file=not args.no_save,
    )
    if path is not None:
        plot(figures, path.with_suffix(".png"))
        print(f"wrote {path.relative_to(common.ROOT)} and its plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
