"""Memory: resident set size while change events across 10,000 jobs pass through the hot path, database removed.

    ./dev bench memory           # 200,000 events
    ./dev bench memory --full    # 1,000,000 events (the issue's size)

Events are made one at a time as the driver would decode them (nothing is
kept by the generator but one document per job's counters) and go through
decode, ``JobQueue``, the rules and update building (``bench/replay.py``).
Jobs finish and are replaced by new ones (new ``_id``s), so anything keyed by
job that is never forgotten would show as growth. ``idle_mb`` is the RSS
before the first event (everything imported); ``peak_mb`` the highest RSS
sampled every 10,000 events (and the kernel's high-water mark). Growth is
the RSS at the end minus the RSS after the first fifth of the events: flat
means the steady state holds no more than it did early on.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, replay  # noqa: E402

JOBS = 10_000
SAMPLE_EVERY = 10_000
#: Events per job per simulated second: busy jobs, below the 1/s progress
#: interval so that this measures memory, not the queue's deferral cost.
EVENTS_PER_JOB_S = 0.5


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--events", type=int, help="events (default 200,000; --full 1,000,000)")
    p.add_argument("--jobs", type=int, default=JOBS)
    args = p.parse_args()
    count = args.events or (1_000_000 if args.full else 200_000)
    gc.collect()
    idle_mb = common.rss_mb()
    samples: list[tuple[int, float]] = [(0, round(idle_mb, 2))]
    progress = common.Progress("memory: events", count)

    def sample(n: int) -> None:
        progress.update(n)
        if n % SAMPLE_EVERY == 0:
            samples.append((n, round(common.rss_mb(), 2)))

    tally = replay.run(replay.events(args.jobs, count), events_per_s=args.jobs * EVENTS_PER_JOB_S, on_event=sample)
    progress.close()
    end_mb = common.rss_mb()
    peak_mb = max(max(mb for _, mb in samples), end_mb)
    early = next((mb for n, mb in samples if n >= count // 5), samples[-1][1])
    figures: dict[str, Any] = {
        "idle_mb": round(idle_mb, 2),
        "peak_mb": round(peak_mb, 2),
        "peak_above_idle_mb": round(peak_mb - idle_mb, 2),
        "kernel_high_water_mb": round(common.peak_rss_mb(), 2),
        "end_mb": round(end_mb, 2),
        "growth_after_first_fifth_mb": round(end_mb - early, 2),
        "events": tally.events,
        "jobs": args.jobs,
        "max_pending_jobs": tally.max_pending_jobs,
        "cpu_us_per_event": round(tally.cpu_us_per_event, 1),
        "samples": samples,
    }
    common.table(
        ["events", "jobs", "idle MB", "peak MB", "above idle", "growth after 1/5", "CPU us/event"],
        [[tally.events, args.jobs, figures["idle_mb"], figures["peak_mb"], figures["peak_above_idle_mb"], figures["growth_after_first_fifth_mb"], figures["cpu_us_per_event"]]],
        title="memory, database removed (decode, JobQueue, rules, update building)",
    )
    common.save(
        common.result_name("memory", args),
        parameters={"events": count, "jobs": args.jobs, "events_per_job_s": EVENTS_PER_JOB_S, "sample_every": SAMPLE_EVERY, "full": args.full},
        figures=figures,
        backend_info=common.backend("database removed"),
        save_file=not args.no_save,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
