"""What each ``jobwatch`` command does (the CLI module only parses)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from bson import ObjectId, json_util
from pymongo import AsyncMongoClient

import rules
from watcher.cli import exits
from watcher.cli import demo
from watcher.ops import logs
from watcher.cli import simulate
from watcher.storage.position import MongoPositionStore
from watcher.service import ConfigurationProblem, Unreachable, Watcher, check_server
from watcher.settings import Settings
from watcher.intake.source import ChangeSource
from watcher.storage import errors
from watcher.storage.store import JobStore
from watcher.intake.sweep import SweepReport

Emit = Callable[[str], None]
PROGRESS_EVERY = 200
#: A watcher whose heartbeat is older than this many save intervals counts as gone.
ALIVE_INTERVALS = 3


def dispatch(args: argparse.Namespace, settings: Settings, emit: Emit) -> int:
    handlers: dict[str, Callable[[AsyncMongoClient[Any], argparse.Namespace, Settings, Emit], Awaitable[int]]] = {
        "run": _run,
        "sweep": _sweep,
        "explain": _explain,
        "status": _status,
        "simulate": _simulate,
    }
    if args.command == "demo":
        return int(anyio.run(demo.run, emit))
    try:
        return int(anyio.run(_connected, handlers[args.command], args, settings, emit))
    except ConfigurationProblem as exc:
        _fail(str(exc))
        return exits.USAGE
    except (Unreachable, errors.StoreUnavailable) as exc:
        _fail(str(exc))
        return exits.UNREACHABLE


def _fail(message: str) -> None:
    print(f"jobwatch: {logs.redacted(message)}", file=sys.stderr, flush=True)


async def _connected(handler: Callable[..., Any], args: argparse.Namespace, settings: Settings, emit: Emit) -> int:
    with errors.translated("--uri / JOBWATCH_URI", "read"):  # a bad URI is a ConfigurationProblem
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.uri_value, serverSelectionTimeoutMS=settings.server_selection_timeout_ms, appname="jobwatch"
        )
    try:
        await check_server(client, settings)
        return int(await handler(client, args, settings, emit))
    finally:
        await client.close()


# -- run ---------------------------------------------------------------------


async def _run(client: AsyncMongoClient[Any], args: argparse.Namespace, settings: Settings, emit: Emit) -> int:
    return await serve(client, settings)


async def serve(client: AsyncMongoClient[Any], settings: Settings, change_source: ChangeSource | None = None) -> int:
    """The service until SIGTERM/SIGINT: what ``jobwatch run`` does."""
    watcher = Watcher(client, settings, change_source=change_source)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signals, watcher)
        try:
            await watcher.run()
        finally:
            tg.cancel_scope.cancel()
    return exits.OK


async def _stop_on_signals(watcher: Watcher) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if watcher.stopping:
                logs.event("shutdown_forced", "WARNING", "second signal: exiting without saving", signal=signal.Signals(signum).name)
                os._exit(128 + signum)
            logs.event("signal_received", "INFO", "stopping cleanly (send it again to force)", signal=signal.Signals(signum).name)
            watcher.request_stop()


# -- sweep -------------------------------------------------------------------


async def _sweep(client: AsyncMongoClient[Any], args: argparse.Namespace, settings: Settings, emit: Emit) -> int:
    watcher = Watcher(client, settings)
    show_progress = not args.json and sys.stderr.isatty()
    seen = 0

    def progress(_: rules.Evaluation) -> None:
        nonlocal seen
        seen += 1
        if show_progress and seen % PROGRESS_EVERY == 0:
            print(f"\rsweeping: {seen} open jobs evaluated", end="", file=sys.stderr, flush=True)

    report = await watcher.sweep(dry_run=args.dry_run, job_types=args.job_type, on_job=progress)
    if show_progress and seen >= PROGRESS_EVERY:
        print(file=sys.stderr)
    emit(json.dumps(report.as_dict(), default=str) if args.json else render_sweep(report))
    return exits.OK


def render_sweep(report: SweepReport) -> str:
    verb = "would change" if report.dry_run else "changed"
    lines = [f"sweep{' (dry run: nothing written)' if report.dry_run else ''}: {report.scanned} open jobs scanned in {report.duration_s * 1000:.0f} ms"]
    for change in report.changes:
        stages = f" stages completed: {', '.join(change.completed_stages)}" if change.completed_stages else ""
        lines.append(f"  {verb}: job {change.job_id} ({change.job_type or 'no jobType'}): {change.outcome}{stages}")
    for job_id, reason in report.skipped:
        lines.append(f"  skipped: job {job_id}: {reason}")
    lines.append(
        f"totals: {report.jobs_completed} jobs completed, {report.stages_completed} stages completed, "
        f"{report.progress_updated} progress updates, {len(report.skipped)} skipped, {report.stale} changed meanwhile (left to the stream)"
    )
    return "\n".join(lines)


# -- explain -----------------------------------------------------------------


def candidate_ids(text: str) -> list[Any]:
    """An id as typed: an ObjectId if it looks like one, then the string, then a number."""
    ids: list[Any] = []
    if ObjectId.is_valid(text) and len(text) == 24:
        ids.append(ObjectId(text))
    ids.append(text)
    if text.lstrip("-").isdigit():
        ids.append(int(text))
    return ids


async def _explain(client: AsyncMongoClient[Any], args: argparse.Namespace, settings: Settings, emit: Emit) -> int:
    store = JobStore(client[settings.database], settings)
    doc = None
    for job_id in candidate_ids(args.job_id):
        doc = await store.get(job_id)
        if doc is not None:
            break
    if doc is None:
        _fail(f"no job with _id {args.job_id!r} in {settings.database}.{settings.jobs_collection} (looked for an ObjectId and a string id)")
        return exits.NOT_FOUND
    counts = None
    if doc.get("collectionId") is not None:
        counts = (await store.collection_counts([doc["collectionId"]])).get(doc["collectionId"])
    result = rules.evaluate(doc, collection_counts=counts, policy=rules.Policy(scan_stage=settings.scan_stage))
    if args.json:
        emit(json.dumps(evaluation_json(result, doc, counts), default=str))
    else:
        emit(render_job(doc, counts) + "\n" + result.explain())
    return exits.OK


def render_job(doc: dict[str, Any], counts: dict[str, int] | None) -> str:
    lines = [
        f"job {doc.get('_id')}  type={doc.get('jobType')}  status={doc.get('status')}  progress={doc.get('progress')}  "
        f"items={doc.get('completedItems')}/{doc.get('totalItems')}  collectionId={doc.get('collectionId')}"
    ]
    stages = doc.get("stages")
    if isinstance(stages, dict):
        for name, stage in stages.items():
            if isinstance(stage, dict):
                actual = f"  collection holds {counts[name]}" if counts and name in counts else ""
                lines.append(f"  stage {name:<12} {stage.get('status')!s:<11} {stage.get('completedItems')}/{stage.get('totalItems')}{actual}")
            else:
                lines.append(f"  stage {name:<12} {stage!r}")
    return "\n".join(lines)


def evaluation_json(result: rules.Evaluation, doc: dict[str, Any], counts: dict[str, int] | None) -> dict[str, Any]:
    return {
        "job": json.loads(json_util.dumps(doc)),
        "collection_counts": counts,
        "outcome": result.outcome.value,
        "rejection": result.rejection,
        "completed_stages": list(result.completed_stages),
        "completes_job": result.completes_job,
        "findings": [f._asdict() for f in result.findings],
        "writes": {path: repr(value) if not isinstance(value, int | str) else value for path, value in result.writes.items()},
        "guard": {path: repr(condition) for path, condition in result.guard.items()},
        "explain": result.explain(),
    }


# -- status ------------------------------------------------------------------


async def _status(client: AsyncMongoClient[Any], args: argparse.Namespace, settings: Settings, emit: Emit) -> int:
    db = client[settings.database]
    saved = await MongoPositionStore(db, settings.positions_collection, settings.watcher_name).load()
    open_jobs = await JobStore(db, settings).count_open()
    now = dt.datetime.now(dt.UTC)
    heartbeat_age = _age_s(saved.heartbeat_at if saved else None, now)
    alive = heartbeat_age is not None and heartbeat_age < ALIVE_INTERVALS * max(settings.position_save_interval_s, 1.0)
    status: dict[str, Any] = {
        "watcher": settings.watcher_name,
        "alive": alive,
        "heartbeat_age_s": heartbeat_age,
        "position_saved": bool(saved and saved.token),
        "position_age_s": _age_s(saved.saved_at if saved else None, now),
        "last_sweep": dict(saved.last_sweep) if saved and saved.last_sweep else None,
        "open_jobs": [{"status": g["_id"].get("status"), "jobType": g["_id"].get("jobType"), "count": g["count"]} for g in open_jobs],
    }
    if args.json:
        emit(json.dumps(status, default=str))
        return exits.OK
    lines = [
        f"watcher {settings.watcher_name!r}: {'alive' if alive else 'NOT alive'}"
        + (f" (heartbeat {heartbeat_age:.1f}s ago)" if heartbeat_age is not None else " (never seen)"),
        f"position: {'saved ' + format(status['position_age_s'], '.1f') + 's ago' if status['position_saved'] else 'none saved'}",
    ]
    if status["last_sweep"]:
        ls = status["last_sweep"]
        lines.append(f"last sweep: {ls.get('scanned')} scanned, {ls.get('jobs_completed')} jobs completed, {ls.get('skipped')} skipped, {ls.get('duration_s')}s")
    total = sum(g["count"] for g in status["open_jobs"])
    lines.append(f"open jobs: {total}")
    lines += [f"  {g['count']:>7}  {g['status']!s:<12} {g['jobType']}" for g in status["open_jobs"]]
    emit("\n".join(lines))
    return exits.OK


def _age_s(when: dt.datetime | None, now: dt.datetime) -> float | None:
    if when is None:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return round(max((now - when).total_seconds(), 0.0), 3)


# -- simulate ----------------------------------------------------------------


async def _simulate(client: AsyncMongoClient[Any], args: argparse.Namespace, settings: Settings, emit: Emit) -> int:
    plan = simulate.Plan(
        jobs=args.jobs,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
        items=args.items,
        consumers=args.consumers,
        rate=args.rate,
        legacy_fraction=args.legacy_fraction,
        lost_fraction=args.lost_fraction,
        job_type=args.job_type,
    )
    if plan.jobs < 0 or plan.items < 1 or plan.consumers < 1 or not plan.stages:
        _fail("simulate needs --jobs >= 0, --items >= 1, --consumers >= 1 and at least one stage")
        return exits.USAGE
    db = client[settings.database]
    while True:
        outcome = await simulate.play(db, settings, plan)
        rate = outcome.increments / outcome.elapsed_s if outcome.elapsed_s else 0.0
        emit(f"simulate: {len(outcome.job_ids)} jobs, {outcome.increments} increments ({outcome.lost} lost on purpose) in {outcome.elapsed_s:.2f}s ({rate:.0f}/s)")
        if args.wait_s > 0:
            completed = 0
            with anyio.move_on_after(args.wait_s):
                while (completed := await simulate.count_completed(db, settings, outcome.job_ids)) < len(outcome.job_ids):
                    await anyio.sleep(0.1)
            emit(f"simulate: {completed}/{len(outcome.job_ids)} jobs Completed")
            if completed < len(outcome.job_ids) and not args.repeat:
                return exits.FAILED
        if not args.repeat:
            return exits.OK
