"""What each ``jobwatch`` command does (``main`` only parses and resolves settings)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import sys
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from bson import ObjectId, json_util
from pymongo import AsyncMongoClient

import rules
from rules import explain
from watcher.cli import demo, exits, simulate
from watcher.decide import updates
from watcher.intake.source import ChangeSource
from watcher.intake.sweep import SweepReport
from watcher.ops import logs
from watcher.service import ConfigurationProblem, Unreachable, Watcher, check_server
from watcher.settings import Settings
from watcher.storage import errors
from watcher.storage.position import MongoPositionStore, Saved
from watcher.storage.store import JobStore, MongoJobStore, Unreadable

Emit = Callable[[str], None]
Options = Mapping[str, Any]
Handler = Callable[[AsyncMongoClient[Any], Options, Settings, Emit], Awaitable[int]]
PROGRESS_EVERY = 200
#: A watcher whose heartbeat is older than this many of ITS OWN save intervals counts as gone.
ALIVE_INTERVALS = 3
#: Documents as MongoDB's tools print them (dates, ObjectIds as $date/$oid).
RELAXED = json_util.RELAXED_JSON_OPTIONS


def dispatch(command: str, options: Options, settings: Settings, emit: Emit) -> int:
    """Run one command; raises what ``describe_failure`` turns into a message."""
    if command == "demo":
        return int(anyio.run(demo.run, emit))
    handlers: dict[str, Handler] = {
        "run": _run,
        "sweep": _sweep,
        "explain": _explain,
        "status": _status,
        "jobs": _jobs,
        "position show": _position_show,
        "position reset": _position_reset,
        "simulate": _simulate,
    }
    return int(anyio.run(_connected, handlers[command], options, settings, emit))


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """An exit code and a one-line message for an error that ended a command.

    A task group's wrapping says nothing to an operator: a group is described
    by what it holds (several consumers that lost the same server at once are
    one unreachable server), by its first bug if it holds one."""
    if isinstance(exc, BaseExceptionGroup):
        described = [describe_failure(inner) for inner in exc.exceptions]
        return next((d for d in described if d[0] == exits.FAILED), described[0])
    if isinstance(exc, ConfigurationProblem):
        return exits.USAGE, str(exc)
    if isinstance(exc, Unreachable):
        return exits.UNREACHABLE, str(exc)
    if isinstance(exc, errors.StoreUnavailable):
        return exits.UNREACHABLE, f"MongoDB could not be used: {exc}"
    if isinstance(exc, errors.StorageProblem) or type(exc).__module__.startswith(("pymongo.", "bson.")):
        # Past the storage boundary only by a path that does not translate: still the server's problem.
        return exits.UNREACHABLE, f"MongoDB could not be used: {errors.name(exc)}: {str(exc)[:300]}"
    return exits.FAILED, f"unexpected error (a bug; please report it): {type(exc).__name__}: {str(exc)[:300]}"


def _fail(message: str) -> None:
    print(f"jobwatch: {logs.redacted(message)}", file=sys.stderr, flush=True)


async def _connected(handler: Handler, options: Options, settings: Settings, emit: Emit) -> int:
    try:
        with warnings.catch_warnings(record=True) as caught, errors.translated("--uri / JOBWATCH_URI", "retry"):
            warnings.simplefilter("always")
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                settings.uri_value, serverSelectionTimeoutMS=settings.server_selection_timeout_ms, appname="jobwatch"
            )
    except ValueError as exc:  # the driver's word for a malformed host or port
        raise ConfigurationProblem(f"--uri / JOBWATCH_URI: {logs.redacted(str(exc))}") from None
    for warning in caught:  # e.g. an unknown URI option: said once, in our words, redacted
        logs.event("uri_warning", "WARNING", logs.redacted(str(warning.message)))
    try:
        # A mongodb+srv:// URI is only parsed once the driver resolved it, at
        # the first command: its warnings come here.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                await check_server(client, settings)
            finally:
                for warning in caught:
                    logs.event("uri_warning", "WARNING", logs.redacted(str(warning.message)))
        return int(await handler(client, options, settings, emit))
    finally:
        await client.close()


def _json(value: Any) -> str:
    """Any BSON value as relaxed Extended JSON (what mongosh and mongoexport show)."""
    return json_util.dumps(value, json_options=RELAXED)


# -- run ---------------------------------------------------------------------


async def _run(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    if settings.observe:
        logs.event("observe_mode", "WARNING", "observe mode: every decision is computed and logged, nothing is written to the jobs")
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


class Progress:
    """A one-line counter on stderr, only when a person is watching it."""

    def __init__(self, label: str, *, enabled: bool) -> None:
        self._label = label
        self._enabled = enabled and sys.stderr.isatty()
        self._shown = False

    def update(self, text: str) -> None:
        if self._enabled:
            print(f"\r{self._label}: {text}", end="", file=sys.stderr, flush=True)
            self._shown = True

    def close(self) -> None:
        if self._shown:
            print(file=sys.stderr, flush=True)


async def _sweep(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    watcher = Watcher(client, settings)
    progress = Progress("sweeping", enabled=not options["as_json"])
    seen = 0

    def on_job(_: rules.Evaluation) -> None:
        nonlocal seen
        seen += 1
        if seen % PROGRESS_EVERY == 0:
            progress.update(f"{seen} open jobs evaluated")

    try:
        report = await watcher.sweep(dry_run=options["dry_run"], job_types=options["job_type"], on_job=on_job)
    finally:
        progress.close()
    emit(json.dumps(report.as_dict(), default=str) if options["as_json"] else render_sweep(report))
    return exits.FAILED if report.skipped else exits.OK


def render_sweep(report: SweepReport) -> str:
    dry = report.dry_run
    lines = [f"sweep{' (dry run: nothing written)' if dry else ''}: {report.scanned} open jobs scanned in {report.duration_s * 1000:.0f} ms"]
    for change in report.changes:
        stages = f"; stages: {', '.join(change.completed_stages)}" if change.completed_stages else ""
        lines.append(f"  {'would change' if dry else 'changed'}: job {change.job_id} ({change.job_type or 'no jobType'}): {change.outcome}{stages}")
    for job_id, reason in report.skipped:
        lines.append(f"  skipped: job {job_id}: {reason}")
    if dry:
        totals = (f"{report.jobs_completed} jobs would complete, {report.stages_completed} stages would complete, "
                  f"{report.progress_updated} progress updates would be written")
    else:
        totals = (f"{report.jobs_completed} jobs completed, {report.stages_completed} stages completed, "
                  f"{report.progress_updated} progress updates, {report.stale} changed meanwhile (left to the stream)")
    lines.append(f"totals: {totals}, {len(report.skipped)} skipped")
    return "\n".join(lines)


# -- explain -----------------------------------------------------------------


_INTEGER = re.compile(r"-?[0-9]{1,19}")


def candidate_ids(text: str) -> list[Any]:
    """An id as typed: an ObjectId if it looks like one, then the string, then a number."""
    ids: list[Any] = []
    if ObjectId.is_valid(text) and len(text) == 24:
        ids.append(ObjectId(text))
    ids.append(text)
    if _INTEGER.fullmatch(text):  # ASCII digits only ("¹".isdigit() is true), and within int64
        ids.append(int(text))
    return ids


async def _evaluate(store: JobStore, doc: dict[str, Any], settings: Settings) -> tuple[rules.Evaluation, dict[str, int] | None]:
    counts = None
    if doc.get("collectionId") is not None:
        counts = (await store.collection_counts([doc["collectionId"]])).get(doc["collectionId"])
    return rules.evaluate(doc, collection_counts=counts, policy=rules.Policy(scan_stage=settings.scan_stage), explain=True), counts


async def _explain(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    store = MongoJobStore.from_settings(client[settings.database], settings)
    doc = None
    for job_id in candidate_ids(options["job_id"]):
        doc = await store.get(job_id)
        if doc is not None:
            break
    if doc is None:
        shown = options["job_id"] if len(options["job_id"]) <= 80 else options["job_id"][:77] + "..."  # one short line, whatever was typed
        _fail(f"no job with _id {shown!r} in {settings.database}.{settings.jobs_collection} (looked for an ObjectId and a string id)")
        return exits.FAILED
    result, counts = await _evaluate(store, doc, settings)
    if options["as_json"]:
        emit(_json(evaluation_document(result, doc, counts)))
    else:
        emit(render_job(doc, counts) + "\n" + explain.render(result))
    return exits.OK


def render_job(doc: dict[str, Any], counts: Mapping[str, int] | None) -> str:
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


def evaluation_document(result: rules.Evaluation, doc: dict[str, Any], counts: Mapping[str, int] | None) -> dict[str, Any]:
    """The evaluation with the exact filter and update the watcher would send
    (as BSON-ready documents, so ``json_util`` renders them as MongoDB would)."""
    update: dict[str, Any] | None = None
    query: dict[str, Any] | None = None
    if result.writes:
        query, update = updates.for_evaluation(result)
    return {
        "job": doc,
        "collection_counts": dict(counts) if counts is not None else None,
        "outcome": result.outcome.value,
        "rejection": result.rejection,
        "completed_stages": list(result.completed_stages),
        "completes_job": result.completes_job,
        "findings": [f._asdict() for f in result.findings],
        "filter": query,
        "update": update,
        "explain": explain.render(result),
    }


# -- jobs --stuck ------------------------------------------------------------


def why(result: rules.Evaluation) -> str:
    """The rule that explains a stuck job, in one line."""
    if result.rejection:
        return f"cannot be read as a job (rule 0): {result.rejection}"
    if result.completes_job:
        return "counters say done: the watcher should complete it now (rule 2)"
    if result.completed_stages:
        return f"stages {', '.join(result.completed_stages)} are done by their counters but still open (rule 1)"
    for finding in result.findings:
        if not finding.holds and finding.rule in (1, 2):
            where = f" [{finding.stage}]" if finding.stage else ""
            return f"rule {finding.rule} {finding.title}{where}: {finding.detail}"
    return f"{result.outcome.value}: no rule completes it yet"


def _moved_at(doc: Mapping[str, Any]) -> dt.datetime | None:
    for field in ("updatedAt", "createdAt"):
        value = doc.get(field)
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(doc.get("_id"), ObjectId):
        generated: dt.datetime = doc["_id"].generation_time
        return generated
    return None


async def _jobs(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    store = MongoJobStore.from_settings(client[settings.database], settings)
    now = dt.datetime.now(dt.UTC)
    stuck: list[dict[str, Any]] = []
    # full: every job whose status is not terminal (an unknown or missing one too).
    async for batch in store.open_jobs(full=True, fields=("createdAt", "updatedAt")):
        for doc in batch:
            if isinstance(doc, Unreadable):
                stuck.append({"job_id": doc.get("_id"), "jobType": None, "status": None, "idle_s": None,
                              "counters_say_done": False, "why": f"cannot be read as a job (rule 0): {doc.reason}"})
                continue
            result, _ = await _evaluate(store, doc, settings)
            moved = _moved_at(doc)
            idle_s = (now - moved).total_seconds() if moved else None
            done = bool(result.completed_stages) or result.completes_job
            if done or result.rejection or (idle_s is not None and idle_s >= options["older_than_s"]):
                stuck.append({"job_id": doc.get("_id"), "jobType": doc.get("jobType"), "status": doc.get("status"),
                              "idle_s": round(idle_s, 1) if idle_s is not None else None, "counters_say_done": done,
                              "why": why(result)})
    stuck.sort(key=lambda job: (not job["counters_say_done"], -(job["idle_s"] or 0)))
    shown = stuck[: options["limit"]]
    if options["as_json"]:
        emit(_json({"stuck": shown, "total": len(stuck)}))
    else:
        for job in shown:
            idle = f"idle {_human_s(job['idle_s'])}" if job["idle_s"] is not None else "age unknown"
            emit(f"{job['job_id']}  {job['jobType'] or '-'}  {job['status']}  {idle}  {job['why']}")
        more = f" (first {len(shown)} shown; --limit)" if len(shown) < len(stuck) else ""
        emit(f"{len(stuck)} stuck jobs{more}" if stuck else "no stuck jobs")
    return exits.FAILED if stuck else exits.OK


def _human_s(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


# -- status ------------------------------------------------------------------


def _positions(client: AsyncMongoClient[Any], settings: Settings) -> MongoPositionStore:
    return MongoPositionStore(client[settings.database], settings.positions_collection, settings.watcher_name)


def status_document(saved: Saved | None, open_jobs: list[dict[str, Any]], settings: Settings, now: dt.datetime) -> dict[str, Any]:
    """Alive means a heartbeat within ALIVE_INTERVALS of the save interval the
    watcher saved itself (the caller's settings may differ from the watcher's)."""
    interval_s = saved.save_interval_s if saved and saved.save_interval_s else None
    heartbeat_age = _age_s(saved.heartbeat_at if saved else None, now)
    alive = heartbeat_age is not None and interval_s is not None and heartbeat_age < ALIVE_INTERVALS * interval_s
    state = dict(saved.state) if saved and saved.state else {}
    return {
        "watcher": settings.watcher_name,
        "alive": alive,
        "heartbeat_age_s": heartbeat_age,
        "save_interval_s": interval_s,
        "position_saved": bool(saved and saved.token),
        "position_age_s": _age_s(saved.saved_at if saved else None, now),
        "backlog": state.get("pendingJobs"),
        "streaming": state.get("streaming"),
        "degraded": state.get("degraded"),
        "last_event_age_s": _age_s(state.get("lastEventAt"), now),
        "last_sweep_age_s": _age_s(state.get("lastSweepAt"), now),
        "last_sweep": dict(saved.last_sweep) if saved and saved.last_sweep else None,
        "open_jobs": [{"status": g["_id"].get("status"), "jobType": g["_id"].get("jobType"), "count": g["count"]} for g in open_jobs],
    }


def render_status(status: Mapping[str, Any]) -> str:
    age = status["heartbeat_age_s"]
    if age is None:
        seen = "never seen"
    elif status["save_interval_s"] is None:
        seen = f"heartbeat {age:.1f}s ago, but no save interval saved (a watcher older than this command)"
    else:
        seen = f"heartbeat {age:.1f}s ago; it saves every {status['save_interval_s']:g}s"
    mode = "degraded (sweeps only)" if status["degraded"] else "streaming" if status["streaming"] else "not streaming"
    lines = [
        f"watcher {status['watcher']!r}: {'alive' if status['alive'] else 'NOT alive'} ({seen})",
        f"stream: {mode if status['streaming'] is not None else 'unknown'}; backlog: {_or_unknown(status['backlog'])} jobs",
        f"position: {'saved ' + _ago(status['position_age_s']) if status['position_saved'] else 'none saved'}",
        f"last event: {_ago(status['last_event_age_s'])}; last sweep: {_ago(status['last_sweep_age_s'])}",
    ]
    if status["last_sweep"]:
        ls = status["last_sweep"]
        lines.append(f"last sweep: {ls.get('scanned')} scanned, {ls.get('jobs_completed')} jobs completed, {ls.get('skipped')} skipped, {ls.get('duration_s')}s")
    total = sum(g["count"] for g in status["open_jobs"])
    lines.append(f"open jobs: {total}")
    lines += [f"  {g['count']:>7}  {g['status']!s:<12} {g['jobType']}" for g in status["open_jobs"]]
    return "\n".join(lines)


def _ago(age_s: float | None) -> str:
    return "never" if age_s is None else f"{_human_s(age_s)} ago"


def _or_unknown(value: Any) -> str:
    return "unknown" if value is None else str(value)


async def _status(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    saved = await _positions(client, settings).load()
    open_jobs = await MongoJobStore.from_settings(client[settings.database], settings).count_open()
    status = status_document(saved, open_jobs, settings, dt.datetime.now(dt.UTC))
    emit(json.dumps(status, default=str) if options["as_json"] else render_status(status))
    return exits.FAILED if options["check"] and not status["alive"] else exits.OK


def _age_s(when: Any, now: dt.datetime) -> float | None:
    if not isinstance(when, dt.datetime):
        return None
    aware: dt.datetime = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return round(max((now - aware).total_seconds(), 0.0), 3)


# -- position ----------------------------------------------------------------


async def _position_show(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    saved = await _positions(client, settings).load()
    now = dt.datetime.now(dt.UTC)
    doc = {
        "watcher": settings.watcher_name,
        "token": dict(saved.token) if saved and saved.token else None,
        "saved_at": saved.saved_at if saved else None,
        "position_age_s": _age_s(saved.saved_at if saved else None, now),
        "heartbeat_at": saved.heartbeat_at if saved else None,
        "save_interval_s": saved.save_interval_s if saved else None,
    }
    if options["as_json"]:
        emit(_json(doc))
    elif saved is None or not saved.token:
        emit(f"watcher {settings.watcher_name!r}: no position saved (the next start streams from then and sweeps)")
    else:
        emit(f"watcher {settings.watcher_name!r}: position saved {_ago(_age_s(saved.saved_at, now))} ({saved.saved_at})\n"
             f"token: {_json(doc['token'])}")
    return exits.OK


async def _position_reset(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    where = f"{settings.database}.{settings.positions_collection} _id={settings.watcher_name!r}"
    if not options["yes"]:
        _fail(f"this {'replaces' if options['to_now'] else 'forgets'} the saved position of {where}; "
              "stop the watcher first, then add --yes")
        return exits.USAGE
    positions = _positions(client, settings)
    if options["to_now"]:
        token = await _current_token(client, settings)
        await positions.save(token)
        emit(f"position of {where} set to now: {_json(dict(token))}")
    else:
        with errors.translated("position reset", "retry"):
            await client[settings.database][settings.positions_collection].update_one(
                {"_id": settings.watcher_name}, {"$unset": {"token": "", "savedAt": ""}}
            )
        emit(f"position of {where} forgotten: the next start streams from then, and its start-up sweep covers the gap")
    return exits.OK


async def _current_token(client: AsyncMongoClient[Any], settings: Settings) -> Mapping[str, Any]:
    """The change stream's position now: its first (empty) batch's resume token."""
    with errors.translated("open a change stream for its current position", "retry"):
        async with await client[settings.database][settings.jobs_collection].watch(max_await_time_ms=100) as stream:
            await stream.try_next()
            token = stream.resume_token
    if token is None:
        raise ConfigurationProblem("the change stream gave no resume token; is this a replica set?")
    return token


# -- simulate ----------------------------------------------------------------


async def _simulate(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    plan = simulate.Plan(
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
        _fail("simulate needs at least one stage (--stages a,b)")
        return exits.USAGE
    db = client[settings.database]
    total = plan.jobs * len(plan.stages) * plan.items
    while True:
        progress = Progress("simulating", enabled=True)
        try:
            outcome = await simulate.play(db, settings, plan, on_increment=lambda done: progress.update(f"{done}/{total} increments"))
        finally:
            progress.close()
        rate = outcome.increments / outcome.elapsed_s if outcome.elapsed_s else 0.0
        emit(f"simulate: {len(outcome.job_ids)} jobs, {outcome.increments} increments ({outcome.lost} lost on purpose) in {outcome.elapsed_s:.2f}s ({rate:.0f}/s)")
        if options["wait_s"] > 0:
            completed = 0
            with anyio.move_on_after(options["wait_s"]):
                while (completed := await simulate.count_completed(db, settings, outcome.job_ids)) < len(outcome.job_ids):
                    await anyio.sleep(0.1)
            emit(f"simulate: {completed}/{len(outcome.job_ids)} jobs Completed")
            if completed < len(outcome.job_ids) and not options["repeat"]:
                return exits.FAILED
        if not options["repeat"]:
            return exits.OK
