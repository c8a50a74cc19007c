"""Memory: resident set size while change events across 10,000 jobs pass through the hot path, database removed.

    ./dev bench memory           # 200,000 events
    ./dev bench memory --full    # 1,000,000 events (the issue's size)

Events are made one at a time as the driver would decode them (nothing is
kept by the generator but one counter and one ``_id`` per job slot) and go
through decode, path A's counter watch, ``JobQueue``, the rules, the
progress budget and update building (``bench/replay.py``); every update built
comes back as a change event, as the watcher's own writes do (so a completed
job is last seen ``Completed``). 10,000 jobs are busy at any moment, each
receiving 2 events per simulated second (above the 1/s progress interval, so
rate-limited jobs wait in the queue's deferral heap, as in the service). A
job completes after ``2 * items`` events and its slot goes to a new job (a
new ``_id``): with the default 10 items, a million events complete 50,000
jobs, so anything keyed by job that is never forgotten shows as growth.
``events`` counts every change event the watcher saw (the consumers' and
its own writes'); ``--events`` and the samples count the consumers'.

``idle_mb`` is the RSS before the first event (everything imported, nothing
fed; the generator's own state, 10,000 ids and counters, well under a
megabyte, is counted in the peak, against the watcher). ``peak_mb`` is the highest RSS sampled every
10,000 events; the kernel's high-water mark is kept beside it, and counted in
the peak when it rose during the run (a spike between two samples). "Flat"
is shown by the samples themselves (``samples``: events, MB) and two
figures from them: the RSS at the end minus the RSS after the first fifth of
the events, and the least-squares slope over the last four fifths in MB per
million events.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, load, replay  # noqa: E402

JOBS = 10_000
SAMPLE_EVERY = 10_000
#: Events per job per simulated second: above the 1/s progress interval, so
#: rate-limited jobs wait in the queue (the deferral heap is part of what is
#: held), as with ``throughput``'s busy jobs.
EVENTS_PER_JOB_S = 2.0
#: Items per stage: a job completes after 2 x ITEMS events, so jobs turn over
#: many times within the run.
ITEMS = 10


def slope_mb_per_million(samples: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of RSS against events, in MB per million events."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_x = sum(x for x, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    var_x = sum((x - mean_x) ** 2 for x, _ in samples)
    if not var_x:
        return None
    cov = sum((x - mean_x) * (y - mean_y) for x, y in samples)
    return cov / var_x * 1e6


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--events", type=int, help="events (default 200,000; --full 1,000,000)")
    p.add_argument("--jobs", type=int, default=JOBS, help=f"busy jobs at any moment (default {JOBS:,})")
    p.add_argument("--items", type=int, default=ITEMS, help=f"items per stage: a job completes after 2 x items events (default {ITEMS})")
    args = p.parse_args()
    count = args.events or (1_000_000 if args.full else 200_000)
    watch = load.LoadWatch()
    source = replay.events(args.jobs, count, items=args.items)
    gc.collect()
    idle_mb = common.rss_mb()
    high_water_idle_mb = common.peak_rss_mb()
    samples: list[tuple[int, float]] = [(0, round(idle_mb, 2))]
    progress = common.Progress("memory: events", count)

    def sample(n: int) -> None:
        progress.update(n)
        if n % SAMPLE_EVERY == 0:
            samples.append((n, round(common.rss_mb(), 2)))
            if n % (SAMPLE_EVERY * 10) == 0:
                watch.sample()

    tally = replay.run(source, events_per_s=args.jobs * EVENTS_PER_JOB_S, on_event=sample)
    progress.close()
    end_mb = common.rss_mb()
    high_water_mb = common.peak_rss_mb()
    sampled_peak_mb = max(max(mb for _, mb in samples), end_mb)
    # The kernel's mark counts only if it moved during the run (before, it may be the imports).
    peak_mb = max(sampled_peak_mb, high_water_mb) if high_water_mb > high_water_idle_mb else sampled_peak_mb
    early_n, early_mb = next(((n, mb) for n, mb in samples if n >= count // 5), samples[-1])
    slope = slope_mb_per_million([s for s in samples if s[0] >= early_n])
    figures: dict[str, Any] = {
        "idle_mb": round(idle_mb, 2),
        "peak_mb": round(peak_mb, 2),
        "events": tally.events,
        "consumer_events": tally.events - tally.echo_events,
        "echo_events": tally.echo_events,
        "peak_above_idle_mb": round(peak_mb - idle_mb, 2),
        "end_mb": round(end_mb, 2),
        "kernel_high_water_mb": round(high_water_mb, 2),
        "kernel_high_water_at_idle_mb": round(high_water_idle_mb, 2),
        "growth_after_first_fifth_mb": round(end_mb - early_mb, 2),
        "slope_after_first_fifth_mb_per_million_events": None if slope is None else round(slope, 3),
        "busy_jobs": args.jobs,
        "jobs_completed": tally.jobs_completed,
        "evaluations": tally.evaluations,
        "deferred": tally.deferred,
        "max_pending_jobs": tally.max_pending_jobs,
        # The generator's CPU is counted too (events are made on the fly): see throughput for the hot path alone.
        "cpu_us_per_event_with_generation": round(tally.cpu_us_per_event, 1),
        "load_avg_1m": watch.summary(),
        "samples": samples,  # (consumer events so far, RSS MB)
    }
    common.table(
        ["events", "busy jobs", "jobs completed", "idle MB", "peak MB", "above idle", "growth after 1/5", "MB per 1M events"],
        [[tally.events, args.jobs, tally.jobs_completed, figures["idle_mb"], figures["peak_mb"], figures["peak_above_idle_mb"], figures["growth_after_first_fifth_mb"], figures["slope_after_first_fifth_mb_per_million_events"]]],
        title="memory, database removed (decode, JobQueue, rules, budget, update building)",
    )
    common.save(
        common.result_name("memory", args),
        parameters={"events": count, "busy_jobs": args.jobs, "items_per_stage": args.items, "stages": len(replay.STAGES), "events_per_job_s": EVENTS_PER_JOB_S, "sample_every": SAMPLE_EVERY, "full": args.full},
        figures=figures,
        backend_info=common.backend("database removed"),
        save_file=not args.no_save,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
