"""The completion rules, as one pure function: ``evaluate``.

Reading order: ``evaluate`` reads the document (``rules.model``), returns at
once for an unreadable or terminal job, then walks the stages once: rule 4
(the collection's counts) and rule 1 (stage done, with rule 6's zero-item
answer) per stage, collecting what rule 3 needs on the way; then rule 2 (job
done) or rule 3 (progress). Each rule adds writes and the guard conditions
those writes rely on, and, only when ``explain=True``, a ``Finding``.
Counters are only ever raised (``$max``) and statuses only ever move from
open to ``Completed``; a job that is already terminal is never touched.

This runs for every change event, so it avoids work it can: no validation
library, no text formatting unless explain is asked, field paths built once
per stage name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from rules import model, shared
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
from rules.status import TERMINAL, Status

STAGE_DONE_MESSAGE = "All {total} items processed"
EMPTY_STAGE_MESSAGE = "No items to process"
JOB_DONE_MESSAGE = "All stages completed successfully"
#: An open job shows at most this much progress: 100 means Completed.
OPEN_PROGRESS_CAP = 99
#: Job progress is computed exactly (integers over the stage totals' least
#: common multiple) while that multiple stays below this; only pathological
#: documents (many huge coprime totals) fall back to floating point.
_EXACT_PROGRESS_LIMIT = 2**64


@dataclass(frozen=True, slots=True)
class Policy:
    """Knobs of the rules that are configuration, not code.

    ``scan_stage`` names the stage whose completion with zero items means
    "the collection was empty": it lets zero-item stages complete instead of
    waiting forever (rule 6).
    """

    scan_stage: str = "scan"


DEFAULT_POLICY = Policy()

_Trace = list[Finding] | None
_NO_COUNTS: Mapping[str, int] = MappingProxyType({})


def evaluate(
    job_doc: Mapping[str, Any],
    *,
    collection_counts: Mapping[str, int] | None = None,
    policy: Policy = DEFAULT_POLICY,
    explain: bool = False,
) -> Evaluation:
    """Decide what, if anything, must change on ``job_doc``.

    ``collection_counts`` is the seed's path A: the actual number of items per
    stage found in the job's collection (e.g. ``{"thumbnail": 132}``); they
    may raise a stage's counter, never lower it. ``explain=True`` records the
    rule-by-rule ``findings`` (for ``rules.explain.render``).

    >>> doc = {"_id": 1, "status": "Pending", "stages": {
    ...     "thumbnail": {"status": "InProgress", "completedItems": 132, "totalItems": 132}}}
    >>> result = evaluate(doc)
    >>> result.outcome.value, result.writes["status"]
    ('job_completed', 'Completed')

    Never raises for a bad document: it returns ``Outcome.REJECTED`` instead.
    """
    trace: _Trace = [] if explain else None
    job = model.read_job(job_doc)
    if isinstance(job, model.Rejection):
        if trace is not None:
            trace.append(Finding(0, "document is readable", False, job.reason))
        return Evaluation(job.job_id, Outcome.REJECTED, findings=_findings(trace), rejection=job.reason)
    if job[2] in TERMINAL:
        if trace is not None:
            trace.append(Finding(5, "terminal jobs are never touched", False, f"job is {job[2].value}; nothing to do"))
        return Evaluation(job[0], Outcome.TERMINAL, findings=_findings(trace), job_type=job[1])
    counts = _clean_counts(collection_counts) if collection_counts else _NO_COUNTS
    return _decide(job, counts, policy, trace)


def _findings(trace: _Trace) -> tuple[Finding, ...]:
    return () if trace is None else tuple(trace)


class _Paths(NamedTuple):
    status: str
    total: str
    completed: str
    progress: str
    message: str
    completed_at: str


def _stage_paths(name: str) -> _Paths:
    prefix = f"stages.{name}."
    return _Paths(*(prefix + leaf for leaf in ("status", "totalItems", "completedItems", "progress", "message", "completedAt")))


# Built once per distinct value (see rules.shared): paths per stage name, and
# the guard conditions and raises that recur on every event. Keys carry the
# value's type where types can mix, so 1, 1.0, Int64(1) and True stay apart.
_PATHS: shared.Memo[str, _Paths] = shared.Memo(_stage_paths)
_EQUALS_PLAIN: shared.Memo[int | str, Condition] = shared.Memo(Equals)  # exact int or str only
_EQUALS_TYPED: shared.Memo[tuple[type, Any], Condition] = shared.Memo(lambda key: Equals(key[1]))
_AT_LEAST: shared.Memo[tuple[type, Any], Condition] = shared.Memo(lambda key: AtLeast(key[1]))
_STAGE_NAMES: shared.Memo[tuple[str, ...], Condition] = shared.Memo(StageNames)
_RAISES: shared.Memo[int, Raise] = shared.Memo(Raise)  # values are always plain ints
_EQUALS_NONE = Equals(None)
_DONE_MESSAGES: shared.Memo[int, str] = shared.Memo(lambda total: STAGE_DONE_MESSAGE.format(total=total))


def _equals(raw: Any) -> Condition:
    if raw is None:
        return _EQUALS_NONE
    if type(raw) is str or type(raw) is int:
        return _EQUALS_PLAIN[raw]
    try:
        return _EQUALS_TYPED[(type(raw), raw)]
    except TypeError:  # unhashable (Decimal128): made fresh
        return Equals(raw)


def _counter_guard(raw: Any, at_least: int | None = None) -> Condition:
    """Guard a consumer-owned counter: growth is fine (``$gte``), anything else
    is not. Text (and Decimal128, conservatively) cannot be ``$gte``'d: pinned."""
    if type(raw) is int or (isinstance(raw, (int, float)) and not isinstance(raw, bool)):
        bound = raw if at_least is None else at_least
        return _AT_LEAST[(type(bound), bound)]
    return _equals(raw)


def _decide(job: model.JobRow, counts: Mapping[str, int], policy: Policy, trace: _Trace) -> Evaluation:
    job_id, job_type, _, job_raw_status, job_progress, job_total, job_completed, job_raw_progress, job_raw_total, job_raw_completed, stages = job
    if not stages:
        if trace is not None:
            trace.append(Finding(2, "all stages done -> job Completed", False, "the job has no stages: nothing says its work is done (rule 6)"))
            trace.append(Finding(3, "open job tracks its stages", False, "no stages to track"))
        return Evaluation(job_id, Outcome.UNCHANGED, findings=_findings(trace), job_type=job_type)

    writes: dict[str, WriteValue] = {}
    guard: dict[str, Condition] = {"status": _equals(job_raw_status)}
    completed_stages: list[str] = []
    raised: list[str] = []  # stages whose counter our own $max establishes
    already_done: list[model.StageRow] = []
    waiting: list[model.StageRow] = []
    shares: list[tuple[int, int]] = []  # (items counted, total) per stage, for rule 3
    stage_progress: list[tuple[str, Any, int]] = []
    items_total = 0
    through_all = model.INT64_MAX  # items that passed every stage
    empty_scan: model.StageRow | None = None  # rule 6's evidence, looked up once when needed
    scan_known = False

    # One pass: rule 4 and rule 1 per stage, and what rules 2 and 3 need.
    for stage in stages:
        name, status, total, count, progress, raw_status, raw_total, raw_completed, raw_progress = stage
        paths = _PATHS[name]
        if name in counts:
            reconciled = _reconcile(stage, paths, counts[name], writes, guard, trace)
            if reconciled != count:
                raised.append(name)
                count = reconciled
        if status is Status.COMPLETED:
            done = True
            already_done.append(stage)
            if trace is not None:
                trace.append(Finding(1, "stage done -> Completed", True, "already Completed", name))
        elif status is Status.FAILED or status is Status.CANCELLED:
            done = False
            if trace is not None:
                trace.append(Finding(1, "stage done -> Completed", False, f"marked {status.value}; the watcher never overrides that", name))
        elif total > 0 and count >= total:
            done = True
            if trace is not None:
                _note_done(trace, stage, count)
            if name not in raised:
                guard[paths.completed] = _counter_guard(raw_completed, total)
            _complete_stage(paths, raw_status, raw_total, _DONE_MESSAGES[total], writes, guard)
            completed_stages.append(name)
        elif total == 0 and name != policy.scan_stage:
            if not scan_known:
                empty_scan, scan_known = _empty_scan(stages, policy), True
            done = empty_scan is not None
            if empty_scan is not None:
                scan_paths = _PATHS[empty_scan[0]]
                guard[scan_paths.status] = _equals(empty_scan[5])
                guard[scan_paths.total] = _equals(empty_scan[6])
                if trace is not None:
                    trace.append(Finding(6, "zero items", True, f"the {policy.scan_stage!r} stage completed with 0 items: nothing to process -> Completed", name))
                guard[paths.completed] = _equals(raw_completed)
                _complete_stage(paths, raw_status, raw_total, EMPTY_STAGE_MESSAGE, writes, guard)
                completed_stages.append(name)
            elif trace is not None:
                _note_waiting(trace, stage, count, policy)
        else:
            done = False
            if trace is not None:
                _note_waiting(trace, stage, count, policy)

        if total > items_total:
            items_total = total
        if done:
            shares.append((1, 1))
            if total < through_all:
                through_all = total
            continue
        waiting.append(stage)
        counted = count if count < total else total
        shares.append((counted, total) if total > 0 else (0, 1))
        if counted < through_all:
            through_all = counted
        if total > 0 and status is not Status.FAILED and status is not Status.CANCELLED:
            percent = min(OPEN_PROGRESS_CAP, 100 * counted // total)
            if percent > progress:
                stage_progress.append((paths.progress, raw_progress, percent))

    if not waiting:
        total = job_total if job_total > items_total else items_total
        _complete_job(job, already_done, total, writes, guard, trace)
        return _result(job_id, job_type, Outcome.JOB_COMPLETED, writes, guard, completed_stages, trace)
    if trace is not None:
        _note_job_waits(trace, stages, waiting)

    # Rule 3: while open, progress and job counters follow the stages (raise only).
    progress = _mean_percent(shares)
    moved: list[str] = []
    if progress > job_progress:
        _raise_to("progress", job_raw_progress, progress, writes, guard)
        moved.append("progress")
    if items_total > job_total:
        _raise_to("totalItems", job_raw_total, items_total, writes, guard)
        moved.append("totalItems")
    if through_all > job_completed:
        _raise_to("completedItems", job_raw_completed, through_all, writes, guard)
        moved.append("completedItems")
    for path, raw, percent in stage_progress:
        _raise_to(path, raw, percent, writes, guard)
    if moved or stage_progress:
        _pin_stage_inputs(stages, raised, guard)
    if trace is not None:
        before = {"progress": job_progress, "totalItems": job_total, "completedItems": job_completed}
        after = {"progress": progress, "totalItems": items_total, "completedItems": through_all}
        shown = ", ".join(f"{path} {before[path]} -> {after[path]}" for path in moved) or "already up to date"
        trace.append(Finding(3, "open job tracks its stages", bool(moved), f"progress {progress}%, {through_all}/{items_total} items: {shown}"))
    if completed_stages:
        return _result(job_id, job_type, Outcome.STAGE_COMPLETED, writes, guard, completed_stages, trace)
    return _result(job_id, job_type, Outcome.PROGRESS if writes else Outcome.UNCHANGED, writes, guard, completed_stages, trace)


_EMPTY: Mapping[str, Any] = MappingProxyType({})
_new_evaluation = tuple.__new__  # all eight fields given: skips the NamedTuple's Python-level __new__


def _result(job_id: Any, job_type: Any, outcome: Outcome, writes: dict[str, WriteValue], guard: dict[str, Condition], completed: list[str], trace: _Trace) -> Evaluation:
    return _new_evaluation(
        Evaluation,
        (
            job_id,
            outcome,
            MappingProxyType(writes) if writes else _EMPTY,
            MappingProxyType(guard) if writes else _EMPTY,
            tuple(completed),
            () if trace is None else tuple(trace),
            None,
            job_type,
        ),
    )


def _clean_counts(counts: object) -> dict[str, int]:
    if not isinstance(counts, Mapping):
        return {}
    clean: dict[str, int] = {}
    for name, value in counts.items():
        if type(name) is not str:
            continue
        try:
            clean[name] = model.read_count(value)
        except model.Unreadable:
            continue  # an unreadable count is no evidence; path B still applies
    return clean


def _raise_to(path: str, raw: object, value: int, writes: dict[str, WriteValue], guard: dict[str, Condition]) -> None:
    """Raise a field to ``value`` without ever lowering it.

    ``$max`` only compares numbers with numbers; a legacy value stored as
    text (or Decimal128) is replaced instead, under a guard that it is still
    exactly that value.
    """
    if raw is None or type(raw) is int or (isinstance(raw, (int, float)) and not isinstance(raw, bool)):
        writes[path] = _RAISES[value]
    else:
        writes[path] = value
        guard[path] = _equals(raw)


def _reconcile(stage: model.StageRow, paths: _Paths, actual: int, writes: dict[str, WriteValue], guard: dict[str, Condition], trace: _Trace) -> int:
    """Rule 4: the collection's actual items may raise a stage's counter."""
    name, status, _, completed, _, _, _, raw_completed, _ = stage
    title = "collection counts raise counters"
    if status in TERMINAL:
        if trace is not None:
            trace.append(Finding(4, title, False, f"stage is {status.value}; left as it is", name))
        return completed
    if actual <= completed:
        if trace is not None:
            trace.append(Finding(4, title, False, f"collection holds {actual}, counter already {completed}", name))
        return completed
    _raise_to(paths.completed, raw_completed, actual, writes, guard)
    if trace is not None:
        trace.append(Finding(4, title, True, f"collection holds {actual}; counter raised from {completed} ($max)", name))
    return actual


def _empty_scan(stages: tuple[model.StageRow, ...], policy: Policy) -> model.StageRow | None:
    """Rule 6: the scan stage, if it completed having found nothing to do."""
    for stage in stages:
        if stage[0] == policy.scan_stage:
            return stage if stage[1] is Status.COMPLETED and stage[2] == 0 else None
    return None


def _complete_stage(paths: _Paths, raw_status: Any, raw_total: Any, message: str, writes: dict[str, WriteValue], guard: dict[str, Condition]) -> None:
    guard[paths.status] = _equals(raw_status)
    guard[paths.total] = _equals(raw_total)
    writes[paths.status] = "Completed"
    writes[paths.progress] = 100
    writes[paths.message] = message
    writes[paths.completed_at] = SERVER_NOW


def _complete_job(job: model.JobRow, already_done: list[model.StageRow], total: int, writes: dict[str, WriteValue], guard: dict[str, Condition], trace: _Trace) -> None:
    """Rule 2: all stages Completed -> job Completed, in the same update.

    ``total`` is the job's items: every item passes through every stage, so
    the job has as many items as its largest stage (two stages of 132 -> 132).
    """
    stages = job[10]
    for stage in already_done:
        guard[_PATHS[stage[0]].status] = _equals(stage[5])
    guard["stages"] = _STAGE_NAMES[tuple([stage[0] for stage in stages])]
    if trace is not None:
        trace.append(Finding(2, "all stages done -> job Completed", True, f"all {len(stages)} stages Completed -> job Completed, progress 100, {total}/{total} items"))
    writes["status"] = "Completed"
    writes["progress"] = 100
    writes["totalItems"] = total
    writes["completedItems"] = total
    writes["message"] = JOB_DONE_MESSAGE
    writes["completedAt"] = SERVER_NOW
    guard["totalItems"] = _equals(job[8])
    guard["completedItems"] = _equals(job[9])
    guard["progress"] = _equals(job[7])


def _mean_percent(shares: list[tuple[int, int]]) -> int:
    """⌊100 · mean of the stage fractions⌋, capped for an open job; exact
    (floating point would make 29/100 show 28%)."""
    common = 1
    for _, total in shares:
        common = common * total // math.gcd(common, total)
        if common > _EXACT_PROGRESS_LIMIT:
            mean = 100 * sum(count / total for count, total in shares) / len(shares)
            return min(OPEN_PROGRESS_CAP, math.floor(mean))
    numerator = sum(count * (common // total) for count, total in shares)
    return min(OPEN_PROGRESS_CAP, 100 * numerator // (len(shares) * common))


def _pin_stage_inputs(stages: tuple[model.StageRow, ...], raised: list[str], guard: dict[str, Condition]) -> None:
    """A progress write relied on every stage's counters and on the stage set:
    counters may grow (``$inc``), anything else must be as read."""
    guard["stages"] = _STAGE_NAMES[tuple([stage[0] for stage in stages])]
    for name, _, _, _, _, raw_status, raw_total, raw_completed, _ in stages:
        paths = _PATHS[name]
        guard[paths.total] = _equals(raw_total)
        if paths.status not in guard:
            guard[paths.status] = _equals(raw_status)
        if name not in raised:
            guard[paths.completed] = _counter_guard(raw_completed)


# Findings (only with explain=True): the wording ``jobwatch explain`` prints.


def _note_done(trace: list[Finding], stage: model.StageRow, count: int) -> None:
    name, _, total, *_ = stage
    shown_status = stage[5] or "no status"
    detail = f"{count}/{total} items, {shown_status} -> Completed"
    if count > total:
        detail += " (counter above total; progress capped at 100)"
    trace.append(Finding(1, "stage done -> Completed", True, detail, name))


def _note_waiting(trace: list[Finding], stage: model.StageRow, count: int, policy: Policy) -> None:
    name, _, total, *_ = stage
    if total == 0:
        detail = f"totalItems is 0 and no completed {policy.scan_stage!r} stage says there is nothing to do: waiting"
    else:
        detail = f"{count}/{total} items; waiting for {total - count} more"
    trace.append(Finding(1, "stage done -> Completed", False, detail, name))


def _note_job_waits(trace: list[Finding], stages: tuple[model.StageRow, ...], waiting: list[model.StageRow]) -> None:
    names = ", ".join(stage[0] for stage in waiting)
    detail = f"{len(stages) - len(waiting)}/{len(stages)} stages Completed; waiting for {names}"
    stopped = [f"{stage[0]} is {stage[1].value}" for stage in waiting if stage[1].is_explicit_stop]
    if stopped:
        detail += f"; blocked: {', '.join(stopped)} (the job stays open: failing a job is the service's decision)"
    trace.append(Finding(2, "all stages done -> job Completed", False, detail))
