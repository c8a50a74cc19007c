"""Every rule and edge case, one documented answer each (docs/explanation/rules.md's table)."""

from __future__ import annotations

import pytest

import rules
from rules import SERVER_NOW, AtLeast, Equals, Outcome, Raise, StageNames, explain
from tests.support.documents import FIXED_NOW, apply, seed_job


def stage(status: object = "InProgress", done: object = 0, total: object = 10, **extra: object) -> dict[str, object]:
    return {"status": status, "completedItems": done, "totalItems": total, **extra}


def job(*, status: object = "InProgress", **stages: dict[str, object]) -> dict[str, object]:
    return {"_id": "j1", "jobType": "collection-scan", "status": status, "stages": stages}


def test_seed_document_reaches_the_seed_expected_end_state() -> None:
    result = rules.evaluate(seed_job())
    after = apply(result, seed_job())

    assert result.outcome is Outcome.JOB_COMPLETED
    assert result.completed_stages == ("thumbnail", "cache")
    assert after == {
        "_id": "68ebf7fb500d92ef82221ec2",
        "jobType": "resume-collection",
        "status": "Completed",
        "progress": 100,
        "totalItems": 132,
        "completedItems": 132,
        "message": "All stages completed successfully",
        "completedAt": FIXED_NOW,
        "stages": {
            name: {
                "status": "Completed",
                "progress": 100,
                "completedItems": 132,
                "totalItems": 132,
                "message": "All 132 items processed",
                "completedAt": FIXED_NOW,
            }
            for name in ("thumbnail", "cache")
        },
        "collectionId": None,
    }


def test_timestamps_come_from_the_server_clock() -> None:
    writes = rules.evaluate(seed_job()).writes
    assert writes["completedAt"] is SERVER_NOW
    assert writes["stages.cache.completedAt"] is SERVER_NOW


def test_guard_pins_what_the_decision_relied_on() -> None:
    guard = rules.evaluate(seed_job()).guard
    assert guard["status"] == Equals("Pending")
    assert guard["stages.thumbnail.status"] == Equals("InProgress")
    assert guard["stages.thumbnail.totalItems"] == Equals(132)
    assert guard["stages.thumbnail.completedItems"] == AtLeast(132)
    assert guard["stages"] == StageNames(("thumbnail", "cache"))


def test_a_consumer_increment_after_the_read_keeps_the_guard_matching() -> None:
    doc = job(a=stage(done=10, total=10), b=stage(done=3))
    result = rules.evaluate(doc)
    doc["stages"]["a"]["completedItems"] = 11  # type: ignore[index]
    assert apply(result, doc)["stages"]["a"]["status"] == "Completed"


def test_a_stale_decision_matches_nothing() -> None:
    doc = job(a=stage(done=10, total=10))
    result = rules.evaluate(doc)
    doc["status"] = "Cancelled"  # an operator cancelled the job meanwhile
    assert apply(result, doc) == doc


@pytest.mark.parametrize("terminal", ["Completed", "Failed", "Cancelled", "completed", "CANCELED"])
def test_terminal_jobs_yield_nothing(terminal: str) -> None:
    result = rules.evaluate(job(status=terminal, a=stage(done=10, total=10)))
    assert result.outcome is Outcome.TERMINAL
    assert not result.writes


def test_stage_completes_but_job_waits_for_the_other_stage() -> None:
    result = rules.evaluate(job(a=stage(done=10, total=10), b=stage(done=4, total=10)))
    assert result.outcome is Outcome.STAGE_COMPLETED
    assert result.writes["stages.a.status"] == "Completed"
    assert result.writes["stages.a.message"] == "All 10 items processed"
    assert "status" not in result.writes
    assert result.writes["progress"] == Raise(70)


def test_fresh_job_with_zero_totals_does_not_complete() -> None:
    result = rules.evaluate(job(status="Pending", a=stage("Pending", 0, 0), b=stage("Pending", 0, 0)))
    assert result.outcome is Outcome.UNCHANGED
    assert not result.writes


def test_empty_collection_completes_once_the_scan_found_nothing() -> None:
    doc = job(scan=stage("Completed", 0, 0), thumbnail=stage("Pending", 0, 0), cache=stage("Pending", 0, 0))
    result = rules.evaluate(doc)
    assert result.outcome is Outcome.JOB_COMPLETED
    assert result.writes["stages.thumbnail.message"] == "No items to process"
    assert result.guard["stages.scan.totalItems"] == Equals(0)


def test_zero_total_stage_waits_while_the_scan_is_running() -> None:
    result = rules.evaluate(job(scan=stage("InProgress", 0, 0), thumbnail=stage("Pending", 0, 0)))
    assert not result.completed_stages


def test_counters_above_total_complete_with_progress_capped() -> None:
    after = apply(rules.evaluate(job(a=stage(done=140, total=132))), job(a=stage(done=140, total=132)))
    assert after["stages"]["a"]["progress"] == 100
    assert after["stages"]["a"]["completedItems"] == 140  # counters are never rewritten
    assert after["progress"] == 100


@pytest.mark.parametrize("explicit", ["Failed", "Cancelled", "failed"])
def test_failed_or_cancelled_stage_is_kept_and_blocks_the_job(explicit: str) -> None:
    result = rules.evaluate(job(a=stage(explicit, 10, 10), b=stage(done=10, total=10)), explain=True)
    assert "stages.a.status" not in result.writes
    assert result.outcome is Outcome.STAGE_COMPLETED
    assert "status" not in result.writes
    assert (
        f"blocked: a is {rules.Status.FAILED.value if explicit.lower() == 'failed' else 'Cancelled'}"
        in explain.render(result)
    )


def test_job_without_stages_never_completes() -> None:
    stages: dict[str, object] | None
    for stages in ({}, None):
        doc = {"_id": 1, "status": "Pending", "stages": stages}
        assert rules.evaluate(doc).outcome is Outcome.UNCHANGED
    assert rules.evaluate({"_id": 1, "status": "Pending"}).outcome is Outcome.UNCHANGED


@pytest.mark.parametrize("odd", [None, "Queued", "weird"])
def test_unknown_stage_status_counts_as_open(odd: object) -> None:
    result = rules.evaluate(job(a=stage(odd, 5, 5)))
    assert result.outcome is Outcome.JOB_COMPLETED
    assert result.guard["stages.a.status"] == Equals(odd)


def test_missing_stage_status_is_guarded_as_missing() -> None:
    doc = job(a={"completedItems": 5, "totalItems": 5})
    assert rules.evaluate(doc).guard["stages.a.status"] == Equals(None)


@pytest.mark.parametrize("variant", ["inprogress", "IN_PROGRESS", "pending", "Running", None])
def test_job_status_variants_are_open(variant: object) -> None:
    assert rules.evaluate(job(status=variant, a=stage(done=2, total=2))).completes_job


def test_already_completed_stages_count_for_the_job() -> None:
    result = rules.evaluate(job(a=stage("completed", 3, 10), b=stage(done=10, total=10)))
    assert result.completes_job
    assert result.guard["stages.a.status"] == Equals("completed")
    assert "stages.a.status" not in result.writes  # never rewritten, never regressed


def test_counters_stored_as_strings_and_doubles() -> None:
    doc = job(a=stage(done="132", total=132.0), b=stage(done=132.0, total="132"))
    result = rules.evaluate(doc)
    assert result.completes_job
    assert result.guard["stages.a.completedItems"] == Equals("132")
    assert result.guard["stages.b.completedItems"] == AtLeast(132)


def test_bson_numeric_types_are_counts() -> None:
    from bson import Decimal128, Int64

    result = rules.evaluate(job(a=stage(done=Decimal128("132"), total=Int64(132))))
    assert result.completes_job
    assert result.guard["stages.a.completedItems"] == Equals(Decimal128("132"))


@pytest.mark.parametrize("negative", [-5, None, "-1"])
def test_negative_or_null_counters_read_as_zero(negative: object) -> None:
    result = rules.evaluate(job(a=stage(done=negative, total=10)))
    assert not result.completed_stages
    assert "stages.a.progress" not in result.writes
    assert result.writes == {"totalItems": Raise(10)}  # rule 3: the job's size is known


def test_negative_counter_is_guarded_by_its_stored_value() -> None:
    doc = job(a=stage(done=-5, total=10), b=stage(done=5, total=10))
    result = rules.evaluate(doc)
    assert result.guard["stages.a.completedItems"] == AtLeast(-5)
    assert apply(result, doc)["progress"] == 25


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"_id": 1, "stages": {"a": {"completedItems": "lots"}}}, "stages.a.completedItems"),
        ({"_id": 1, "stages": [1, 2]}, "stages"),
        ({"_id": 1, "stages": {"a": "done"}}, "stages.a"),
        ({"_id": 1, "stages": {"a.b": {}}}, "cannot be addressed"),
        ({"_id": 1, "stages": {"$where": {}}}, "cannot be addressed"),
        ({"_id": 1, "stages": {"": {}}}, "cannot be addressed"),
        ({"_id": 1, "stages": {"a\x00b": {}}}, "cannot be addressed"),
        ({"_id": 1, "stages": {"a\ud800": {}}}, "cannot be addressed"),
        ({"_id": 1, "status": 2, "stages": {}}, "status: a status must be text, not int"),
        ({"_id": 1, "status": {"$ne": 1}, "stages": {}}, "status: a status must be text, not dict"),
        ({"_id": 1, "stages": {"a": {"status": ["Pending"]}}}, "stages.a.status"),
        ({"_id": 1, "status": "\ud800", "stages": {}}, "valid UTF-8"),
        ({"_id": 1, "totalItems": 1e30}, "totalItems: 1e+30 is beyond the 64-bit range"),
        ({"_id": 1, "stages": {"a": {"totalItems": 2**63}}}, "stages.a.totalItems"),
        ({"_id": 1, "stages": {"a": {"completedItems": b"1"}}}, "stages.a.completedItems: a number, not bytes"),
        ({"_id": [1], "status": "Pending"}, "_id"),
        ({"_id": 1, "progress": float("nan")}, "progress"),
        ({"_id": 1, "stages": {"a": {"totalItems": True}}}, "boolean"),
        ({"status": "Pending"}, "no _id"),
        ("not a document", "must be a document"),
    ],
)
def test_unreadable_documents_are_rejected_with_a_reason(doc: object, reason: str) -> None:
    result = rules.evaluate(doc, explain=True)  # type: ignore[arg-type]
    assert result.outcome is Outcome.REJECTED
    assert reason in (result.rejection or "")
    assert not result.writes
    assert reason in explain.render(result)


def test_a_terminal_job_is_read_no_further_than_its_status() -> None:
    result = rules.evaluate(
        {"_id": 1, "status": "Failed", "stages": {"a.b": "garbage", "c": {"totalItems": float("nan")}}}
    )
    assert result.outcome is Outcome.TERMINAL and not result.writes


def test_unicode_and_inner_dollar_stage_names_are_fine() -> None:
    result = rules.evaluate(job(**{"vignette-é": stage(done=1, total=1), "price$": stage(done=1, total=1)}))
    assert result.completes_job and result.writes["stages.vignette-é.status"] == "Completed"


@pytest.mark.parametrize(
    ("done", "total", "completes"),
    [(131, 131.5, False), (131.9, 132, False), (132, 131.5, True), ("131.5", "131.5", False), (132, "131.5", True)],
)
def test_fractions_delay_a_completion_never_advance_one(done: object, total: object, completes: bool) -> None:
    assert rules.evaluate(job(a=stage(done=done, total=total))).completes_job is completes


def test_job_progress_is_exact_not_floating_point() -> None:
    result = rules.evaluate(job(a=stage(done=29, total=100)))
    assert result.writes["progress"] == Raise(29)  # 100 * 0.29 is 28.999999999999996 in floating point
    assert result.writes["stages.a.progress"] == Raise(29)


def test_path_a_raises_counters_with_max_only() -> None:
    doc = job(thumbnail=stage(done=120, total=132), cache=stage(done=132, total=132))
    doc["collectionId"] = "c1"
    result = rules.evaluate(doc, collection_counts={"thumbnail": 132, "cache": 100})
    assert result.writes["stages.thumbnail.completedItems"] == Raise(132)
    assert "stages.cache.completedItems" not in result.writes  # never lowered
    assert "stages.thumbnail.completedItems" not in result.guard  # our $max establishes it
    assert result.completes_job


def test_path_a_on_a_text_counter_replaces_it_under_a_guard() -> None:
    doc = job(a=stage(done="3", total=10))
    result = rules.evaluate(doc, collection_counts={"a": 10})
    assert result.writes["stages.a.completedItems"] == 10
    assert result.guard["stages.a.completedItems"] == Equals("3")


def test_path_a_ignores_unreadable_counts_and_closed_stages() -> None:
    doc = job(a=stage("Failed", 3, 10), b=stage(done=3, total=10))
    result = rules.evaluate(doc, collection_counts={"a": 10, "b": "garbage"})  # type: ignore[dict-item]
    assert "stages.a.completedItems" not in result.writes
    assert "stages.b.completedItems" not in result.writes


def test_progress_is_only_raised() -> None:
    doc = job(a=stage(done=1, total=10))
    doc["progress"] = 50  # somebody else reported more than the counters say
    result = rules.evaluate(doc)
    assert "progress" not in result.writes


def test_progress_stored_as_text_is_replaced_under_a_guard() -> None:
    doc = job(a=stage(done=5, total=10))
    doc["progress"] = "10"
    result = rules.evaluate(doc)
    assert result.writes["progress"] == 50
    assert result.guard["progress"] == Equals("10")


def test_explain_walks_every_rule() -> None:
    text = explain.render(rules.evaluate(seed_job(), explain=True))
    assert "rule 1" in text and "rule 2" in text
    assert "132/132" in text
    assert "completedAt = <server time>" in text
    text = explain.render(rules.evaluate(job(status="Failed"), explain=True))
    assert "rule 5" in text
