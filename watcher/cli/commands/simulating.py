"""``jobwatch simulate``: consumers playing jobs against the database (the simulator is
``watcher.cli.simulate``), with a progress line and, with ``--wait-s``, the watcher's answer."""

from __future__ import annotations

from typing import Any

import anyio
from pymongo import AsyncMongoClient

from watcher.cli import exits
from watcher.cli import simulate as simulation
from watcher.cli.commands import output
from watcher.cli.commands.output import Emit, Options
from watcher.cli.progress import Progress, keep_showing
from watcher.settings import Settings


async def simulate(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    plan = simulation.Plan(
        jobs=options["jobs"],
        stages=tuple(s.strip() for s in options["stages"].split(",") if s.strip()),
        items=options["items"],
        consumers=options["consumers"],
        rate=options["rate"],
        legacy_fraction=options["legacy_fraction"],
        lost_fraction=options["lost_fraction"],
        job_type=options["job_type"],
    )
    if not plan.stages:
        output.fail("simulate needs at least one stage (--stages a,b)")
        return exits.USAGE
    progress = Progress("simulate")
    shown: list[str | None] = [None]  # what the progress line says now (None: nothing)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_showing, progress, lambda: shown[0])
            code = await _batches(client[settings.database], settings, plan, options, emit, progress, shown)
            tg.cancel_scope.cancel()
    finally:
        progress.close()
    return code


async def _batches(
    db: Any,
    settings: Settings,
    plan: simulation.Plan,
    options: Options,
    emit: Emit,
    progress: Progress,
    shown: list[str | None],
) -> int:
    """Batches of jobs until one is done (or forever with ``--repeat``);
    ``shown[0]`` is kept saying where it is."""
    total = plan.increments

    def counted(done: int) -> None:
        shown[0] = f"{done}/{total} increments"

    while True:
        shown[0] = f"creating {output.count(plan.jobs, 'job')}"
        outcome = await simulation.play(db, settings, plan, on_increment=counted)
        shown[0] = None
        progress.close()
        rate = outcome.increments / outcome.elapsed_s if outcome.elapsed_s else 0.0
        emit(
            f"simulate: {output.count(len(outcome.job_ids), 'job')}, {outcome.increments} increments "
            f"({outcome.lost} lost on purpose) in {outcome.elapsed_s:.2f}s ({rate:.0f}/s)"
        )
        if options["wait_s"] > 0:
            completed = 0
            with anyio.move_on_after(options["wait_s"]):
                while (completed := await simulation.count_completed(db, settings, outcome.job_ids)) < len(
                    outcome.job_ids
                ):
                    shown[0] = f"waiting for the watcher: {completed}/{len(outcome.job_ids)} jobs Completed"
                    await anyio.sleep(0.1)
            shown[0] = None
            progress.close()
            emit(f"simulate: {completed}/{len(outcome.job_ids)} jobs Completed")
            if completed < len(outcome.job_ids) and not options["repeat"]:
                return exits.FAILED
        if not options["repeat"]:
            return exits.OK
