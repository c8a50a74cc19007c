"""Database cost: commands the watcher sends per completed job and per increment, against the seed's poller.

    ./dev bench cost            # two cases, about two minutes
    ./dev bench cost --full     # the issue's sizes: 120 items per job (6 minutes for the slow case)

Counted with a PyMongo command listener on the keeper's own client (the
consumers use another one), from the moment the keeper is running (start-up's
index check, first sweep and position are not per-job cost) until every job
completed. Cases:

- ``slow_100_jobs``: 100 jobs whose increments arrive every 3 s per job (the
  issue's case: today about 0.93 writes per increment);
- ``busy_200_per_s``: the latency benchmark's load (100 concurrent jobs,
  200 increments/s asked).

The watcher reads its change stream over the wire (the embedded server
serves real change streams, as MongoDB does), so its ``getMore`` commands are
on the counted client and ``commands_per_increment`` includes them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, report, workload  # noqa: E402
from watcher.cli import simulate  # noqa: E402

#: The issue's figure for today's watcher on the slow case.
ISSUE_WRITES_PER_INCREMENT = 0.93
#: The cost goal: progress writes under this share of the consumers' increments.
PROGRESS_SHARE_GOAL = 0.10


def cases(full: bool) -> dict[str, simulate.Plan]:
    slow_items = 60 if full else 5  # 2 stages: 120 increments per job (--full), as in the issue
    return {
        "slow_100_jobs": workload.plan(jobs=100, active=100, items=slow_items, rate=100 / 3.0),
        "busy_200_per_s": workload.plan(jobs=1000 if full else 100, active=100, items=10, rate=200.0),
    }


def figures_for(run: workload.Run) -> dict[str, Any]:
    counter = run.commands
    assert counter is not None
    jobs = max(run.completed, 1)
    increments = max(run.outcome.increments, 1)
    stages = len(run.plan.stages)
    writes = counter.writes(workload.JOBS)
    completion_writes_bound = (stages + 1) * run.completed
    return {
        "jobs": len(run.outcome.job_ids),
        "completed": run.completed,
        "increments": run.outcome.increments,
        "rate_asked": round(run.plan.rate, 1),
        "rate_achieved": round(workload.achieved_rate(run.outcome), 1),
        "writes": writes,
        "writes_per_job": round(writes / jobs, 3),
        "writes_per_increment": round(writes / increments, 4),
        # Writes beyond one per stage and one for the job: rate-limited progress.
        "progress_writes_per_increment": round(max(writes - completion_writes_bound, 0) / increments, 4),
        "reads": counter.reads(),
        "reads_per_job": round(counter.reads() / jobs, 3),
        "commands": counter.total(),
        "commands_per_increment": round(counter.total() / increments, 4),
        "by_command": dict(counter.by_name),
    }


async def measure(plans: dict[str, simulate.Plan], keepers: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    results: dict[str, Any] = {}
    async with workload.backend() as backend:
        info = backend.info()
        for name, plan in plans.items():
            entry: dict[str, Any] = {"parameters": workload.describe(plan)}
            for keeper in keepers:
                run = await workload.run_keeper(backend, keeper, plan, label=f"cost_{name}")
                entry[keeper] = figures_for(run)
            results[name] = entry
    return results, info


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument(
        "--case", choices=["slow_100_jobs", "busy_200_per_s"], action="append", help="only this case (repeatable)"
    )
    args = p.parse_args()
    from watcher.ops import logs

    logs.setup(level="ERROR")
    plans = {name: plan for name, plan in cases(args.full).items() if not args.case or name in args.case}
    keepers = ("jobwatch", "poller_fixed")
    results, info = anyio.run(measure, plans, keepers)
    rows = []
    for name, entry in results.items():
        for keeper in keepers:
            f = entry[keeper]
            rows.append([*report.cost_row(name, keeper, f), f["commands_per_increment"]])
    common.table(
        ["case keeper", "completed", "$inc/s", "writes/job", "writes/inc", "progress w/inc", "reads/job", "cmds/inc"],
        rows,
        title=f"cost ({info['kind']}, {info['mode']})",
    )
    headline_case = "slow_100_jobs" if "slow_100_jobs" in results else next(iter(results))
    head = results[headline_case]
    figures: dict[str, Any] = {
        "headline_case": headline_case,
        "writes_per_job": head["jobwatch"]["writes_per_job"],
        "writes_per_increment": head["jobwatch"]["writes_per_increment"],
        "reads_per_job": head["jobwatch"]["reads_per_job"],
        "commands_per_increment": head["jobwatch"]["commands_per_increment"],
        "poller_writes_per_job": head["poller_fixed"]["writes_per_job"],
        "poller_commands_per_increment": head["poller_fixed"]["commands_per_increment"],
        "progress_share_goal": PROGRESS_SHARE_GOAL,
        "progress_goal_met": all(
            entry["jobwatch"]["progress_writes_per_increment"] < PROGRESS_SHARE_GOAL for entry in results.values()
        ),
        "issue_writes_per_increment_before": ISSUE_WRITES_PER_INCREMENT,
        "cases": results,
    }
    common.save(
        common.result_name("cost", args),
        parameters={"full": args.full, "cases": {n: workload.describe(p) for n, p in plans.items()}},
        figures=figures,
        backend_info=info,
        save_file=not args.no_save,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
