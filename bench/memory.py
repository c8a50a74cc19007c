"""Memory: the RSS while events across 10,000 busy jobs pass through the watcher's hot path, database removed.

    ./dev bench memory           # 200,000 consumer events
    ./dev bench memory --full    # 1,000,000 (the issue's size)

The product's own stream reader and dispatcher (``bench/paced.py``), fed as
fast as they read by a process that plays the server: 10,000 busy jobs at
any moment (two stages of ``items`` items: with the default 10, a job
completes after 20 increments and its slot goes to a new job), and as many
increments again to jobs of one item, each a new job; every write the
watcher makes comes back as an event. So jobs turn over all the time
(about 60,000 complete in the full run), progress writes are held back and
made later (the trailing writes wait beside the queue), and anything kept
per job and never forgotten shows as growth.

``idle_mb`` is the RSS before the first event (everything imported, the
hot path built). ``peak_mb`` is the highest RSS sampled (ten times a
second); the kernel's high-water mark is kept beside it, and counted in the
peak when it rose during the run. "Flat" is shown by the samples
(``samples``: consumer events read, MB) and two figures from them: the RSS
at the end minus the RSS after the first fifth of the events, and the
least-squares slope over the last four fifths in MB per million events.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, load, paced  # noqa: E402

JOBS = 10_000
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
    p.add_argument("--events", type=int, help="consumer events (default 200,000; --full 1,000,000)")
    p.add_argument("--jobs", type=int, default=JOBS, help=f"busy jobs at any moment (default {JOBS:,})")
    p.add_argument("--items", type=int, default=ITEMS, help=f"items per stage of a busy job (default {ITEMS})")
    args = p.parse_args()
    from watcher.ops import logs

    logs.setup(level="WARNING")
    count = args.events or (1_000_000 if args.full else 200_000)
    watch = load.LoadWatch()
    gc.collect()
    idle_mb = common.rss_mb()
    high_water_idle_mb = common.peak_rss_mb()
    samples: list[tuple[int, float]] = [(0, round(idle_mb, 2))]
    progress = common.Progress("memory: events", count)

    def sample(read: int) -> None:
        progress.update(read)
        samples.append((read, round(common.rss_mb(), 2)))

    result = anyio.run(
        lambda: paced.step(0, 86_400, busy_jobs=args.jobs, items=args.items, on_sample=sample, stop_after=count)
    )
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
        "events": result["events_with_own_writes"],
        "consumer_events": result["events_read"],
        "own_write_events": result["events_with_own_writes"] - result["events_read"],
        "writes": result["writes"],
        "peak_above_idle_mb": round(peak_mb - idle_mb, 2),
        "end_mb": round(end_mb, 2),
        "kernel_high_water_mb": round(high_water_mb, 2),
        "kernel_high_water_at_idle_mb": round(high_water_idle_mb, 2),
        "growth_after_first_fifth_mb": round(end_mb - early_mb, 2),
        "slope_after_first_fifth_mb_per_million_events": None if slope is None else round(slope, 3),
        "busy_jobs": args.jobs,
        "events_per_s": result["rate_achieved"],
        "cpu_us_per_event": result["cpu_us_per_event"],
        "load_avg_1m": watch.summary(),
        "samples": samples[:: max(len(samples) // 200, 1)],  # (consumer events so far, RSS MB), at most ~200 kept
    }
    common.table(
        [
            "consumer events",
            "with own writes",
            "busy jobs",
            "idle MB",
            "peak MB",
            "above idle",
            "growth after 1/5",
            "MB per 1M events",
        ],
        [
            [
                figures["consumer_events"],
                figures["events"],
                args.jobs,
                figures["idle_mb"],
                figures["peak_mb"],
                figures["peak_above_idle_mb"],
                figures["growth_after_first_fifth_mb"],
                figures["slope_after_first_fifth_mb_per_million_events"],
            ]
        ],
        title="memory, database removed (the watcher's own hot path)",
    )
    common.save(
        common.result_name("memory", args),
        parameters={
            "events": count,
            "busy_jobs": args.jobs,
            "items_per_stage": args.items,
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
