"""Path A's evidence: a stage is settled only when its counter and its
collection count both stood still for the quiet period."""

from __future__ import annotations

from watcher.intake.settle import CounterWatch


def doc(completed: object) -> dict[str, object]:
    return {"_id": 1, "stages": {"thumbnail": {"completedItems": completed, "totalItems": 9}}}


def test_first_sight_is_never_settled() -> None:
    watch = CounterWatch(quiet_s=10)
    assert watch.settled(1, doc(3), {"thumbnail": 5}, now=0) == frozenset()


def test_still_counter_and_still_count_settle_after_the_quiet_period() -> None:
    watch = CounterWatch(quiet_s=10)
    watch.settled(1, doc(3), {"thumbnail": 5}, now=0)
    assert watch.settled(1, doc(3), {"thumbnail": 5}, now=9) == frozenset()
    assert watch.settled(1, doc(3), {"thumbnail": 5}, now=10) == {"thumbnail"}


def test_a_consumer_between_push_and_increment_is_not_settled() -> None:
    watch = CounterWatch(quiet_s=10)
    watch.settled(1, doc(3), {"thumbnail": 3}, now=0)
    # the consumer pushed item 4: the collection moved, the counter not yet
    assert watch.settled(1, doc(3), {"thumbnail": 4}, now=20) == frozenset()


def test_a_counter_the_stream_saw_move_starts_its_quiet_period_again() -> None:
    watch = CounterWatch(quiet_s=10)
    watch.settled(1, doc(3), {"thumbnail": 5}, now=0)
    watch.observe(1, doc(4), now=8)  # a change event
    assert watch.settled(1, doc(4), {"thumbnail": 5}, now=12) == frozenset()
    assert watch.settled(1, doc(4), {"thumbnail": 5}, now=18) == {"thumbnail"}


def test_any_bson_value_is_remembered_without_error() -> None:
    watch = CounterWatch(quiet_s=0)
    for value in (None, "3", 3.5, [1], {"$gt": 1}, float("nan")):
        watch.observe(1, doc(value), now=0)
    watch.observe(2, {"stages": "not a document"}, now=0)
    watch.observe(3, {"stages": {"a": None, 7: {}}}, now=0)


def test_memory_is_bounded() -> None:
    watch = CounterWatch(quiet_s=1, max_jobs=3)
    for key in range(10):
        watch.settled(key, doc(1), {"thumbnail": 2}, now=0)
    assert watch.settled(0, doc(1), {"thumbnail": 2}, now=1) == frozenset()  # forgotten: first sight again
    assert watch.settled(9, doc(1), {"thumbnail": 2}, now=1) == {"thumbnail"}
