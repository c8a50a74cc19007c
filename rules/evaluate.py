"""The completion rules of DESIGN.md, as one pure function.

Reading order: ``evaluate`` walks the rules in their numbered order. Each
rule adds findings (for ``explain``), writes, and the guard conditions that
the writes rely on. Counters are only ever raised (``$max``) and statuses
only ever move from open to ``Completed``; a job that is already terminal
is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rules import model
from rules.decision import (
    SERVER_NOW,
    AtLeast,
    Condition,
    Equals,
    Evaluation,
    Finding,
    Outcome,
    Raise,
    StageNames,
    WriteValue,
)
from rules.model import Job, Stage
from rules.status import Status

STAGE_DONE_MESSAGE = "All {total} items processed"
EMPTY_STAGE_MESSAGE = "No items to process"
JOB_DONE_MESSAGE = "All stages completed successfully"
#: An open job shows at most this much progress: 100 means Completed.
OPEN_PROGRESS_CAP = 99


@dataclass(frozen=True, slots=True)
class Policy:
    """Knobs of the rules that are configuration, not code.

    ``scan_stage`` names the stage whose completion with zero items means
    "the collection was empty": it lets zero-item stages complete instead of
    waiting forever (rule 6).
    """

    scan_stage: str = "scan"


DEFAULT_POLICY = Policy()


def evaluate(
    job_doc: Mapping[str, Any],
    *,
    collection_counts: Mapping[str, int] | None = None,
    policy: Policy = DEFAULT_POLICY,
) -> Evaluation:
    """Decide what, if anything, must change on ``job_doc``.

    ``collection_counts`` is the seed's path A: the actual number of items per
    stage found in the job's collection (e.g. ``{"thumbnail": 132}``); they
    may raise a stage's counter, never lower it.

    >>> doc = {"_id": 1, "status": "Pending", "stages": {
    ...     "thumbnail": {"status": "InProgress", "completedItems": 132, "totalItems": 132}}}
    >>> result = evaluate(doc)
    >>> result.outcome.value, result.writes["status"]
    ('job_completed', 'Completed')

    Never raises for a bad document: it returns ``Outcome.REJECTED`` instead.
    """
    parsed = model.parse_job(job_doc)
    if isinstance(parsed, model.Rejection):
        return Evaluation(
            job_id=parsed.job_id,
            outcome=Outcome.REJECTED,
            rejection=parsed.reason,
            findings=(Finding(0, "document is readable", False, parsed.reason),),
        )
    plan = _Plan(job=parsed, raw=job_doc)
    if not parsed.status.is_open:
        plan.note(5, "terminal jobs are never touched", False, f"job is {parsed.status.value}; nothing to do")
        return plan.result(Outcome.TERMINAL)
    plan.guard["status"] = Equals(job_doc.get("status"))

    counts = _clean_counts(collection_counts)
    completed = {name: _reconcile(plan, name, stage, counts) for name, stage in parsed.stages.items()}
    done = {name: _stage_rule(plan, name, stage, completed[name], policy) for name, stage in parsed.stages.items()}
    if _job_rule(plan, done):
        return plan.result(Outcome.JOB_COMPLETED)
    _progress_rule(plan, done, completed)
    if plan.completed_stages:
        return plan.result(Outcome.STAGE_COMPLETED)
    return plan.result(Outcome.PROGRESS if plan.writes else Outcome.UNCHANGED)


@dataclass
class _Plan:
    """Accumulates one evaluation's findings, writes and guard."""

    job: Job
    raw: Mapping[str, Any]
    writes: dict[str, WriteValue] = field(default_factory=dict)
    guard: dict[str, Condition] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    completed_stages: list[str] = field(default_factory=list)
    raised_counters: set[str] = field(default_factory=set)

    def note(self, rule: int, title: str, holds: bool, detail: str, stage: str | None = None) -> None:
        self.findings.append(Finding(rule, title, holds, detail, stage))

    def raw_stage(self, name: str) -> Mapping[str, Any]:
        stage = self.raw.get("stages", {}).get(name)
        return stage if isinstance(stage, Mapping) else {}

    def pin(self, path: str, raw: object) -> None:
        self.guard[path] = Equals(raw)

    def pin_counter(self, name: str, raw: object, at_least: int | None = None) -> None:
        """Guard a consumer-owned counter: growth is fine, anything else is not.

        ``at_least`` defaults to the value read; a completion passes the total,
        which is exactly what it relied on.
        """
        path = f"stages.{name}.completedItems"
        if name in self.raised_counters:
            return  # our own $max in this update establishes the value
        if _is_number(raw):
            self.guard[path] = AtLeast(raw if at_least is None else at_least)
        else:
            self.guard[path] = Equals(raw)

    def raise_to(self, path: str, raw: object, value: int) -> None:
        """Raise a field to ``value`` without ever lowering it.

        ``$max`` only compares numbers with numbers; a legacy value stored as
        text is replaced instead, under a guard that it is still that text.
        """
        if raw is None or _is_number(raw):
            self.writes[path] = Raise(value)
        else:
            self.writes[path] = value
            self.pin(path, raw)

    def result(self, outcome: Outcome) -> Evaluation:
        return Evaluation(
            job_id=self.job.id,
            job_type=self.job.job_type,
            outcome=outcome,
            writes=MappingProxyType(self.writes),
            guard=MappingProxyType(self.guard if self.writes else {}),
            completed_stages=tuple(self.completed_stages),
            findings=tuple(self.findings),
        )


def _is_number(raw: object) -> bool:
    return isinstance(raw, (int, float)) and not isinstance(raw, bool)


def _clean_counts(counts: Mapping[str, int] | None) -> dict[str, int]:
    if not counts:
        return {}
    clean: dict[str, int] = {}
    for name, value in counts.items():
        try:
            clean[name] = model.read_count(value)
        except ValueError:
            continue  # an unreadable count is no evidence; path B still applies
    return clean


def _reconcile(plan: _Plan, name: str, stage: Stage, counts: Mapping[str, int]) -> int:
    """Rule 4: the collection's actual items may raise a stage's counter."""
    if name not in counts:
        return stage.completed
    actual = counts[name]
    if not stage.status.is_open:
        plan.note(4, "collection counts raise counters", False, f"stage is {stage.status.value}; left as it is", name)
        return stage.completed
    if actual <= stage.completed:
        plan.note(4, "collection counts raise counters", False, f"collection holds {actual}, counter already {stage.completed}", name)
        return stage.completed
    path = f"stages.{name}.completedItems"
    plan.raise_to(path, plan.raw_stage(name).get("completedItems"), actual)
    plan.raised_counters.add(name)
    plan.note(4, "collection counts raise counters", True, f"collection holds {actual}; counter raised from {stage.completed} ($max)", name)
    return actual


def _stage_rule(plan: _Plan, name: str, stage: Stage, completed: int, policy: Policy) -> bool:
    """Rule 1 (and rule 6's zero-item answer). Returns whether the stage ends Completed."""
    title = "stage done -> Completed"
    raw = plan.raw_stage(name)
    if stage.status is Status.COMPLETED:
        plan.note(1, title, True, "already Completed", name)
        return True
    if stage.status.is_explicit_stop:
        plan.note(1, title, False, f"marked {stage.status.value}; the watcher never overrides that", name)
        return False
    shown_status = raw.get("status") or "no status"
    if stage.total > 0 and completed >= stage.total:
        detail = f"{completed}/{stage.total} items, {shown_status} -> Completed"
        if completed > stage.total:
            detail += " (counter above total; progress capped at 100)"
        plan.note(1, title, True, detail, name)
        plan.pin_counter(name, raw.get("completedItems"), stage.total)
        _complete_stage(plan, name, raw, STAGE_DONE_MESSAGE.format(total=stage.total))
        return True
    if stage.total == 0 and name != policy.scan_stage and _scan_found_nothing(plan, policy):
        plan.note(6, "zero items", True, f"the {policy.scan_stage!r} stage completed with 0 items: nothing to process -> Completed", name)
        plan.pin(f"stages.{name}.completedItems", raw.get("completedItems"))
        _complete_stage(plan, name, raw, EMPTY_STAGE_MESSAGE)
        return True
    if stage.total == 0:
        plan.note(1, title, False, f"totalItems is 0 and no completed {policy.scan_stage!r} stage says there is nothing to do: waiting", name)
    else:
        plan.note(1, title, False, f"{completed}/{stage.total} items; waiting for {stage.total - completed} more", name)
    return False


def _scan_found_nothing(plan: _Plan, policy: Policy) -> bool:
    scan = plan.job.stages.get(policy.scan_stage)
    if scan is None or scan.status is not Status.COMPLETED or scan.total != 0:
        return False
    raw = plan.raw_stage(policy.scan_stage)
    plan.pin(f"stages.{policy.scan_stage}.status", raw.get("status"))
    plan.pin(f"stages.{policy.scan_stage}.totalItems", raw.get("totalItems"))
    return True


def _complete_stage(plan: _Plan, name: str, raw: Mapping[str, Any], message: str) -> None:
    prefix = f"stages.{name}"
    plan.pin(f"{prefix}.status", raw.get("status"))
    plan.pin(f"{prefix}.totalItems", raw.get("totalItems"))
    plan.writes[f"{prefix}.status"] = Status.COMPLETED.value
    plan.writes[f"{prefix}.progress"] = 100
    plan.writes[f"{prefix}.message"] = message
    plan.writes[f"{prefix}.completedAt"] = SERVER_NOW
    plan.completed_stages.append(name)


def _job_rule(plan: _Plan, done: Mapping[str, bool]) -> bool:
    """Rule 2: all stages Completed -> job Completed, in the same update."""
    title = "all stages done -> job Completed"
    if not done:
        plan.note(2, title, False, "the job has no stages: nothing says its work is done (rule 6)")
        return False
    waiting = [name for name, is_done in done.items() if not is_done]
    if waiting:
        stopped = [f"{name} is {plan.job.stages[name].status.value}" for name in waiting if plan.job.stages[name].status.is_explicit_stop]
        detail = f"{len(done) - len(waiting)}/{len(done)} stages Completed; waiting for {', '.join(waiting)}"
        if stopped:
            detail += f"; blocked: {', '.join(stopped)} (the job stays open: failing a job is the service's decision)"
        plan.note(2, title, False, detail)
        return False
    for name in done:
        if name not in plan.completed_stages:
            plan.pin(f"stages.{name}.status", plan.raw_stage(name).get("status"))
    plan.guard["stages"] = StageNames(tuple(done))
    total = max(plan.job.total, _items_total(plan.job))
    plan.note(2, title, True, f"all {len(done)} stages Completed -> job Completed, progress 100, {total}/{total} items")
    plan.writes.update(
        {
            "status": Status.COMPLETED.value,
            "progress": 100,
            "totalItems": total,
            "completedItems": total,
            "message": JOB_DONE_MESSAGE,
            "completedAt": SERVER_NOW,
        }
    )
    for path in ("totalItems", "completedItems", "progress"):
        plan.pin(path, plan.raw.get(path))
    return True


def _items_total(job: Job) -> int:
    """Items of the job: every item passes through every stage, so the job has
    as many items as its largest stage (two stages of 132 -> 132, not 264)."""
    return max((stage.total for stage in job.stages.values()), default=0)


def _progress_rule(plan: _Plan, done: Mapping[str, bool], completed: Mapping[str, int]) -> None:
    """Rule 3: while open, progress and job counters follow the stages (raise only)."""
    title = "open job tracks its stages"
    stages = plan.job.stages
    if not stages:
        plan.note(3, title, False, "no stages to track")
        return
    fractions: list[float] = []
    finished: list[int] = []
    stage_progress_written = False
    for name, stage in stages.items():
        count = completed[name]
        if done[name]:
            fractions.append(1.0)
            finished.append(stage.total)
            continue
        fraction = min(count, stage.total) / stage.total if stage.total > 0 else 0.0
        fractions.append(fraction)
        finished.append(min(count, stage.total))
        if stage.status.is_open:
            stage_progress_written |= _track_stage(plan, name, stage, fraction)
    progress = min(OPEN_PROGRESS_CAP, math.floor(100 * sum(fractions) / len(fractions)))
    targets = {"progress": progress, "totalItems": _items_total(plan.job), "completedItems": min(finished)}
    current = {"progress": plan.job.progress, "totalItems": plan.job.total, "completedItems": plan.job.completed}
    raised = [path for path, value in targets.items() if value > current[path]]
    for path in raised:
        plan.raise_to(path, plan.raw.get(path), targets[path])
    if raised or stage_progress_written:
        _pin_stage_inputs(plan)
    shown = ", ".join(f"{path} {current[path]} -> {targets[path]}" for path in raised) or "already up to date"
    plan.note(3, title, bool(raised), f"progress {progress}%, {min(finished)}/{targets['totalItems']} items: {shown}")


def _track_stage(plan: _Plan, name: str, stage: Stage, fraction: float) -> bool:
    """Raise an open stage's progress; True if that needs a write."""
    progress = min(OPEN_PROGRESS_CAP, math.floor(100 * fraction))
    if progress <= stage.progress:
        return False
    plan.raise_to(f"stages.{name}.progress", plan.raw_stage(name).get("progress"), progress)
    return True


def _pin_stage_inputs(plan: _Plan) -> None:
    """A progress write relied on every stage's counters and on the stage set."""
    plan.guard["stages"] = StageNames(tuple(plan.job.stages))
    for name in plan.job.stages:
        raw = plan.raw_stage(name)
        plan.pin(f"stages.{name}.totalItems", raw.get("totalItems"))
        plan.guard.setdefault(f"stages.{name}.status", Equals(raw.get("status")))
        plan.pin_counter(name, raw.get("completedItems"))
