"""``jobwatch explain`` (one job, rule by rule) and ``jobwatch jobs`` (the open ones, each with the rule
that explains where it stands; ``--stuck``)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient

import rules
from rules import explain as explained
from watcher.cli import exits
from watcher.cli.commands import output
from watcher.cli.commands.output import Emit, Options
from watcher.decide import updates
from watcher.intake import sweep
from watcher.ops import printable
from watcher.settings import Settings
from watcher.storage.store import MongoJobStore, Unreadable

#: ``jobs --stuck``: an open job that has not moved for this long counts as stuck (``--older-than``).
STUCK_AFTER_S = 600.0

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


def evaluate(
    doc: dict[str, Any], counts: Mapping[Any, Mapping[str, int]], policy: rules.Policy
) -> tuple[rules.Evaluation, Mapping[str, int] | None]:
    """The job's evaluation, explained, and its collection's counts (``counts``:
    what ``collection_counts`` answered for its batch)."""
    found = sweep.counts_for(doc, counts)
    return rules.evaluate(doc, collection_counts=found, policy=policy, explain=True), found


async def explain(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    store = MongoJobStore.from_settings(client[settings.database], settings)
    doc = None
    for job_id in candidate_ids(options["job_id"]):
        doc = await store.get(job_id)
        if doc is not None:
            break
    if doc is None:
        shown = (
            options["job_id"] if len(options["job_id"]) <= 80 else options["job_id"][:77] + "..."
        )  # one short line, whatever was typed
        output.fail(
            f"no job with _id {shown!r} in {settings.database}.{settings.jobs_collection} "
            "(looked for an ObjectId and a string id)"
        )
        return exits.FAILED
    counts = await store.collection_counts(sweep.collection_ids([doc]))
    result, found = evaluate(doc, counts, rules.Policy(scan_stage=settings.scan_stage))
    if options["as_json"]:
        emit(output.extended_json(evaluation_document(result, doc, found)))
    else:
        emit(render_job(doc, found) + "\n" + explained.render(printable_evaluation(result)))
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


def evaluation_document(
    result: rules.Evaluation, doc: dict[str, Any], counts: Mapping[str, int] | None
) -> dict[str, Any]:
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
        "explain": explained.render(result),
    }


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


def moved_at(doc: Mapping[str, Any]) -> dt.datetime | None:
    for field in ("updatedAt", "createdAt"):
        value = doc.get(field)
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(doc.get("_id"), ObjectId):
        generated: dt.datetime = doc["_id"].generation_time
        return generated
    return None


async def list_jobs(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    """Open jobs, one line each with the rule that explains where it stands;
    ``--stuck`` keeps those that should be done or have not moved for
    ``--older-than`` (and exits 1 when there is any)."""
    store = MongoJobStore.from_settings(client[settings.database], settings)
    now = dt.datetime.now(dt.UTC)
    stuck_only = options["stuck"]
    older_than_s = options["older_than_s"]
    if older_than_s is None and stuck_only:
        older_than_s = STUCK_AFTER_S
    policy = rules.Policy(scan_stage=settings.scan_stage)
    listed: list[dict[str, Any]] = []
    # full: every job whose status is not terminal (an unknown or missing one too).
    async for batch in store.open_jobs(full=True, fields=("createdAt", "updatedAt")):
        counts = await store.collection_counts(sweep.collection_ids(batch))  # one round trip a batch
        for doc in batch:
            if isinstance(doc, Unreadable):
                listed.append(
                    {
                        "job_id": doc.get("_id"),
                        "jobType": None,
                        "status": None,
                        "idle_s": None,
                        "counters_say_done": False,
                        "why": f"cannot be read as a job (rule 0): {doc.reason}",
                    }
                )
                continue
            result, _ = evaluate(doc, counts, policy)
            moved = moved_at(doc)
            idle_s = (now - moved).total_seconds() if moved else None
            done = result.completes_stage or result.completes_job
            idle = idle_s is not None and older_than_s is not None and idle_s >= older_than_s
            if (done or result.rejection or idle) if stuck_only else (older_than_s is None or idle):
                listed.append(
                    {
                        "job_id": doc.get("_id"),
                        "jobType": doc.get("jobType"),
                        "status": doc.get("status"),
                        "idle_s": round(idle_s, 1) if idle_s is not None else None,
                        "counters_say_done": done,
                        "why": why(result),
                    }
                )
    listed.sort(key=lambda job: (not job["counters_say_done"], -(job["idle_s"] or 0)))
    shown = listed[: options["limit"]]
    if options["as_json"]:
        emit(output.extended_json({"stuck" if stuck_only else "jobs": shown, "total": len(listed)}))
    else:
        for job in shown:
            emit(render_job_line(job))
        what = "stuck job" if stuck_only else "open job"
        more = f" (first {len(shown)} shown; --limit)" if len(shown) < len(listed) else ""
        emit(f"{output.count(len(listed), what)}{more}" if listed else f"no {what}s")
    return exits.FAILED if stuck_only and listed else exits.OK


def render_job_line(job: Mapping[str, Any]) -> str:
    """One line of ``jobs``: id, type, status, how long it has not moved, why."""
    shown = printable.value
    idle = f"idle {output.human_s(job['idle_s'])}" if job["idle_s"] is not None else "age unknown"
    job_type = shown(job["jobType"]) if job["jobType"] else "-"
    return f"{shown(job['job_id'])}  {job_type}  {shown(job['status'])}  {idle}  {printable.text(job['why'])}"
