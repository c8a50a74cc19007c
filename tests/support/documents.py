"""Job documents and a faithful in-memory model of how MongoDB applies an
``Evaluation``: used by the rules' unit and property tests, where no server
is involved. The integration suites check the same against a real backend."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

from rules import SERVER_NOW, AtLeast, Equals, Evaluation, Raise, StageNames

FIXED_NOW = dt.datetime(2025, 10, 12, 18, 49, tzinfo=dt.UTC)

MISSING = object()


def seed_job(**overrides: Any) -> dict[str, Any]:
    """The incident's document, exactly as reported (seed-bug-report.md)."""
    doc: dict[str, Any] = {
        "_id": "68ebf7fb500d92ef82221ec2",
        "jobType": "resume-collection",
        "status": "Pending",
        "progress": 0,
        "totalItems": 0,
        "completedItems": 0,
        "stages": {
            "thumbnail": {"status": "InProgress", "completedItems": 132, "totalItems": 132},
            "cache": {"status": "InProgress", "completedItems": 132, "totalItems": 132},
        },
        "collectionId": None,
    }
    doc.update(overrides)
    return doc


def get_path(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def guard_matches(evaluation: Evaluation, doc: Mapping[str, Any]) -> bool:
    for path, condition in evaluation.guard.items():
        value = get_path(doc, path)
        if isinstance(condition, Equals):
            if condition.value is None:
                if value is not MISSING and value is not None:
                    return False
            elif value is MISSING or value != condition.value:
                return False
        elif isinstance(condition, AtLeast):
            if not isinstance(value, (int, float)) or value < condition.value:
                return False
        elif isinstance(condition, StageNames):
            if not isinstance(value, Mapping) or set(value) != set(condition.value):
                return False
    return True


def apply(evaluation: Evaluation, doc: Mapping[str, Any], now: dt.datetime = FIXED_NOW) -> dict[str, Any]:
    """The document after the server applied ``evaluation`` (if its guard holds)."""
    out = copy.deepcopy(dict(doc))
    if not evaluation.writes or not guard_matches(evaluation, doc):
        return out
    for path, value in evaluation.writes.items():
        if value is SERVER_NOW:
            set_path(out, path, now)
        elif isinstance(value, Raise):
            current = get_path(out, path)
            if current is MISSING or current is None or current < value.value:
                set_path(out, path, value.value)
        else:
            set_path(out, path, value)
    return out
