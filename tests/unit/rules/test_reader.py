"""The hand-written reader agrees with the documented reading rules.

``spec_count`` / ``spec_status`` restate the edge-case table of docs/explanation/rules.md the slow, obvious
way (exact decimals, no fast paths); hypothesis feeds both every BSON type.
"""

from __future__ import annotations

import decimal
import math
from typing import Any

import pytest
from bson import Decimal128
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rules
from rules import Outcome, Status, model
from rules.status import parse
from tests.support import hostile

REJECT = object()
_TEXT_DIGITS = set("0123456789")


def _plain_decimal_text(text: str) -> bool:
    mantissa, e, exponent = text.lower().partition("e")
    if e:
        exponent = exponent.removeprefix("+").removeprefix("-")
        if not exponent or set(exponent) - _TEXT_DIGITS:
            return False
    mantissa = mantissa.removeprefix("+").removeprefix("-")
    whole, _, fraction = mantissa.partition(".")
    return bool(whole or fraction) and not (set(whole) | set(fraction)) - _TEXT_DIGITS


def spec_count(raw: Any, *, round_up: bool = False) -> Any:
    """docs/explanation/rules.md: null/missing -> 0; negative -> 0; fractions round down (totals up);
    int, Int64, double, Decimal128 and plain decimal text are numbers; NaN,
    infinities, values beyond int64 and every other type are rejected."""
    if raw is None:
        return 0
    if isinstance(raw, bool):
        return REJECT
    if isinstance(raw, int):
        exact = decimal.Decimal(int(raw))
    elif isinstance(raw, float):
        if math.isnan(raw) or math.isinf(raw):
            return REJECT
        exact = decimal.Decimal(raw)
    elif isinstance(raw, Decimal128):
        exact = raw.to_decimal()
    elif type(raw) is str:
        text = raw.strip()
        if not _plain_decimal_text(text):
            return REJECT
        exact = decimal.Decimal(text)
    else:
        return REJECT
    if not exact.is_finite() or exact.copy_abs() > 2**63 - 1:
        return REJECT
    whole = math.ceil(exact) if round_up else math.floor(exact)
    return max(whole, 0)


def reader_count(raw: Any, *, round_up: bool = False) -> Any:
    try:
        return model.read_count(raw, round_up=round_up)
    except model.Unreadable:
        return REJECT


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        hostile.counters, hostile.values, st.integers(), st.floats(), st.text(alphabet="0123456789+-.eE _", max_size=8)
    ),
    st.booleans(),
)
def test_counters_read_as_documented(raw: Any, round_up: bool) -> None:
    assert reader_count(raw, round_up=round_up) == spec_count(raw, round_up=round_up)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile.statuses)
def test_statuses_read_as_documented(raw: Any) -> None:
    try:
        read = model.read_status(raw)
    except model.Unreadable:
        assert raw is not None and type(raw) is not str
        return
    assert read is (Status.UNKNOWN if raw is None else parse(raw))
    assert raw is None or type(raw) is str


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile.job_documents())
def test_the_fast_path_and_the_named_reader_agree_and_decide_rule_1_as_documented(doc: dict[str, Any]) -> None:
    row, job = model.read_job(doc), model.parse_job(doc)
    if isinstance(job, model.Rejection):
        assert row == job
        assert rules.evaluate(doc).outcome is Outcome.REJECTED
        return
    assert not isinstance(row, model.Rejection)
    assert tuple(job) == (*row[:10], tuple(model.Stage(*stage) for stage in row[10]))
    result = rules.evaluate(doc)
    if not job.status.is_open:
        assert result.outcome is Outcome.TERMINAL
        return
    stages = doc.get("stages") or {}
    for stage in job.stages:
        raw = stages[stage.name]
        total = spec_count(raw.get("totalItems"), round_up=True)
        done = spec_count(raw.get("completedItems"))
        assert (stage.total, stage.completed) == (total, done)
        completes = stage.status.is_open and total > 0 and done >= total
        assert (stage.name in result.completed_stages) == completes or stage.total == 0


@pytest.mark.parametrize(
    ("raw", "round_up", "expected"),
    [
        (131.5, True, 132),
        (131.5, False, 131),
        ("131.5", True, 132),
        (Decimal128("131.5"), True, 132),
        ("9223372036854775807", False, 2**63 - 1),
        ("9223372036854775808", False, REJECT),
        (9.223372036854775807e18, False, REJECT),  # that double is 2**63
        ("1_000", False, REJECT),
        ("١٣٢", False, REJECT),
        (-0.0, False, 0),
        (-1e30, False, REJECT),
        ("1e999999999", False, REJECT),
        ("0E", False, REJECT),
    ],
)
def test_reading_edges(raw: Any, round_up: bool, expected: Any) -> None:
    assert reader_count(raw, round_up=round_up) == expected == spec_count(raw, round_up=round_up)
