"""``jobwatch sweep``: one pass over the open jobs, the report, and what it waits for said as it waits."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
from pymongo import AsyncMongoClient

import rules
from watcher.cli import exits
from watcher.cli.commands import output
from watcher.cli.commands.output import Emit, Options
from watcher.cli.progress import Progress, keep_showing
from watcher.intake.sweep import SweepReport
from watcher.ops import printable
from watcher.service import Watcher
from watcher.settings import Settings

#: The jobs path A waits for named on stderr before the rest are counted.
WAITING_NAMED = 5


async def sweep(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    watcher = Watcher(client, settings)
    progress = Progress("sweep", enabled=not options["as_json"])
    waiting_until: float | None = None
    seen = 0

    def on_job(_: rules.Evaluation) -> None:
        nonlocal seen
        seen += 1
        progress.update(f"{seen} open jobs evaluated")

    def on_wait(looked: SweepReport, wait_s: float) -> None:
        # Said whatever the output: the operator must know why nothing happens for a minute.
        nonlocal waiting_until
        waiting_until = time.monotonic() + wait_s
        jobs = ", ".join(printable.value(wait.job_id) for wait in looked.waiting[:WAITING_NAMED])
        more = f" and {looked.path_a_waiting - WAITING_NAMED} more" if looked.path_a_waiting > WAITING_NAMED else ""
        output.say(
            f"sweep: waiting {wait_s:g}s before the pass: {output.count(looked.path_a_waiting, 'job')} ({jobs}{more}) "
            "have a collection ahead of a stage counter, which path A raises only once both stood still that long "
            "(--path-a-quiet-s; --dry-run does not wait)"
        )

    def waiting() -> str | None:
        left_s = None if waiting_until is None else waiting_until - time.monotonic()
        return f"waiting for path A: {left_s:.0f}s left" if left_s is not None and left_s > 0 else None

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_showing, progress, waiting)
            report = await watcher.sweep(
                dry_run=options["dry_run"], job_types=options["job_type"], on_job=on_job, on_wait=on_wait
            )
            tg.cancel_scope.cancel()
    finally:
        progress.close()
    if options["as_json"]:
        emit(json.dumps(report.as_dict(), default=str))
    else:
        emit(render_sweep(report, settings.path_a_quiet_s))
    return exits.FAILED if report.skipped else exits.OK


def render_sweep(report: SweepReport, path_a_quiet_s: float) -> str:
    dry = report.dry_run
    scanned = output.count(report.scanned, "open job")
    took = f"{report.duration_s * 1000:.0f} ms"
    lines = [f"sweep{' (dry run: nothing written)' if dry else ''}: {scanned} scanned in {took}"]
    shown = printable.value
    for change in report.changes:
        stages = f"; stages: {', '.join(map(shown, change.completed_stages))}" if change.completed_stages else ""
        job_type = shown(change.job_type) if change.job_type else "no jobType"
        verb = "would change" if dry else "changed"
        lines.append(f"  {verb}: job {shown(change.job_id)} ({job_type}): {change.outcome}{stages}")
    for job_id, reason in report.skipped:
        lines.append(f"  skipped: job {shown(job_id)}: {printable.text(reason)}")
    for wait in report.waiting:
        stages = ", ".join(map(shown, wait.stages))
        verb = "path A would wait for" if dry else "path A waits for"
        lines.append(
            f"  {verb}: job {shown(wait.job_id)}: stages {stages} (the collection holds more items than "
            f"the counter; raised once both stood still {path_a_quiet_s:g}s)"
        )
    if dry:
        totals = (
            f"{output.count(report.jobs_completed, 'job')} would complete, "
            f"{output.count(report.stages_completed, 'stage')} would complete, "
            f"{output.count(report.progress_updated, 'progress update')} would be written"
        )
    else:
        totals = (
            f"{output.count(report.jobs_completed, 'job')} completed, {output.count(report.stages_completed, 'stage')} "
            f"completed, {output.count(report.progress_updated, 'progress update')}, {report.stale} changed meanwhile "
            "(left to the stream)"
        )
    waiting = f", {report.path_a_waiting} waiting for path A" if report.path_a_waiting else ""
    lines.append(f"totals: {totals}, {len(report.skipped)} skipped{waiting}")
    return "\n".join(lines)
