"""Renders an ``Evaluation`` as the rule-by-rule account ``jobwatch explain`` prints."""

from __future__ import annotations

from rules.decision import SERVER_NOW, Evaluation, Outcome, Raise, WriteValue

RULE_NAMES = {
    0: "readable",
    1: "stage done",
    2: "job done",
    3: "progress",
    4: "collection",
    5: "never regress",
    6: "edge case",
}

_VERDICTS = {
    Outcome.JOB_COMPLETED: "the job completes now",
    Outcome.STAGE_COMPLETED: "stages complete now; the job stays open",
    Outcome.PROGRESS: "progress is brought up to date; nothing completes",
    Outcome.UNCHANGED: "nothing to change",
    Outcome.TERMINAL: "terminal job: never touched",
    Outcome.REJECTED: "cannot be read as a job: skipped, nothing written",
}


def render(evaluation: Evaluation) -> str:
    lines = [f"job {evaluation.job_id!r} ({evaluation.job_type or 'no jobType'}): {_VERDICTS[evaluation.outcome]}"]
    for finding in evaluation.findings:
        mark = "yes" if finding.holds else "no "
        where = f" [{finding.stage}]" if finding.stage else ""
        lines.append(f"  rule {finding.rule} {RULE_NAMES[finding.rule]:<13} {mark} {finding.title}{where}: {finding.detail}")
    if evaluation.writes:
        lines.append("  writes (one conditional update):")
        lines.extend(f"    {path} = {_show(value)}" for path, value in evaluation.writes.items())
    return "\n".join(lines)


def _show(value: WriteValue) -> str:
    if value is SERVER_NOW:
        return "<server time>"
    if isinstance(value, Raise):
        return f"at least {value.value} ($max)"
    return repr(value)
