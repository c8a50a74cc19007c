"""Renders an ``Evaluation`` as the rule-by-rule account ``jobwatch explain`` prints.

The only way to get that text: ``render(rules.evaluate(doc, explain=True))``.
(``decision`` does not know about rendering, so the two never import each other.)
"""

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
    """The account, rule by rule, then the writes of the one conditional update.

    An evaluation made without ``explain=True`` has no findings; the account
    then says so (and still shows the verdict, the rejection and the writes).
    """
    lines = [f"job {evaluation.job_id} ({evaluation.job_type or 'no jobType'}): {_VERDICTS[evaluation.outcome]}"]
    for finding in evaluation.findings:
        mark = "yes" if finding.holds else "no "
        where = f" [{finding.stage}]" if finding.stage else ""
        lines.append(
            f"  rule {finding.rule} {RULE_NAMES[finding.rule]:<13} {mark} {finding.title}{where}: {finding.detail}"
        )
    if not evaluation.findings:
        if evaluation.rejection:
            lines.append(f"  rule 0 {RULE_NAMES[0]:<13} no  document is readable: {evaluation.rejection}")
        lines.append("  (no findings recorded: evaluate with explain=True for the rule-by-rule account)")
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
