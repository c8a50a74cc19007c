"""The completion rules, as one pure function: ``evaluate``.

The rules, numbered as the findings and ``jobwatch explain`` number them:

1. Stage done: an open stage (Pending, InProgress, missing or unknown status)
   with ``totalItems > 0`` and ``completedItems >= totalItems`` becomes
   Completed. A Failed or Cancelled stage keeps its status.
2. Job done: a job whose every stage is Completed becomes Completed.
3. Progress: while a job is open, its progress and counters, and its open
   stages' progress, follow the stage counters (raised only; 100 means done).
4. Collection: the items found in the job's collection (path A) may raise a
   stage's counter, never lower it.
5. Never regress: a terminal job is never touched; nothing un-completes.
6. Edge cases: a stage with no items completes only when the scan stage
   completed having found none; a job without stages never completes.

``evaluate`` reads the document (``rules.model``) and answers at once for an
unreadable job, a terminal job (rule 5) and a job without stages (rule 6).
Otherwise it decides in two steps, in this order:

1. The stage verdict (``_judge_stage``), for each stage: rule 4, then rule 1
   or rule 6 (the stage completes), else the stage is kept (Failed,
   Cancelled) or waits.
2. The job-level rules, from the verdicts: rule 2 (every stage done: the job
   completes in the same update) or, while a stage waits, rule 3.

Each rule adds its writes to one ``_Update``, together with the guard: what
the decision relied on, re-checked by the server when it applies the update.
Counters are only ever raised (``$max``) and statuses only ever move from
open to ``Completed``.

With ``explain=True``, ``_explain`` then words the same verdicts as the
findings ``jobwatch explain`` prints; without it no text is formatted. This
runs for every change event: the recurring paths and guard values are made
once (``rules.memo``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from rules import memo, model
from rules.decision import SERVER_NOW, Condition, Evaluation, Finding, Outcome, WriteValue
from rules.status import TERMINAL, Status

#: The one status the rules write: open -> Completed is their only transition.
_COMPLETED: Final = Status.COMPLETED.value
#: The messages the rules write when a stage or the job completes.
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

_NO_COUNTS: Mapping[str, int] = MappingProxyType({})
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_DONE_MESSAGES: Final[memo.Memo[int, str]] = memo.Memo(lambda total: STAGE_DONE_MESSAGE.format(total=total))


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
    job = model.read_job(job_doc)
    if isinstance(job, model.Rejection):
        findings = _explain_rejection(job) if explain else ()
        return Evaluation(job.job_id, Outcome.REJECTED, findings=findings, rejection=job.reason)
    if job.status in TERMINAL:
        findings = _explain_terminal(job) if explain else ()
        return Evaluation(job.id, Outcome.TERMINAL, findings=findings, job_type=job.job_type)
    if not job.stages:
        findings = _explain_no_stages() if explain else ()
        return Evaluation(job.id, Outcome.UNCHANGED, findings=findings, job_type=job.job_type)

    counts = _clean_counts(collection_counts) if collection_counts else _NO_COUNTS
    update = _Update(job)
    verdicts = [_judge_stage(stage, job, counts, policy, update) for stage in job.stages]
    progress: _Progress | None = None
    if all([verdict.state.done for verdict in verdicts]):
        _complete_job(job, verdicts, update)
        outcome = Outcome.JOB_COMPLETED
    else:
        progress = _track_progress(job, verdicts, update)
        if update.completed_stages:
            outcome = Outcome.STAGE_COMPLETED
        else:
            outcome = Outcome.PROGRESS if update.writes else Outcome.UNCHANGED
    findings = _explain(job, verdicts, counts, policy, progress) if explain else ()
    return update.evaluation(job, outcome, findings)


# The update a decision becomes.


class _Update:
    """The one conditional update being decided: ``writes`` (dotted path ->
    value) and the ``guard`` the server re-checks before it applies them."""

    __slots__ = ("writes", "guard", "completed_stages")

    def __init__(self, job: model.Job) -> None:
        self.writes: dict[str, WriteValue] = {}
        # Every write relies on the job being open, as its status was read.
        self.guard: dict[str, Condition] = {"status": memo.equals(job.raw_status)}
        self.completed_stages: list[str] = []

    def raise_to(self, path: str, raw: Any, value: int) -> None:
        """Raise a field to ``value`` without ever lowering it: ``$max``. A
        value the server cannot compare as a number (text, Decimal128) is
        replaced instead, under a guard that it is still exactly that value."""
        if raw is None or _is_number(raw):
            self.writes[path] = memo.RAISES[value]
        else:
            self.writes[path] = value
            self.guard[path] = memo.equals(raw)

    def complete_stage(self, stage: model.Stage, paths: memo.StagePaths, message: str) -> None:
        """Mark ``stage`` Completed, provided its status and total are still as read."""
        guard, writes = self.guard, self.writes
        guard[paths.status] = memo.equals(stage.raw_status)
        guard[paths.total] = memo.equals(stage.raw_total)
        writes[paths.status] = _COMPLETED
        writes[paths.progress] = 100
        writes[paths.message] = message
        writes[paths.completed_at] = SERVER_NOW
        self.completed_stages.append(stage.name)

    def evaluation(self, job: model.Job, outcome: Outcome, findings: tuple[Finding, ...]) -> Evaluation:
        """The decision as the rules return it: immutable, and without a guard when nothing is written."""
        writes = self.writes
        return Evaluation(
            job.id,
            outcome,
            MappingProxyType(writes) if writes else _EMPTY,
            MappingProxyType(self.guard) if writes else _EMPTY,  # no write, nothing to guard
            tuple(self.completed_stages),
            findings,
            None,
            job.job_type,
        )


def _counter_guard(raw: Any, at_least: int | None = None) -> Condition:
    """The guard on a consumer-owned counter: at least ``at_least`` (default:
    as read). Growth since the read (a consumer's ``$inc``) keeps it true. A
    counter the server cannot compare as a number (text, Decimal128) is
    pinned as read instead."""
    if type(raw) is int or _is_number(raw):  # a plain int, the common case, without the call
        return memo.at_least(raw if at_least is None else at_least)
    return memo.equals(raw)


def _is_number(raw: object) -> bool:
    """A stored number the server compares with ours in ``$max`` and ``$gte``:
    int, Int64 or double; never a boolean. Decimal128 is left out on purpose
    (it is pinned or replaced instead), and text cannot be compared."""
    return type(raw) is int or (isinstance(raw, (int, float)) and not isinstance(raw, bool))


# Step 1: the stage verdict (rules 4, 1 and 6, per stage).


class StageState(enum.Enum):
    """What the stage rules say about one stage, and whether it is done
    (Completed once this update is applied)."""

    #: Completed before this evaluation.
    COMPLETED = ("completed", True)
    #: Rule 1: every item processed; completes in this update.
    COMPLETES = ("completes", True)
    #: Rule 6: no items, and the scan stage completed having found none; completes in this update.
    COMPLETES_EMPTY = ("completes_empty", True)
    #: Failed or Cancelled: somebody's decision, kept; the job cannot complete.
    STOPPED = ("stopped", False)
    #: Open and not done: waits for more items (or, with no items, for the scan).
    WAITING = ("waiting", False)

    def __init__(self, _: str, done: bool) -> None:
        self.done = done  # an attribute, not a property: read per stage per event


class StageVerdict(NamedTuple):
    """One stage's verdict, and what the job-level rules need to know of it."""

    stage: model.Stage
    state: StageState
    #: Items done: the counter as read, or the collection's count if rule 4 raised it.
    items_done: int
    #: Rule 4 raised the counter in this update: our ``$max`` establishes it, not the value read.
    raised: bool


def _judge_stage(
    stage: model.Stage, job: model.Job, counts: Mapping[str, int], policy: Policy, update: _Update
) -> StageVerdict:
    """The stage verdict: what rules 4, 1 and 6 say about ``stage``. The writes
    that follow from it, with their guard, go into ``update``."""
    paths = memo.STAGE_PATHS[stage.name]
    items_done = stage.completed
    if stage.name in counts:
        items_done = _reconcile(stage, paths, counts[stage.name], update)
    raised = items_done != stage.completed
    status = stage.status
    if status is Status.COMPLETED:
        return StageVerdict(stage, StageState.COMPLETED, items_done, raised)
    if status is Status.FAILED or status is Status.CANCELLED:
        return StageVerdict(stage, StageState.STOPPED, items_done, raised)
    if stage.total > 0 and items_done >= stage.total:
        if not raised:  # else our own $max establishes the count
            update.guard[paths.completed] = _counter_guard(stage.raw_completed, stage.total)
        update.complete_stage(stage, paths, _DONE_MESSAGES[stage.total])
        return StageVerdict(stage, StageState.COMPLETES, items_done, raised)
    if stage.total == 0 and stage.name != policy.scan_stage:
        scan = _empty_scan(job.stages, policy)
        if scan is not None:
            # The evidence must still hold when the update lands: the scan as read, and
            # this stage's counter exactly (an item counted meanwhile contradicts "no items").
            scan_paths = memo.STAGE_PATHS[scan.name]
            update.guard[scan_paths.status] = memo.equals(scan.raw_status)
            update.guard[scan_paths.total] = memo.equals(scan.raw_total)
            update.guard[paths.completed] = memo.equals(stage.raw_completed)
            update.complete_stage(stage, paths, EMPTY_STAGE_MESSAGE)
            return StageVerdict(stage, StageState.COMPLETES_EMPTY, items_done, raised)
    return StageVerdict(stage, StageState.WAITING, items_done, raised)


def _reconcile(stage: model.Stage, paths: memo.StagePaths, actual: int, update: _Update) -> int:
    """Rule 4: the collection's actual items may raise an open stage's counter,
    never lower it. Returns the stage's count of items done."""
    if stage.status in TERMINAL or actual <= stage.completed:
        return stage.completed
    update.raise_to(paths.completed, stage.raw_completed, actual)
    return actual


def _empty_scan(stages: tuple[model.Stage, ...], policy: Policy) -> model.Stage | None:
    """Rule 6: the scan stage, if it completed having found nothing to do."""
    for stage in stages:
        if stage.name == policy.scan_stage:
            return stage if stage.status is Status.COMPLETED and stage.total == 0 else None
    return None


def _clean_counts(counts: object) -> dict[str, int]:
    """The collection's counts that are evidence: readable, by stage name."""
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


# Step 2: the job-level rules (2 and 3), from the verdicts.


def _job_items(job: model.Job, verdicts: list[StageVerdict]) -> int:
    """The job's items: every item passes through every stage, so the job has
    as many as its largest stage (two stages of 132 -> 132); never fewer
    than the job's own total says."""
    return max(job.total, max([verdict.stage.total for verdict in verdicts]))


def _complete_job(job: model.Job, verdicts: list[StageVerdict], update: _Update) -> None:
    """Rule 2: every stage done -> the job Completed, in the same update as the
    stages that complete now. Relies on the stages already Completed staying
    so, and on the job having no other stage."""
    guard = update.guard
    for verdict in verdicts:
        if verdict.state is StageState.COMPLETED:
            guard[memo.STAGE_PATHS[verdict.stage.name].status] = memo.equals(verdict.stage.raw_status)
    guard["stages"] = memo.STAGE_NAMES[tuple([verdict.stage.name for verdict in verdicts])]
    total = _job_items(job, verdicts)
    writes = update.writes
    writes["status"] = _COMPLETED
    writes["progress"] = 100
    writes["totalItems"] = total
    writes["completedItems"] = total
    writes["message"] = JOB_DONE_MESSAGE
    writes["completedAt"] = SERVER_NOW
    # Set, not raised (a job counter above the total is brought down to it), so
    # pinned as read: a concurrent change makes the update miss, never lost.
    guard["totalItems"] = memo.equals(job.raw_total)
    guard["completedItems"] = memo.equals(job.raw_completed)
    guard["progress"] = memo.equals(job.raw_progress)


class _Progress(NamedTuple):
    """What rule 3 makes of an open job's stages."""

    #: ⌊100 · mean of the stage fractions⌋, at most ``OPEN_PROGRESS_CAP``.
    percent: int
    #: The job's items: its largest stage total.
    total: int
    #: Items through every stage: the smallest stage count (a done stage counts its total).
    completed: int


def _track_progress(job: model.Job, verdicts: list[StageVerdict], update: _Update) -> _Progress:
    """Rule 3: while a stage waits, the job's progress and counters, and each
    waiting stage's progress, follow the stage counters: raised only, and
    never to 100 (which means Completed)."""
    progress = _progress_of(verdicts)
    moved = False
    if progress.percent > job.progress:
        update.raise_to("progress", job.raw_progress, progress.percent)
        moved = True
    if progress.total > job.total:
        update.raise_to("totalItems", job.raw_total, progress.total)
        moved = True
    if progress.completed > job.completed:
        update.raise_to("completedItems", job.raw_completed, progress.completed)
        moved = True
    for verdict in verdicts:
        stage = verdict.stage
        if verdict.state is StageState.WAITING and stage.total > 0:
            percent = 100 * verdict.items_done // stage.total  # below 100: a waiting stage is short of its total
            if percent > stage.progress:
                update.raise_to(memo.STAGE_PATHS[stage.name].progress, stage.raw_progress, percent)
                moved = True
    if moved:
        _pin_stage_inputs(verdicts, update)
    return progress


def _progress_of(verdicts: list[StageVerdict]) -> _Progress:
    """Rule 3's figures. A done stage counts as whole; a waiting one as far as
    its counter goes (capped at its total); a stage without items as none."""
    shares: list[tuple[int, int]] = []  # (items counted, total) per stage
    total = 0
    through_all = model.INT64_MAX
    for verdict in verdicts:
        stage_total = verdict.stage.total
        if stage_total > total:
            total = stage_total
        if verdict.state.done:
            counted = stage_total
            shares.append((1, 1))
        else:
            counted = verdict.items_done if verdict.items_done < stage_total else stage_total
            shares.append((counted, stage_total) if stage_total > 0 else (0, 1))
        if counted < through_all:
            through_all = counted
    return _Progress(_mean_percent(shares), total, through_all)


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


def _pin_stage_inputs(verdicts: list[StageVerdict], update: _Update) -> None:
    """A progress write relied on every stage's counters and on the stage set:
    counters may grow (``$inc``), anything else must be as read."""
    guard = update.guard
    guard["stages"] = memo.STAGE_NAMES[tuple([verdict.stage.name for verdict in verdicts])]
    for verdict in verdicts:
        stage = verdict.stage
        paths = memo.STAGE_PATHS[stage.name]
        guard[paths.total] = memo.equals(stage.raw_total)
        if paths.status not in guard:
            guard[paths.status] = memo.equals(stage.raw_status)
        if not verdict.raised:
            guard[paths.completed] = _counter_guard(stage.raw_completed)


# Findings (explain=True only): the same verdicts, in the words `jobwatch explain` prints.

_STAGE_DONE = "stage done -> Completed"
_JOB_DONE = "all stages done -> job Completed"
_TRACKS = "open job tracks its stages"


def _explain_rejection(rejection: model.Rejection) -> tuple[Finding, ...]:
    return (Finding(0, "document is readable", False, rejection.reason),)


def _explain_terminal(job: model.Job) -> tuple[Finding, ...]:
    return (Finding(5, "terminal jobs are never touched", False, f"job is {job.status.value}; nothing to do"),)


def _explain_no_stages() -> tuple[Finding, ...]:
    return (
        Finding(2, _JOB_DONE, False, "the job has no stages: nothing says its work is done (rule 6)"),
        Finding(3, _TRACKS, False, "no stages to track"),
    )


def _explain(
    job: model.Job, verdicts: list[StageVerdict], counts: Mapping[str, int], policy: Policy, progress: _Progress | None
) -> tuple[Finding, ...]:
    """Rule by rule, in the order they were applied: per stage rule 4 (when the
    collection was counted) and its verdict, then rule 2, then rule 3."""
    findings: list[Finding] = []
    for verdict in verdicts:
        if verdict.stage.name in counts:
            findings.append(_explain_collection(verdict.stage, counts[verdict.stage.name]))
        findings.append(_explain_stage(verdict, policy))
    if progress is None:
        total = _job_items(job, verdicts)
        detail = f"all {len(verdicts)} stages Completed -> job Completed, progress 100, {total}/{total} items"
        findings.append(Finding(2, _JOB_DONE, True, detail))
    else:
        findings.append(_explain_job_waits(verdicts))
        findings.append(_explain_progress(job, progress))
    return tuple(findings)


def _explain_collection(stage: model.Stage, actual: int) -> Finding:
    title = "collection counts raise counters"
    if stage.status in TERMINAL:
        return Finding(4, title, False, f"stage is {stage.status.value}; left as it is", stage.name)
    if actual <= stage.completed:
        return Finding(4, title, False, f"collection holds {actual}, counter already {stage.completed}", stage.name)
    detail = f"collection holds {actual}; counter raised from {stage.completed} ($max)"
    return Finding(4, title, True, detail, stage.name)


def _explain_stage(verdict: StageVerdict, policy: Policy) -> Finding:
    stage, state, count = verdict.stage, verdict.state, verdict.items_done
    if state is StageState.COMPLETED:
        return Finding(1, _STAGE_DONE, True, "already Completed", stage.name)
    if state is StageState.STOPPED:
        detail = f"marked {stage.status.value}; the watcher never overrides that"
        return Finding(1, _STAGE_DONE, False, detail, stage.name)
    if state is StageState.COMPLETES:
        detail = f"{count}/{stage.total} items, {stage.raw_status or 'no status'} -> Completed"
        if count > stage.total:
            detail += " (counter above total; progress capped at 100)"
        return Finding(1, _STAGE_DONE, True, detail, stage.name)
    if state is StageState.COMPLETES_EMPTY:
        detail = f"the {policy.scan_stage!r} stage completed with 0 items: nothing to process -> Completed"
        return Finding(6, "zero items", True, detail, stage.name)
    if stage.total == 0:
        detail = f"totalItems is 0 and no completed {policy.scan_stage!r} stage says there is nothing to do: waiting"
    else:
        detail = f"{count}/{stage.total} items; waiting for {stage.total - count} more"
    return Finding(1, _STAGE_DONE, False, detail, stage.name)


def _explain_job_waits(verdicts: list[StageVerdict]) -> Finding:
    waiting = [verdict.stage for verdict in verdicts if not verdict.state.done]
    names = ", ".join(stage.name for stage in waiting)
    detail = f"{len(verdicts) - len(waiting)}/{len(verdicts)} stages Completed; waiting for {names}"
    stopped = [f"{stage.name} is {stage.status.value}" for stage in waiting if stage.status.is_explicit_stop]
    if stopped:
        detail += f"; blocked: {', '.join(stopped)} (the job stays open: failing a job is the service's decision)"
    return Finding(2, _JOB_DONE, False, detail)


def _explain_progress(job: model.Job, progress: _Progress) -> Finding:
    moved = [
        f"{path} {before} -> {after}"
        for path, before, after in (
            ("progress", job.progress, progress.percent),
            ("totalItems", job.total, progress.total),
            ("completedItems", job.completed, progress.completed),
        )
        if after > before
    ]
    detail = f"progress {progress.percent}%, {progress.completed}/{progress.total} items: "
    detail += ", ".join(moved) or "already up to date"
    return Finding(3, _TRACKS, bool(moved), detail)
