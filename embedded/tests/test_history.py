"""The embedded server's pure parts: update descriptions, tokens, and the
history with its journal (no engine, no network)."""

from __future__ import annotations

from pathlib import Path

import bson
import pytest

from jobwatch_embedded import events, history

pytest.importorskip("mongoeco")  # the journal encodes through the engine's BSON bridge


UPDATED, REMOVED, TRUNCATED = "updatedFields", "removedFields", "truncatedArrays"


def described(
    updated: dict[str, object], removed: list[str] | None = None, truncated: list[dict[str, object]] | None = None
) -> dict[str, object]:
    return {UPDATED: updated, REMOVED: removed or [], TRUNCATED: truncated or []}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"_id": 1, "a": {"b": 1, "c": 2}}, {"_id": 1, "a": {"b": 2, "c": 2}}, described({"a.b": 2})),
        ({"_id": 1, "x": 1, "y": 2}, {"_id": 1, "x": 1}, described({}, ["y"])),
        ({"_id": 1, "l": [1, 2, 3]}, {"_id": 1, "l": [1]}, described({}, [], [{"field": "l", "newSize": 1}])),
        ({"_id": 1, "l": [1, 2]}, {"_id": 1, "l": [1, 2, 3]}, described({"l.2": 3})),  # $push: the new element
        ({"_id": 1, "l": [1, {"a": 1}]}, {"_id": 1, "l": [5, {"a": 2}]}, described({"l.0": 5, "l.1.a": 2})),
        ({"_id": 1, "l": [1, 2, 3]}, {"_id": 1, "l": [9]}, described({"l.0": 9}, [], [{"field": "l", "newSize": 1}])),
        ({"_id": 1, "n": 1}, {"_id": 1, "n": 1.0}, described({"n": 1.0})),  # int -> double is a change
        ({"_id": 1, "a": {"b": 1}}, {"_id": 1, "a": 5}, described({"a": 5})),
        (
            {"_id": 1, "z": 1, "a": {"b": 1}},
            {"_id": 1, "z": 2, "a": {"b": 2}, "new": 0},
            described({"z": 2, "new": 0, "a.b": 2}),
        ),
        (None, {"_id": 1, "n": 2}, described({"n": 2})),
    ],
)
def test_update_description_from_images(
    before: events.Document | None, after: events.Document, expected: events.Document
) -> None:
    assert events.describe_update(before, after) == expected
    assert list(events.describe_update(before, after)[UPDATED]) == list(expected[UPDATED])  # MongoDB's order


@pytest.mark.parametrize(
    ("before", "after", "paths"),
    [
        # From MongoDB's jstests/change_streams/show_expanded_events_update_description.js:
        # array indices alone are not ambiguous; a numeric field name is (a string), an index in it an int.
        ({"t": [{"s": [0, [0, [{"b": [1, 2, 3]}]]]}]}, {"t": [{"s": [0, [0, [{"b": [1, 2, 4]}]]]}]}, {}),
        ({"a": [[{"0": "x", "1": 1}]]}, {"a": [[{"0": "x", "1": {"b.c": 1}}]]}, {"a.0.0.1": ["a", 0, 0, "1"]}),
        ({"o": {"0": {"1": "n"}}}, {"o": {"0": {"1": "u"}}}, {"o.0.1": ["o", "0", "1"]}),
        ({"x": 1}, {"x": 1, "new.Field.": 1}, {"new.Field.": ["new.Field."]}),
        ({"a": {"1": 1}}, {"a": {"1": 2}}, {"a.1": ["a", "1"]}),  # the unified spec test's case
        ({"0": 1}, {"0": 2}, {}),  # a numeric top-level field is not ambiguous
    ],
)
def test_disambiguated_paths_follow_mongodb(
    before: events.Document, after: events.Document, paths: events.Document
) -> None:
    assert events.describe_update_paths(before, after)[1] == paths


def test_tokens_round_trip_order_by_time_and_reject_strangers() -> None:
    token = events.encode_token(0xABC, 42, (1_700_000_000, 7))
    assert token["_data"].startswith("82")  # MongoDB's tokens start with their cluster time, so do ours
    assert events.decode_token(token) == events.Position(0xABC, 42, cluster_time=(1_700_000_000, 7))
    assert events.decode_token(events.encode_token(1, 2, (5, 1), invalidate=True)).invalidate
    assert events.encode_token(1, 9, (5, 1))["_data"] < events.encode_token(1, 10, (5, 2))["_data"]  # ordered as text
    # MongoDB's own answers to tokens it cannot read (resume_token.cpp).
    strangers = [({}, 40647), ("text", 40647), ({"_data": 5}, 40647), ({"_data": "zz" * 17}, 9), ({"_data": "abc"}, 9)]
    for stranger, code in [*strangers, ({"_data": "00" * 17}, 40649)]:
        with pytest.raises(events.TokenError) as caught:
            events.decode_token(stranger)
        assert caught.value.code == code
    legacy = {"_data": f"{0xABC:016x}{42:016x}00"}  # as this server wrote them before tokens carried a time
    assert events.decode_token(legacy) == events.Position(0xABC, 42)
    with pytest.raises(events.TokenError) as caught:  # a MongoDB token: its cluster time is read
        events.decode_token({"_data": "8263A1B2C3000000042B022C0100296E5A1004"})
    assert caught.value.cluster_time == (0x63A1B2C3, 4)


def test_history_serves_tokens_it_retains_and_refuses_older_ones() -> None:
    changes = history.History(max_events=4)
    for i in range(10):
        changes.record("insert", "db", "c", document_key=bson.encode({"_id": i}), full_document=bson.encode({"_id": i}))
    assert changes.head == 10
    with pytest.raises(history.HistoryLost):
        changes.check_resumable(events.Position(changes.history_id, 1))
    retained = [e.sequence for e in changes.after(changes.head - 3)]
    changes.check_resumable(events.Position(changes.history_id, changes.head - 3))
    assert retained == [8, 9, 10]
    with pytest.raises(history.HistoryLost):  # another server's history
        changes.check_resumable(events.Position(changes.history_id ^ 1, changes.head))
    with pytest.raises(history.HistoryLost):  # from the future
        changes.check_resumable(events.Position(changes.history_id, changes.head + 1))
    with pytest.raises(history.HistoryLost):  # a reader at a position no longer retained
        changes.after(1)
    times = [e.cluster_time for e in changes.after(changes.base)]
    assert times == sorted(set(times))
    assert changes.sequence_at_time(times[1]) == list(changes.after(changes.base))[1].sequence - 1
    assert changes.time_of(changes.head) == times[-1] and changes.time_of(changes.base) == changes.base_time


def test_journal_survives_a_restart_and_a_torn_last_append(tmp_path: Path) -> None:
    first = history.History(journal_dir=tmp_path)
    for i in range(3):
        first.record(
            "update",
            "db",
            "c",
            document_key=bson.encode({"_id": i}),
            full_document=bson.encode({"_id": i, "n": i}),
            update_description=bson.encode({"updatedFields": {"n": i}, "removedFields": [], "truncatedArrays": []}),
        )
    first.close()
    journal = tmp_path / history.JOURNAL_NAME
    journal.write_bytes(journal.read_bytes() + b"\x40\x00\x00\x00\x02op")  # killed mid-append
    second = history.History(journal_dir=tmp_path)
    assert second.history_id == first.history_id and second.head == 3
    assert [bson.decode(e.update_description)["updatedFields"] for e in second.after(0) if e.update_description] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
    ]
    second.record("delete", "db", "c", document_key=bson.encode({"_id": 0}))
    second.close()
    third = history.History(journal_dir=tmp_path)
    assert third.head == 4 and [e.operation for e in third.after(2)] == ["update", "delete"]
    third.close()
