"""What each ``jobwatch`` command does (``main`` only parses and resolves settings)."""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from bson import ObjectId, json_util
from pymongo import AsyncMongoClient

import rules
from rules import explain
from watcher.cli import demo, exits, interrupts, simulate
from watcher.cli.progress import Progress, keep_showing
from watcher.decide import updates
from watcher.intake.sweep import SweepReport
from watcher.ops import logs, printable, runtime
from watcher.service import ConfigurationProblem, Unreachable, Watcher, check_server
from watcher.settings import Settings
from watcher.storage import errors, reachability, survey
from watcher.storage.members import Member
from watcher.storage.store import JobStore, MongoJobStore, Unreadable
from watcher.storage.survey import PartitionView

Emit = Callable[[str], None]
Options = Mapping[str, Any]
Handler = Callable[[AsyncMongoClient[Any], Options, Settings, Emit], Awaitable[int]]
#: ``sweep``: the jobs path A waits for named on stderr before the rest are counted.
WAITING_NAMED = 5
#: The commands whose answer depends on the jobs collection being there.
READS_JOBS = frozenset({"run", "sweep", "explain", "status", "jobs"})
#: ``jobs --stuck``: an open job that has not moved for this long counts as stuck (``--older-than``).
STUCK_AFTER_S = 600.0
#: ``status`` lists the instances alive, and those gone within this long (older heartbeats are history).
RECENTLY_GONE_S = 300.0
#: An alive instance whose heartbeat is older than this many of its own renew intervals is shown as late.
LATE_BEATS = 2
#: How long closing the client may take (it tells the server to end the driver's sessions).
CLOSE_DEADLINE_S = 2.0
#: Documents as MongoDB's tools print them (dates, ObjectIds as $date/$oid).
RELAXED = json_util.RELAXED_JSON_OPTIONS


def dispatch(command: str, options: Options, settings: Settings, emit: Emit) -> int:
    """Run one command; raises what ``describe_failure`` turns into a message.
    A signal stops it (the service cleanly) and decides the exit code."""
    stopper = interrupts.Stopper()
    if command == "demo":
        return stopper.exit_code(int(anyio.run(_stoppable, stopper, demo.run, emit)))
    handlers: dict[str, Handler] = {
        "run": functools.partial(_run, stopper=stopper),
        "sweep": _sweep,
        "explain": _explain,
        "status": _status,
        "jobs": _jobs,
        "position show": _position_show,
        "position reset": _position_reset,
        "simulate": _simulate,
    }
    connected = functools.partial(_connected, reads_jobs=command in READS_JOBS)
    code = anyio.run(_stoppable, stopper, connected, handlers[command], options, settings, emit)
    return stopper.exit_code(int(code))


async def _stoppable(stopper: interrupts.Stopper, command: Callable[..., Awaitable[int]], *args: Any) -> int:
    """``command(*args)`` with SIGINT and SIGTERM heard from the loop's first
    step: the first one cancels it wherever it waits (or, inside
    ``stopper.gracefully``, stops the service cleanly)."""
    code = exits.INTERRUPTED
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        await tg.start(interrupts.watch, stopper)
        with anyio.CancelScope() as stopper.scope:
            try:
                code = await command(*args)
            except Exception as exc:  # raised below as it is, not wrapped in the task group's exception group
                failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return code


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
    print(f"jobwatch: {printable.text(logs.redacted(message))}", file=sys.stderr, flush=True)


async def _connected(
    handler: Handler, options: Options, settings: Settings, emit: Emit, *, reads_jobs: bool = False
) -> int:
    try:
        with warnings.catch_warnings(record=True) as caught, errors.translated("--uri / JOBWATCH_URI", "retry"):
            warnings.simplefilter("always")
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                settings.uri_value, serverSelectionTimeoutMS=settings.server_selection_timeout_ms, appname="jobwatch",
                # What each server answered: an unreachable error names why.
                event_listeners=[reachability.Heartbeats()],
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
                if reads_jobs:
                    await _warn_without_jobs(client, settings)
            finally:
                for warning in caught:
                    logs.event("uri_warning", "WARNING", logs.redacted(str(warning.message)))
        return int(await handler(client, options, settings, emit))
    finally:
        # Closed even when a signal cancelled the command, and within a bound:
        # closing ends the driver's sessions on the server, and a server that
        # is gone would hold the exit for a whole server-selection timeout.
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_DEADLINE_S) as closing:
            await client.close()
        if closing.cancelled_caught:
            logs.event("client_close_abandoned", "WARNING", "the server did not answer as the client closed; exiting anyway",
                       deadline_s=CLOSE_DEADLINE_S)


async def _warn_without_jobs(client: AsyncMongoClient[Any], settings: Settings) -> None:
    """A database without the jobs collection is most often a wrong --database:
    say so, rather than report no jobs and no watcher as if all were quiet."""
    if await MongoJobStore.from_settings(client[settings.database], settings).jobs_collection_exists() is False:
        logs.event("jobs_collection_missing", "WARNING",
                   f"database {settings.database!r} has no collection {settings.jobs_collection!r} (yet): "
                   "check --database / JOBWATCH_DATABASE and --jobs-collection")


def _json(value: Any) -> str:
    """Any BSON value as relaxed Extended JSON (what mongosh and mongoexport show)."""
    return json_util.dumps(value, json_options=RELAXED)


# -- run ---------------------------------------------------------------------


async def _run(
    client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit, *, stopper: interrupts.Stopper
) -> int:
    if settings.observe:
        logs.event("observe_mode", "WARNING", "observe mode: every decision is computed and logged, nothing is written to the jobs")
    runtime.tune()  # a long-running process: the hot path's garbage collection (watcher.ops.runtime)
    watcher = Watcher(client, settings)
    with stopper.gracefully(watcher.request_stop):
        await watcher.run()
    return exits.OK


# -- sweep -------------------------------------------------------------------


async def _sweep(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
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
        _say(f"sweep: waiting {wait_s:g}s before the pass: {_count(looked.path_a_waiting, 'job')} ({jobs}{more}) "
             "have a collection ahead of a stage counter, which path A raises only once both stood still that long "
             "(--path-a-quiet-s; --dry-run does not wait)")

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


def _say(message: str) -> None:
    """A line for the operator on stderr (not the report: stdout)."""
    print(printable.text(logs.redacted(message), limit=4 * printable.TEXT_CHARS), file=sys.stderr, flush=True)


def render_sweep(report: SweepReport, path_a_quiet_s: float) -> str:
    dry = report.dry_run
    scanned = _count(report.scanned, "open job")
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
        lines.append(f"  {verb}: job {shown(wait.job_id)}: stages {stages} (the collection holds more items than "
                     f"the counter; raised once both stood still {path_a_quiet_s:g}s)")
    if dry:
        totals = (f"{_count(report.jobs_completed, 'job')} would complete, {_count(report.stages_completed, 'stage')} "
                  f"would complete, {_count(report.progress_updated, 'progress update')} would be written")
    else:
        totals = (f"{_count(report.jobs_completed, 'job')} completed, {_count(report.stages_completed, 'stage')} "
                  f"completed, {_count(report.progress_updated, 'progress update')}, {report.stale} changed meanwhile "
                  "(left to the stream)")
    waiting = f", {report.path_a_waiting} waiting for path A" if report.path_a_waiting else ""
    lines.append(f"totals: {totals}, {len(report.skipped)} skipped{waiting}")
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
        emit(render_job(doc, counts) + "\n" + explain.render(printable_evaluation(result)))
    return exits.OK


def render_job(doc: dict[str, Any], counts: Mapping[str, int] | None) -> str:
    """The job as stored, every value printable (documents are data)."""
    shown = printable.value
    lines = [
        f"job {shown(doc.get('_id'))}  type={shown(doc.get('jobType'))}  status={shown(doc.get('status'))}  "
        f"progress={shown(doc.get('progress'))}  "
        f"items={shown(doc.get('completedItems'))}/{shown(doc.get('totalItems'))}  "
        f"collectionId={shown(doc.get('collectionId'))}"
    ]
    stages = doc.get("stages")
    if isinstance(stages, dict):
        for name, stage in stages.items():
            if isinstance(stage, dict):
                actual = f"  collection holds {counts[name]}" if counts and name in counts else ""
                items = f"{shown(stage.get('completedItems'))}/{shown(stage.get('totalItems'))}"
                lines.append(f"  stage {shown(name):<12} {shown(stage.get('status')):<11} {items}{actual}")
            else:
                lines.append(f"  stage {shown(name):<12} {shown(repr(stage))}")
    return "\n".join(lines)


def printable_evaluation(result: rules.Evaluation) -> rules.Evaluation:
    """The evaluation with every text that came from the document printable,
    for ``explain.render``: ids, job type, stage names (in findings and in
    the written paths), and the findings' and rejection's texts, which quote
    document values."""
    shown = printable.value
    return result._replace(
        job_id=shown(result.job_id),
        job_type=shown(result.job_type) if result.job_type else result.job_type,
        completed_stages=tuple(map(shown, result.completed_stages)),
        findings=tuple(
            f._replace(detail=printable.text(f.detail), stage=shown(f.stage) if f.stage else f.stage)
            for f in result.findings
        ),
        rejection=printable.text(result.rejection) if result.rejection else result.rejection,
        writes={shown(path): value for path, value in result.writes.items()},
    )


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
    """Open jobs, one line each with the rule that explains where it stands;
    ``--stuck`` keeps those that should be done or have not moved for
    ``--older-than`` (and exits 1 when there is any)."""
    store = MongoJobStore.from_settings(client[settings.database], settings)
    now = dt.datetime.now(dt.UTC)
    stuck_only = options["stuck"]
    older_than_s = options["older_than_s"]
    if older_than_s is None and stuck_only:
        older_than_s = STUCK_AFTER_S
    listed: list[dict[str, Any]] = []
    # full: every job whose status is not terminal (an unknown or missing one too).
    async for batch in store.open_jobs(full=True, fields=("createdAt", "updatedAt")):
        for doc in batch:
            if isinstance(doc, Unreadable):
                listed.append({"job_id": doc.get("_id"), "jobType": None, "status": None, "idle_s": None,
                               "counters_say_done": False, "why": f"cannot be read as a job (rule 0): {doc.reason}"})
                continue
            result, _ = await _evaluate(store, doc, settings)
            moved = _moved_at(doc)
            idle_s = (now - moved).total_seconds() if moved else None
            done = bool(result.completed_stages) or result.completes_job
            idle = idle_s is not None and older_than_s is not None and idle_s >= older_than_s
            if (done or result.rejection or idle) if stuck_only else (older_than_s is None or idle):
                listed.append({"job_id": doc.get("_id"), "jobType": doc.get("jobType"), "status": doc.get("status"),
                               "idle_s": round(idle_s, 1) if idle_s is not None else None, "counters_say_done": done,
                               "why": why(result)})
    listed.sort(key=lambda job: (not job["counters_say_done"], -(job["idle_s"] or 0)))
    shown = listed[: options["limit"]]
    if options["as_json"]:
        emit(_json({"stuck" if stuck_only else "jobs": shown, "total": len(listed)}))
    else:
        for job in shown:
            emit(render_job_line(job))
        what = "stuck job" if stuck_only else "open job"
        more = f" (first {len(shown)} shown; --limit)" if len(shown) < len(listed) else ""
        emit(f"{_count(len(listed), what)}{more}" if listed else f"no {what}s")
    return exits.FAILED if stuck_only and listed else exits.OK


def render_job_line(job: Mapping[str, Any]) -> str:
    """One line of ``jobs``: id, type, status, how long it has not moved, why."""
    shown = printable.value
    idle = f"idle {_human_s(job['idle_s'])}" if job["idle_s"] is not None else "age unknown"
    job_type = shown(job["jobType"]) if job["jobType"] else "-"
    return f"{shown(job['job_id'])}  {job_type}  {shown(job['status'])}  {idle}  {printable.text(job['why'])}"


def _count(n: int, noun: str) -> str:
    """``1 stuck job``, ``2 stuck jobs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _human_s(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


# -- status ------------------------------------------------------------------


def _partition_count(members: list[Member], views: list[PartitionView], settings: Settings) -> int:
    """The partitions the running instances use (else the newest layout saved,
    else this command's own setting)."""
    counts = [m.partitions for m in members if m.partitions is not None and not m.observe]
    if counts:
        return max(set(counts), key=counts.count)
    heard = [v for v in views if v.heartbeat_age_s is not None]
    if heard:  # nobody runs: the partitioning that last reported
        return min(heard, key=lambda v: v.heartbeat_age_s or 0.0).partitions
    return settings.partitions


def _instance_document(member: Member, default_lease_s: float) -> dict[str, Any]:
    alive = member.alive(default_lease_s)
    age_s, renew_s = member.heartbeat_age_s, member.renew_s
    return {
        "instance": member.instance,
        "alive": alive,
        # Alive, but a heartbeat is overdue: it may be dying (its leases run out at its lease_s).
        "late": alive and age_s is not None and renew_s is not None and age_s > LATE_BEATS * renew_s,
        "role": member.role,
        "observe": member.observe,
        "held": list(member.held),
        "partitions": member.partitions,
        "heartbeat_age_s": member.heartbeat_age_s,
        "version": member.version,
        "host": member.host,
        "pid": member.pid,
        "lease_s": member.lease_s,
        "renew_s": member.renew_s,
    }


def _partition_document(partition: int, view: PartitionView | None) -> dict[str, Any]:
    """One partition: its lease and position, and (under ``heartbeat``, with
    its age) what its holder last reported: that part may be old news."""
    if view is None:
        return {
            "partition": partition,
            "id": None,
            "held": False,
            "holder": None,
            "term": None,
            "lease_expires_in_s": None,
            "position_saved": False,
            "position_age_s": None,
            "position_term": None,
            "heartbeat": None,
        }
    state = view.saved.state
    last_sweep = view.saved.last_sweep
    return {
        "partition": partition,
        "id": view.doc_id,
        "held": view.held,
        "holder": view.holder,
        "term": view.term,
        "lease_expires_in_s": view.expires_in_s,
        "position_saved": view.saved.token is not None,
        "position_age_s": view.position_age_s,
        "position_term": view.position_term,
        "heartbeat": None
        if view.heartbeat_age_s is None
        else {
            "age_s": view.heartbeat_age_s,
            "save_interval_s": view.saved.save_interval_s,
            "backlog": state.get("pendingJobs"),
            "streaming": state.get("streaming"),
            "degraded": state.get("degraded"),
            "last_event_s_before": _number(state.get("lastEventAgoS")),
            "last_sweep_s_before": _number(state.get("lastSweepAgoS")),
            "last_sweep": dict(last_sweep) if last_sweep else None,
        },
    }


def status_document(
    views: list[PartitionView], members: list[Member], open_jobs: list[dict[str, Any]], settings: Settings
) -> dict[str, Any]:
    """Every instance seen lately (alive, or gone within ``RECENTLY_GONE_S``)
    and every partition. ``alive``: each partition has a live holder (a lease
    that has not run out, judged on the server's clock); an instance is alive
    while its heartbeat is younger than ITS OWN lease (the caller's settings
    may differ from the watcher's)."""
    count = _partition_count([m for m in members if m.alive(settings.lease_s)], views, settings)
    by_partition = {v.partition: v for v in views if v.partitions == count}
    partitions = [_partition_document(k, by_partition.get(k)) for k in range(count)]
    seen = [
        m
        for m in members
        if m.alive(settings.lease_s) or (m.heartbeat_age_s is not None and m.heartbeat_age_s < RECENTLY_GONE_S)
    ]
    instances = sorted(
        (_instance_document(m, settings.lease_s) for m in seen), key=lambda i: (not i["alive"], i["instance"])
    )
    return {
        "watcher": settings.watcher_name,
        "alive": all(p["held"] for p in partitions),
        "partition_count": count,
        "unheld": [p["partition"] for p in partitions if not p["held"]],
        "instances": instances,
        "partitions": partitions,
        "open_jobs": [
            {"status": g["_id"].get("status"), "jobType": g["_id"].get("jobType"), "count": g["count"]}
            for g in open_jobs
        ],
    }


def render_status(status: Mapping[str, Any]) -> str:
    unheld = status["unheld"]
    verdict = (
        "every partition has a live holder"
        if not unheld
        else f"NOT alive: no live holder for partition {', '.join(map(str, unheld))}"
    )
    alive = [i for i in status["instances"] if i["alive"]]
    lines = [
        f"watcher {printable.value(status['watcher'])}: {_count(status['partition_count'], 'partition')}; {verdict}",
        f"instances: {len(alive)} alive"
        + (f", {len(status['instances']) - len(alive)} gone" if len(alive) < len(status["instances"]) else ""),
    ]
    for i in status["instances"]:
        if i["alive"]:
            held = ",".join(map(str, i["held"])) or "-"
            late = f" (LATE: it beats every {i['renew_s']:g}s)" if i["late"] else ""
            role = printable.value(i["role"] or "?")
            lines.append(
                f"  {printable.value(i['instance'])}  {role:<8} holds {held:<6} "
                f"heartbeat {_ago(i['heartbeat_age_s'])}{late}  version {printable.value(i['version'] or '?')}"
            )
        else:
            lines.append(f"  {printable.value(i['instance'])}  gone (last heartbeat {_ago(i['heartbeat_age_s'])})")
    for p in status["partitions"]:
        lines += _render_partition(p)
    total = sum(g["count"] for g in status["open_jobs"])
    lines.append(f"open jobs: {total}")
    # Statuses and job types come from the job documents: data, never markup or control characters.
    lines += [
        f"  {g['count']:>7}  {printable.value(g['status']):<12} {printable.value(g['jobType'])}"
        for g in status["open_jobs"]
    ]
    return "\n".join(lines)


def _render_partition(p: Mapping[str, Any]) -> list[str]:
    expires = p["lease_expires_in_s"]
    if p["held"]:
        lease = f"held by {printable.value(p['holder'])}, term {p['term']}, lease runs out in {expires:.1f}s unless renewed"
    elif p["holder"] is not None and expires is not None:
        holder = printable.value(p["holder"])
        lease = f"NO live holder: the lease of {holder} (term {p['term']}) ran out {-expires:.1f}s ago"
    else:
        lease = "NO holder" + (f" (released; last term {p['term']})" if p["term"] is not None else "")
    position = (
        f"saved {_ago(p['position_age_s'])}"
        + (f" by term {p['position_term']}" if p["position_term"] is not None else "")
        if p["position_saved"]
        else "none saved"
    )
    lines = [f"partition {p['partition']}: {lease}", f"  position: {position}"]
    beat = p["heartbeat"]
    if beat is None:
        lines.append("  no heartbeat saved")
        return lines
    mode = (
        "degraded (sweeps only)"
        if beat["degraded"]
        else "streaming"
        if beat["streaming"]
        else "not streaming"
        if beat["streaming"] is not None
        else "unknown"
    )
    lines.append(
        f"  as of its heartbeat {_ago(beat['age_s'])}: stream {mode}; backlog {_or_unknown(beat['backlog'])} jobs; "
        f"last event {_before(beat['last_event_s_before'])}; last sweep {_before(beat['last_sweep_s_before'])}"
    )
    ls = beat["last_sweep"]
    if ls:
        lines.append(
            f"  as of its heartbeat {_ago(beat['age_s'])}: last sweep {printable.value(ls.get('scanned'))} scanned, "
            f"{printable.value(ls.get('jobs_completed'))} jobs completed, {printable.value(ls.get('skipped'))} skipped, "
            f"{printable.value(ls.get('duration_s'))}s"
        )
    return lines


def _ago(age_s: float | None) -> str:
    return "never" if age_s is None else f"{_human_s(age_s)} ago"


def _before(seconds: float | None) -> str:
    return "none" if seconds is None else f"{_human_s(seconds)} before it"


def _or_unknown(value: Any) -> str:
    return "unknown" if value is None else printable.value(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value == value else None


async def _status(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    positions = client[settings.database][settings.positions_collection]
    views = await survey.partitions(positions, settings.watcher_name)
    members = await survey.instances(positions, settings.watcher_name)
    open_jobs = await MongoJobStore.from_settings(client[settings.database], settings).count_open()
    status = status_document(views, members, open_jobs, settings)
    emit(json.dumps(status, default=str) if options["as_json"] else render_status(status))
    return exits.FAILED if options["check"] and not status["alive"] else exits.OK


# -- position ----------------------------------------------------------------


async def _position_show(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    views = await survey.partitions(client[settings.database][settings.positions_collection], settings.watcher_name)
    positions: list[dict[str, Any]] = [
        {
            "id": v.doc_id,
            "partition": v.partition,
            "partitions": v.partitions,
            "token": dict(v.saved.token) if v.saved.token else None,
            "saved_at": v.saved.saved_at,
            "position_age_s": v.position_age_s,
            "term": v.position_term,
            "heartbeat_at": v.saved.heartbeat_at,
            "save_interval_s": v.saved.save_interval_s,
        }
        for v in views
    ]
    if options["as_json"]:
        emit(_json({"watcher": settings.watcher_name, "positions": positions}))
        return exits.OK
    saved = [p for p in positions if p["token"] is not None]
    if not saved:
        emit(f"watcher {settings.watcher_name!r}: no position saved (the next start streams from then and sweeps)")
    for p in saved:
        where = f"partition {p['partition']} of {p['partitions']}" if p["partitions"] > 1 else "position"
        emit(
            f"watcher {settings.watcher_name!r} {where}: saved {_ago(p['position_age_s'])} ({p['saved_at']})"
            + (f" by term {p['term']}" if p["term"] is not None else "")
            + f"\ntoken: {_json(p['token'])}"
        )
    return exits.OK


async def _position_reset(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    where = f"{settings.database}.{settings.positions_collection}, watcher {settings.watcher_name!r}"
    if not options["yes"]:
        _fail(
            f"this {'replaces' if options['to_now'] else 'forgets'} the saved positions of {where}; "
            "stop the watcher first, then add --yes"
        )
        return exits.USAGE
    positions = client[settings.database][settings.positions_collection]
    running = await _running_now(positions, settings)
    if running and not options["force"]:
        _fail(
            f"{running}: it would write its own position back at its next save. Stop every instance first, "
            "or add --force to reset anyway"
        )
        return exits.USAGE
    if options["to_now"]:
        token = await _current_token(client, settings)
        members = [m for m in await survey.instances(positions, settings.watcher_name) if m.alive(settings.lease_s)]
        count = _partition_count(members, await survey.partitions(positions, settings.watcher_name), settings)
        await survey.set_positions(positions, settings.watcher_name, count, token)
        emit(f"positions of {where} ({count} partition{'s' if count != 1 else ''}) set to now: {_json(dict(token))}")
    else:
        await survey.forget_positions(positions, settings.watcher_name)
        emit(f"positions of {where} forgotten: the next start streams from then, and its start-up sweep covers the gap")
    return exits.OK


async def _running_now(positions: Any, settings: Settings) -> str | None:
    """The instance (or lease holder) that shows this watcher name is running, said in one line; None if none does."""
    members = [
        m
        for m in await survey.instances(positions, settings.watcher_name)
        if m.alive(settings.lease_s) and not m.observe
    ]
    if members:
        m = min(members, key=lambda m: (m.role != "leader", m.heartbeat_age_s or 0.0))  # a leader first
        more = f" (and {len(members) - 1} more)" if len(members) > 1 else ""
        seen = f"{m.role}, heartbeat {_ago(m.heartbeat_age_s)}"
        return f"instance {m.instance} of watcher {settings.watcher_name!r} is running ({seen}){more}"
    held = [v for v in await survey.partitions(positions, settings.watcher_name) if v.held]
    if held:
        v = held[0]
        name = settings.watcher_name
        return f"{v.holder} holds the lease of watcher {name!r} partition {v.partition} for {v.expires_in_s:.1f}s more"
    return None


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
    progress = Progress("simulate")
    shown: list[str | None] = [None]  # what the progress line says now (None: nothing)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_showing, progress, lambda: shown[0])
            code = await _simulate_batches(client[settings.database], settings, plan, options, emit, progress, shown)
            tg.cancel_scope.cancel()
    finally:
        progress.close()
    return code


async def _simulate_batches(
    db: Any,
    settings: Settings,
    plan: simulate.Plan,
    options: Options,
    emit: Emit,
    progress: Progress,
    shown: list[str | None],
) -> int:
    """Batches of jobs until one is done (or forever with ``--repeat``);
    ``shown[0]`` is kept saying where it is."""
    total = plan.jobs * len(plan.stages) * plan.items

    def counted(done: int) -> None:
        shown[0] = f"{done}/{total} increments"

    while True:
        shown[0] = f"creating {_count(plan.jobs, 'job')}"
        outcome = await simulate.play(db, settings, plan, on_increment=counted)
        shown[0] = None
        progress.close()
        rate = outcome.increments / outcome.elapsed_s if outcome.elapsed_s else 0.0
        emit(f"simulate: {_count(len(outcome.job_ids), 'job')}, {outcome.increments} increments "
             f"({outcome.lost} lost on purpose) in {outcome.elapsed_s:.2f}s ({rate:.0f}/s)")
        if options["wait_s"] > 0:
            completed = 0
            with anyio.move_on_after(options["wait_s"]):
                while (completed := await simulate.count_completed(db, settings, outcome.job_ids)) < len(outcome.job_ids):
                    shown[0] = f"waiting for the watcher: {completed}/{len(outcome.job_ids)} jobs Completed"
                    await anyio.sleep(0.1)
            shown[0] = None
            progress.close()
            emit(f"simulate: {completed}/{len(outcome.job_ids)} jobs Completed")
            if completed < len(outcome.job_ids) and not options["repeat"]:
                return exits.FAILED
        if not options["repeat"]:
            return exits.OK
