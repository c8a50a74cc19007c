"""Properties the rules hold for any job document (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import rules
from rules import Outcome, Raise, Status, explain
from rules.status import parse
from tests.support.documents import apply

STATUSES = st.sampled_from(
    [
        None,
        "Pending",
        "InProgress",
        "inprogress",
        "IN_PROGRESS",
        "Completed",
        "completed",
        "Failed",
        "Cancelled",
        "Queued",
    ]
)
COUNTS = st.one_of(
    st.integers(-3, 300),
    st.floats(0, 300, allow_nan=False).map(lambda f: round(f, 1)),
    st.integers(0, 300).map(str),
    st.none(),
)
STAGE = st.fixed_dictionaries(
    {"totalItems": COUNTS, "completedItems": COUNTS},
    optional={"status": STATUSES, "progress": st.integers(0, 100)},
)
NAMES = st.sampled_from(["scan", "thumbnail", "cache", "resize", "upload"])


@st.composite
def jobs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": draw(st.integers(1, 10**6)), "status": draw(STATUSES)}
    doc["stages"] = draw(st.dictionaries(NAMES, STAGE, max_size=4))
    for field, top in (("progress", 100), ("totalItems", 300), ("completedItems", 300)):
        if draw(st.booleans()):
            doc[field] = draw(st.integers(0, top))
    return doc


COLLECTION_COUNTS = st.one_of(st.none(), st.dictionaries(NAMES, st.integers(0, 300), max_size=3))


@settings(max_examples=400, deadline=None)
@given(jobs(), COLLECTION_COUNTS)
def test_applying_a_result_then_evaluating_again_changes_nothing(
    doc: dict[str, Any], counts: dict[str, int] | None
) -> None:
    once = apply(rules.evaluate(doc, collection_counts=counts), doc)
    again = rules.evaluate(once, collection_counts=counts, explain=True)
    assert not again.writes, explain.render(again)


@settings(max_examples=400, deadline=None)
@given(jobs(), COLLECTION_COUNTS)
def test_nothing_regresses_and_terminal_jobs_are_untouched(doc: dict[str, Any], counts: dict[str, int] | None) -> None:
    result = rules.evaluate(doc, collection_counts=counts)
    after = apply(result, doc)
    if not parse(doc.get("status")).is_open:
        assert result.outcome is Outcome.TERMINAL and not result.writes
    if parse(doc.get("status")) is Status.COMPLETED:
        assert after == doc
    for name, before in doc["stages"].items():
        was = parse(before.get("status"))
        now = parse(after["stages"][name].get("status"))
        if not was.is_open:
            assert now is was  # Completed stays Completed; Failed/Cancelled are kept
    assert parse(after.get("status")) is parse(doc.get("status")) or parse(after["status"]) is Status.COMPLETED


@settings(max_examples=400, deadline=None)
@given(jobs())
def test_a_job_completes_iff_all_its_stages_end_completed(doc: dict[str, Any]) -> None:
    result = rules.evaluate(doc)
    if result.outcome in (Outcome.TERMINAL, Outcome.REJECTED):
        return
    after = apply(result, doc)
    all_done = bool(after["stages"]) and all(
        parse(stage.get("status")) is Status.COMPLETED for stage in after["stages"].values()
    )
    assert result.completes_job == all_done


@settings(max_examples=300, deadline=None)
@given(jobs(), st.data())
def test_progress_is_bounded_and_monotone_as_counters_grow(doc: dict[str, Any], data: st.DataObject) -> None:
    result = rules.evaluate(doc)
    if result.outcome in (Outcome.TERMINAL, Outcome.REJECTED):
        return
    first = apply(result, doc)
    grown = {**first, "stages": {name: dict(stage) for name, stage in first["stages"].items()}}
    for stage in grown["stages"].values():
        current = stage.get("completedItems")
        if isinstance(current, int) and not isinstance(current, bool):
            stage["completedItems"] = current + data.draw(st.integers(0, 200))
    second_result = rules.evaluate(grown)
    second = apply(second_result, grown)
    for written in (result.writes, second_result.writes):
        for path, value in written.items():
            if path.endswith("progress"):
                shown = value.value if isinstance(value, Raise) else value
                assert isinstance(shown, int) and 0 <= shown <= 100, (path, value)
                if shown == 100:
                    assert path == "progress" and written.get("status") == "Completed" or path.startswith("stages.")
    for before, after in ((doc, first), (first, second)):
        if isinstance(before.get("progress"), int):
            assert after["progress"] >= before["progress"]


@settings(deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5), st.none(), st.lists(st.integers()))
    )
)
def test_evaluate_never_raises(doc: dict[str, Any]) -> None:
    rules.evaluate(doc)
