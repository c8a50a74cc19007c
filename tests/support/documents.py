"""Job documents and a faithful in-memory model of how MongoDB applies an
``Evaluation``: used by the rules' unit and property tests, where no server
is involved. The integration suites check the same against a real backend."""

from __future__ import annotations

import copy
import datetime as dt
import decimal
from collections.abc import Mapping
from typing import Any

from bson import Decimal128, ObjectId

from rules import SERVER_NOW, AtLeast, Equals, Evaluation, Raise, StageNames
from watcher.cli import demo

FIXED_NOW = dt.datetime(2025, 10, 12, 18, 49, tzinfo=dt.UTC)

MISSING: Any = object()


def seed_job(**overrides: Any) -> dict[str, Any]:
    """The incident's document (the demo's), under its id as a legacy string:
    the tests look it up both ways."""
    doc: dict[str, Any] = {**demo.seed_job(), "_id": "68ebf7fb500d92ef82221ec2"}
    doc.update(overrides)
    return doc


def fresh_job(items: int, stages: tuple[str, ...] = ("thumbnail", "cache"), **overrides: Any) -> dict[str, Any]:
    """A legacy job (null ``collectionId``) whose consumers have not started:
    every stage open at 0 of ``items``. The crash and restart tests' unit of work."""
    job: dict[str, Any] = {
        "_id": ObjectId(),
        "jobType": "collection-scan",
        "status": "InProgress",
        "collectionId": None,
        "stages": {name: {"status": "InProgress", "completedItems": 0, "totalItems": items} for name in stages},
    }
    job.update(overrides)
    return job


def numeric_value(value: Any) -> decimal.Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return None if value != value else decimal.Decimal(value)
    if isinstance(value, Decimal128):
        found = value.to_decimal()
        return None if found.is_nan() else found
    return None


def get_path(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def mongo_equal(stored: Any, pinned: Any) -> bool:
    """``{path: {$eq: pinned}}`` on a field holding ``stored`` (MISSING if absent)."""
    if pinned is None:
        return stored is MISSING or stored is None
    if stored is MISSING:
        return False
    a, b = numeric_value(stored), numeric_value(pinned)
    if a is not None or b is not None:
        return a is not None and b is not None and a == b
    return type(stored) is type(pinned) and stored == pinned


def at_least(stored: Any, wanted: Any) -> bool:
    """``{$gte: wanted}`` on a number: both numbers, ``stored`` not below."""
    have, need = numeric_value(stored), numeric_value(wanted)
    return have is not None and need is not None and have >= need


def raises(current: Any, value: Any) -> bool:
    """``$max`` writes ``value`` over ``current``: BSON orders only a missing
    field, null and smaller numbers below a number (text ranks above)."""
    have = numeric_value(current)
    return current is MISSING or current is None or (have is not None and have < value)


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """``$set`` of a dotted path, making the documents on the way."""
    *parents, leaf = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[leaf] = value


def guard_matches(evaluation: Evaluation, doc: Mapping[str, Any]) -> bool:
    for path, condition in evaluation.guard.items():
        value = get_path(doc, path)
        if isinstance(condition, Equals):
            if not mongo_equal(value, condition.value):
                return False
        elif isinstance(condition, AtLeast):
            if not at_least(value, condition.value):
                return False
        elif isinstance(condition, StageNames) and not (
            isinstance(value, Mapping) and set(value) == set(condition.value)
        ):
            return False
    return True


def apply(evaluation: Evaluation, doc: Mapping[str, Any], now: dt.datetime = FIXED_NOW) -> dict[str, Any]:
    """The document after the server applied ``evaluation``'s update (if its
    guard holds): ``$set``, ``$max`` (numbers only; BSON orders text above
    numbers, so ``$max`` leaves text alone) and ``$currentDate``."""
    out = copy.deepcopy(dict(doc))
    if not evaluation.writes or not guard_matches(evaluation, doc):
        return out
    for path, value in evaluation.writes.items():
        if value is SERVER_NOW:
            set_path(out, path, now)
        elif isinstance(value, Raise):
            if raises(get_path(out, path), value.value):
                set_path(out, path, value.value)
        else:
            set_path(out, path, value)
    return out
