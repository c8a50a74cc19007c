"""Hostile documents through the rules (issue: nothing foreseeable stops the loop).

Each example is a job document with any BSON type in any field the rules
read, plus hostile collection counts. For every one: ``evaluate`` returns
(never raises, with or without explain); the filter and update it leads to
encode as BSON; a terminal or unreadable job gets no write; writes are only
canonical values on the fields the rules own; a decision matches the
document it was made from (else it would never apply: a stall); and applying
it, then evaluating again, asks for nothing more.

The default run checks a few hundred documents; ``-m reliability`` runs
10,000. The figures are printed at the end of the session.
"""

from __future__ import annotations

import re
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rules
from rules import SERVER_NOW, Evaluation, Outcome, Raise, explain
from rules.evaluate import EMPTY_STAGE_MESSAGE, JOB_DONE_MESSAGE
from tests.support import hostile
from tests.unit.rules import figures
from watcher.decide import updates

DEFAULT_EXAMPLES = 300
RELIABILITY_EXAMPLES = 10_000

_JOB_FIELDS = {"status", "progress", "totalItems", "completedItems", "message", "completedAt"}
_STAGE_FIELDS = {"status", "progress", "completedItems", "message", "completedAt"}
_MESSAGES = {JOB_DONE_MESSAGE, EMPTY_STAGE_MESSAGE}
_STAGE_DONE = re.compile(r"All \d+ items processed")


def check_one(doc: dict[str, Any], counts: Any) -> Evaluation:
    before = repr(doc)
    result = rules.evaluate(doc, collection_counts=counts)
    traced = rules.evaluate(doc, collection_counts=counts, explain=True)
    assert repr(doc) == before, "evaluate must not modify the document"
    assert (traced.outcome, dict(traced.writes), dict(traced.guard)) == (
        result.outcome,
        dict(result.writes),
        dict(result.guard),
    )
    explain.render(traced)

    query, update = updates.for_evaluation(result)
    bson.encode(update)
    if result.writes:
        bson.encode(query)

    if result.outcome in (Outcome.TERMINAL, Outcome.REJECTED):
        assert not result.writes and not result.guard
        assert (result.rejection is not None) == (result.outcome is Outcome.REJECTED)
        return result

    stages = doc.get("stages") or {}
    for path, value in result.writes.items():
        _assert_canonical(path, value, stages)
    if not result.writes:
        return result
    assert hostile.guard_matches(result, doc), f"a fresh decision must match the document it was made from: {query}"
    after = hostile.apply(result, doc)
    again = rules.evaluate(after, collection_counts=counts)
    assert not again.writes, explain.render(rules.evaluate(after, collection_counts=counts, explain=True))
    assert again.outcome in (Outcome.UNCHANGED, Outcome.TERMINAL)
    return result


def _assert_canonical(path: str, value: object, stages: dict[str, Any]) -> None:
    parts = path.split(".")
    if parts[0] == "stages":
        assert len(parts) == 3 and parts[1] in stages and parts[2] in _STAGE_FIELDS, path
    else:
        assert len(parts) == 1 and parts[0] in _JOB_FIELDS, path
    leaf = parts[-1]
    if value is SERVER_NOW:
        assert leaf == "completedAt"
        return
    number = value.value if isinstance(value, Raise) else value
    if leaf == "status":
        assert value == "Completed"
    elif leaf == "message":
        assert value in _MESSAGES or _STAGE_DONE.fullmatch(str(value)), value
    else:
        assert type(number) is int and 0 <= number <= hostile.INT64_MAX, (path, value)
        if leaf == "progress":
            assert number <= 100


def _run(doc: dict[str, Any], counts: Any) -> None:
    try:
        result = check_one(doc, counts)
    except BaseException:
        figures.failed()
        raise
    figures.record(result.outcome)


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.timeout(1800)  # 10,000 generated documents: minutes on a busy 2-core machine
@settings(
    max_examples=RELIABILITY_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(hostile.job_documents(), hostile.collection_counts)
def test_ten_thousand_hostile_documents_never_break_the_rules(doc: dict[str, Any], counts: Any) -> None:
    _run(doc, counts)


@settings(
    max_examples=DEFAULT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(hostile.job_documents(), hostile.collection_counts)
def test_hostile_documents_never_break_the_rules(doc: dict[str, Any], counts: Any) -> None:
    _run(doc, counts)


@settings(
    max_examples=DEFAULT_EXAMPLES // 3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(hostile.storable_job_documents())
def test_storable_hostile_documents_round_trip_through_bson_and_the_rules(doc: dict[str, Any]) -> None:
    """What a server hands back (decoded BSON) is what the rules must survive."""
    check_one(bson.decode(bson.encode(doc)), None)


@pytest.mark.parametrize(
    "doc",
    [
        {"_id": 1, "status": bson.Code("Pending"), "stages": {"a": {"completedItems": 1, "totalItems": 1}}},
        {
            "_id": 1,
            "status": "Pending",
            "stages": {"a": {"status": bson.Code("x"), "completedItems": 1, "totalItems": 1}},
        },
        {"_id": 1, "status": "Pending", "stages": {"a": {"completedItems": 1e30, "totalItems": 1e30}}},
        {"_id": 1, "status": "Pending", "stages": {"a": {"completedItems": bson.Decimal128("1E+40"), "totalItems": 1}}},
        {"_id": 1, "status": "Pending", "stages": {"a": {"completedItems": 2**63, "totalItems": 1}}},
        {"_id": 1, "status": "Pending", "stages": {"a": {"completedItems": bson.Binary(b"132"), "totalItems": 132}}},
        {"_id": 1, "status": "Pending", "stages": {"a": {"completedItems": b"132", "totalItems": 132}}},
        {"_id": 1, "status": "Pending", "progress": float("inf"), "stages": {}},
        {"_id": 1, "status": "Pending", "stages": {"a": {"completedItems": bson.Decimal128("NaN"), "totalItems": 1}}},
    ],
    ids=[
        "code-status",
        "code-stage-status",
        "1e30",
        "decimal-1e40",
        "int-2^63",
        "binary",
        "bytes",
        "inf",
        "decimal-nan",
    ],
)
def test_the_reported_crashes_are_rejections(doc: dict[str, Any]) -> None:
    result = check_one(doc, None)
    assert result.outcome is Outcome.REJECTED and result.rejection


def test_collection_counts_of_any_shape_are_no_evidence_unless_numbers() -> None:
    doc = {"_id": 1, "status": "Pending", "collectionId": "c", "stages": {"a": {"completedItems": 1, "totalItems": 10}}}
    for counts in (
        [1, 2],
        "a",
        {"a": 2**64},
        {"a": float("nan")},
        {"a": True},
        {"a": bson.Binary(b"9")},
        {1: 10},
        {"a": {"$gt": 1}},
    ):
        result = check_one(doc, counts)
        assert "stages.a.completedItems" not in result.writes, counts
    assert check_one(doc, {"a": 10}).completes_job


def test_a_fractional_total_never_completes_early() -> None:
    doc: dict[str, Any] = {"_id": 1, "status": "Pending", "stages": {"a": {"completedItems": 131, "totalItems": 131.5}}}
    assert not check_one(doc, None).completed_stages
    doc["stages"]["a"]["completedItems"] = 131.9
    assert not check_one(doc, None).completed_stages
    doc["stages"]["a"]["completedItems"] = 132
    result = check_one(doc, None)
    assert result.completes_job and result.writes["stages.a.message"] == "All 132 items processed"
    assert result.writes["totalItems"] == 132


@given(st.data())
@settings(max_examples=50, deadline=None)
def test_hostile_collection_counts_alone_never_raise(data: st.DataObject) -> None:
    doc = {
        "_id": 1,
        "status": "Pending",
        "stages": {name: {"completedItems": 1, "totalItems": 5} for name in hostile.PLAIN_NAMES},
    }
    check_one(doc, data.draw(hostile.collection_counts))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile.collection_documents())
def test_collection_documents_can_all_be_stored(doc: dict[str, Any]) -> None:
    """The sweep's suites insert these into a server: each must be storable."""
    assert hostile.storable(doc)
