"""jobwatch's completion rules: pure functions from a job document to a decision.

No I/O, no driver, no clock. ``evaluate`` is the entry point; everything a
reader needs to learn the behaviour is in this package, in reading order:
``status`` (spellings, open and terminal), ``model`` (the tolerant reader:
a document becomes a ``Job`` with its ``Stage`` rows), ``evaluate`` (the
rules: a verdict per stage, then the job-level rules), ``decision`` (what
they return), ``explain`` (the rule-by-rule account:
``rules.explain.render(rules.evaluate(doc, explain=True))``) and ``memo``
(paths and guard values made once, for speed).
"""

from __future__ import annotations

from rules import explain
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
from rules.evaluate import DEFAULT_POLICY, Policy, evaluate
from rules.model import Job, Rejection, Stage, parse_job
from rules.status import Status

__all__ = [
    "DEFAULT_POLICY",
    "SERVER_NOW",
    "AtLeast",
    "Condition",
    "Equals",
    "Evaluation",
    "Finding",
    "Job",
    "Outcome",
    "Policy",
    "Raise",
    "Rejection",
    "Stage",
    "StageNames",
    "Status",
    "WriteValue",
    "evaluate",
    "explain",
    "parse_job",
]
