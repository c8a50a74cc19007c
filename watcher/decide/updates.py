"""Turns an ``Evaluation`` into MongoDB's words: one filter, one update.

Pure (no driver calls), so the exact documents sent are unit-tested.

Every value read from a document goes back to the server as data, never as
an operator: each guard compares with ``$eq`` (a stored regex, or a status
like ``{"$gt": ""}``, is matched literally, not evaluated), and the stage
names are passed through ``$literal``. ``$eq`` also compares by BSON type:
``1`` never matches ``true`` nor ``"1"``; numbers match across int, long,
double and decimal, which is what a counter needs; ``null`` matches a
missing field too, which is what a field read as missing needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rules import SERVER_NOW, AtLeast, Condition, Equals, Evaluation, Raise, StageNames


def to_filter(job_id: Any, guard: Mapping[str, Condition]) -> dict[str, Any]:
    """The job's ``_id`` and every guard condition, for the server to re-check."""
    query: dict[str, Any] = {"_id": {"$eq": job_id}}
    for path, condition in guard.items():
        kind = type(condition)  # exact types first: this runs for every write
        if kind is Equals or isinstance(condition, Equals):
            query[path] = {"$eq": condition.value}
        elif kind is AtLeast or isinstance(condition, AtLeast):
            query[path] = {"$gte": condition.value}  # a number the rules read: $gte only matches numbers
        elif isinstance(condition, StageNames):
            query["$expr"] = _stage_names_are(condition.value, path)
        else:  # pragma: no cover - the rules' Condition union is closed
            raise TypeError(f"unknown guard condition {condition!r}")
    return query


def _stage_names_are(names: tuple[str, ...], path: str) -> dict[str, Any]:
    """The field at ``path`` is a document whose keys are exactly ``names``.

    ``$objectToArray`` fails on a non-document, and an error would fail the
    whole update; a document that stopped being one must only not match.
    """
    keys = {"$map": {"input": {"$objectToArray": f"${path}"}, "in": "$$this.k"}}
    is_document = {"$eq": [{"$type": f"${path}"}, "object"]}
    return {"$cond": {"if": is_document, "then": {"$setEquals": [keys, {"$literal": list(names)}]}, "else": not names}}


def to_update(writes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``$set`` for plain values, ``$max`` for raised counters, ``$currentDate``
    for the server's clock. Never ``$set`` on a counter a consumer ``$inc``s."""
    plain: dict[str, Any] = {}
    raised: dict[str, Any] = {}
    stamped: dict[str, Any] = {}
    for path, value in writes.items():
        if value is SERVER_NOW:
            stamped[path] = {"$type": "date"}
        elif type(value) is Raise or isinstance(value, Raise):
            raised[path] = value.value
        else:
            plain[path] = value
    update: dict[str, dict[str, Any]] = {}
    if plain:
        update["$set"] = plain
    if raised:
        update["$max"] = raised
    if stamped:
        update["$currentDate"] = stamped
    return update


def for_evaluation(evaluation: Evaluation) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    return to_filter(evaluation.job_id, evaluation.guard), to_update(evaluation.writes)
