"""Path A's evidence: a stage is settled only when its counter and its
collection count both stood still for the quiet period."""

from __future__ import annotations

from watcher.intake.counter_watch import CounterWatch


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


def finished(spelling: str) -> dict[str, object]:
    return {**doc(9), "status": spelling}


def test_a_finished_job_is_forgotten_in_any_spelling() -> None:
    watch = CounterWatch(quiet_s=10)
    spellings = ("Completed", "completed", "COMPLETE", "Failed", "cancelled", "Canceled")
    for key, _ in enumerate(spellings):
        watch.observe(key, doc(3), now=0)
        watch.settled(key, doc(3), {"thumbnail": 3}, now=1)
    assert len(watch) == len(spellings)
    for key, spelling in enumerate(spellings):
        watch.observe(key, finished(spelling), now=2)
    assert len(watch) == 0
    # reopened later: first sight again, its quiet period starts over
    assert watch.settled(0, doc(3), {"thumbnail": 3}, now=20) == frozenset()
    assert watch.settled(0, doc(3), {"thumbnail": 3}, now=30) == {"thumbnail"}


def test_an_open_or_unknown_status_is_remembered() -> None:
    watch = CounterWatch(quiet_s=10)
    for key, status in enumerate(("InProgress", "pending", None, "weird", 7, ["Completed"])):
        watch.observe(key, {**doc(3), "status": status}, now=0)
    assert len(watch) == 6


def test_a_sweep_read_of_a_finished_job_keeps_nothing() -> None:
    watch = CounterWatch(quiet_s=0)
    assert watch.settled(1, finished("Completed"), {"thumbnail": 9}, now=0) == frozenset()
    assert watch.settled(2, {"_id": 2, "stages": "not a document"}, {"thumbnail": 9}, now=0) == frozenset()
    assert len(watch) == 0
    # nothing of the counts was kept either: job 1 reopened starts from scratch
    watch = CounterWatch(quiet_s=10)
    watch.settled(1, finished("Completed"), {"thumbnail": 9}, now=0)
    assert watch.settled(1, doc(9), {"thumbnail": 9}, now=10) == frozenset()


def test_memory_follows_the_open_jobs_not_the_jobs_ever_seen() -> None:
    # 100 busy jobs at a time, 20,000 jobs in all, each seen open then finished
    watch = CounterWatch(quiet_s=10)
    most = 0
    for generation in range(200):
        for slot in range(100):
            watch.observe((generation, slot), doc(3), now=generation)
        most = max(most, len(watch))
        for slot in range(100):
            watch.observe((generation, slot), finished("Completed"), now=generation)
    assert most == 100
    assert len(watch) == 0


def test_a_counter_that_changes_type_but_not_number_has_moved() -> None:
    """The counter is compared as stored: 3, 3.0, Int64(3), True and "3" are
    five different values (a program that rewrote the field has touched it),
    and the same int is the same value."""
    from bson.int64 import Int64

    watch = CounterWatch(quiet_s=10)
    watch.settled(1, doc(3), {"thumbnail": 5}, now=0)
    assert watch.settled(1, doc(3), {"thumbnail": 5}, now=10) == {"thumbnail"}
    for moment, value in enumerate((3.0, Int64(3), True, "3", 3), start=1):
        watch.observe(1, doc(value), now=10 * moment)
        assert watch.settled(1, doc(value), {"thumbnail": 5}, now=10 * moment + 9) == frozenset(), value
    assert watch.settled(1, doc(3), {"thumbnail": 5}, now=60) == {"thumbnail"}  # the same int since 50
