"""The embedded server's pure parts: update descriptions, tokens, and the
history with its journal (no engine, no network)."""

from __future__ import annotations

from pathlib import Path

import bson
import pytest

from jobwatch_embedded import events, history

pytest.importorskip("mongoeco")  # the journal encodes through the engine's BSON bridge


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"_id": 1, "a": {"b": 1, "c": 2}}, {"_id": 1, "a": {"b": 2, "c": 2}}, {"updatedFields": {"a.b": 2}, "removedFields": [], "truncatedArrays": []}),
        ({"_id": 1, "x": 1, "y": 2}, {"_id": 1, "x": 1}, {"updatedFields": {}, "removedFields": ["y"], "truncatedArrays": []}),
        ({"_id": 1, "l": [1, 2, 3]}, {"_id": 1, "l": [1]}, {"updatedFields": {}, "removedFields": [], "truncatedArrays": [{"field": "l", "newSize": 1}]}),
        ({"_id": 1, "l": [1, 2]}, {"_id": 1, "l": [1, 2, 3]}, {"updatedFields": {"l": [1, 2, 3]}, "removedFields": [], "truncatedArrays": []}),
        ({"_id": 1, "n": 1}, {"_id": 1, "n": 1.0}, {"updatedFields": {"n": 1.0}, "removedFields": [], "truncatedArrays": []}),  # int -> double is a change
        ({"_id": 1, "a": {"b": 1}}, {"_id": 1, "a": 5}, {"updatedFields": {"a": 5}, "removedFields": [], "truncatedArrays": []}),
        (None, {"_id": 1, "n": 2}, {"updatedFields": {"n": 2}, "removedFields": [], "truncatedArrays": []}),
    ],
)
def test_update_description_from_images(before: events.Document | None, after: events.Document, expected: events.Document) -> None:
    assert events.describe_update(before, after) == expected


def test_tokens_round_trip_and_reject_strangers() -> None:
    token = events.encode_token(0xABC, 42)
    assert events.decode_token(token) == events.Position(0xABC, 42)
    assert events.decode_token(events.encode_token(1, 2, invalidate=True)).invalidate
    assert events.encode_token(1, 9)["_data"] < events.encode_token(1, 10)["_data"]  # ordered as text
    for stranger in ({"_data": "00DEADBEEF"}, {"_data": "zz" * 17}, {}, "text"):
        with pytest.raises(events.TokenError):
            events.decode_token(stranger)


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
    times = [e.cluster_time for e in changes.after(0)]
    assert times == sorted(set(times))
    assert changes.sequence_at_time(times[1]) == list(changes.after(0))[1].sequence - 1


def test_journal_survives_a_restart_and_a_torn_last_append(tmp_path: Path) -> None:
    first = history.History(journal_dir=tmp_path)
    for i in range(3):
        first.record("update", "db", "c", document_key=bson.encode({"_id": i}), full_document=bson.encode({"_id": i, "n": i}), update_description=bson.encode({"updatedFields": {"n": i}, "removedFields": [], "truncatedArrays": []}))
    first.close()
    journal = tmp_path / history.JOURNAL_NAME
    journal.write_bytes(journal.read_bytes() + b"\x40\x00\x00\x00\x02op")  # killed mid-append
    second = history.History(journal_dir=tmp_path)
    assert second.history_id == first.history_id and second.head == 3
    assert [bson.decode(e.update_description)["updatedFields"] for e in second.after(0) if e.update_description] == [{"n": 0}, {"n": 1}, {"n": 2}]
    second.record("delete", "db", "c", document_key=bson.encode({"_id": 0}))
    second.close()
    third = history.History(journal_dir=tmp_path)
    assert third.head == 4 and [e.operation for e in third.after(2)] == ["update", "delete"]
    third.close()
