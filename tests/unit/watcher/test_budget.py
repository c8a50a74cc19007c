"""The progress-write budget: progress writes stay a share of events seen."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.decide.budget import DEFAULT_BURST, DEFAULT_FRACTION, ProgressBudget

# An operation: ("events", n) seen, or ("spend", 1) one progress write asked for.
operations = st.lists(
    st.one_of(st.tuples(st.just("events"), st.integers(0, 50)), st.tuples(st.just("spend"), st.just(1))),
    max_size=400,
)


@settings(max_examples=400)
@given(ops=operations, fraction=st.floats(0.0, 1.0), burst=st.floats(1.0, 20.0))
def test_writes_never_exceed_the_fraction_of_events_plus_the_burst(
    ops: list[tuple[str, int]], fraction: float, burst: float
) -> None:
    budget = ProgressBudget(fraction=fraction, burst=burst)
    events = 0
    for kind, n in ops:
        if kind == "events":
            budget.credit(n)
            events += n
        else:
            budget.try_spend()
        # At every prefix, not only at the end: the bound holds over any stretch from the start.
        assert budget.granted <= fraction * events + burst + 1e-9


@settings(max_examples=300)
@given(increments=st.lists(st.integers(1, 30), max_size=300), completions=st.integers(0, 50))
def test_with_its_own_writes_echoed_back_the_default_stays_under_ten_percent_of_increments(
    increments: list[int], completions: int
) -> None:
    """Each write the watcher makes comes back to it as a change event too;
    the default fraction accounts for that (every spend is asked for)."""
    budget = ProgressBudget()
    budget.credit(completions)  # completion writes' own events
    consumer_increments = 0
    for batch in increments:
        budget.credit(batch)
        consumer_increments += batch
        for _ in range(batch + 20):  # ask until refused (bounded: a broken budget fails, not hangs)
            if not budget.try_spend():
                break
            budget.credit(1)  # the progress write's own change event
    assert budget.granted <= 0.099 * (consumer_increments + completions) + DEFAULT_BURST / (1 - DEFAULT_FRACTION)


@settings(max_examples=200)
@given(spends=st.integers(1, 200), fraction=st.floats(0.01, 1.0))
def test_a_spend_after_enough_events_is_always_granted(spends: int, fraction: float) -> None:
    """The budget only refuses when it is spent: enough events always buy a write."""
    budget = ProgressBudget(fraction=fraction, burst=1.0)
    assert budget.try_spend()
    events_per_write = int(1 / fraction) + 1
    for _ in range(spends):
        budget.credit(events_per_write)
        assert budget.try_spend()
    assert budget.refused == 0


def test_a_full_bucket_allows_a_burst_then_refuses() -> None:
    budget = ProgressBudget(fraction=0.1, burst=3.0)
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]
    assert (budget.granted, budget.refused) == (3, 1)


def test_credits_do_not_pile_up_beyond_the_burst() -> None:
    budget = ProgressBudget(fraction=0.5, burst=2.0)
    budget.credit(1000)
    assert budget.tokens == 2.0
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]


def test_ten_events_buy_one_write_at_ten_percent() -> None:
    budget = ProgressBudget(fraction=0.1, burst=1.0)
    assert budget.try_spend()
    budget.credit(9)
    assert not budget.try_spend()
    budget.credit(1)
    assert budget.try_spend()


def test_no_events_no_negative_credit() -> None:
    budget = ProgressBudget(fraction=0.1, burst=1.0)
    budget.credit(0)
    budget.credit(-5)
    assert budget.tokens == 1.0


@pytest.mark.parametrize(("fraction", "burst"), [(-0.1, 5.0), (1.5, 5.0), (0.1, 0.5)])
def test_nonsense_settings_are_refused(fraction: float, burst: float) -> None:
    with pytest.raises(ValueError):
        ProgressBudget(fraction=fraction, burst=burst)


@settings(max_examples=200)
@given(
    ops=st.lists(st.sampled_from(["event", "spend", "refill"]), max_size=300),
    fraction=st.floats(0.0, 1.0),
    burst=st.floats(1.0, 20.0),
)
def test_a_refill_adds_at_most_one_burst(ops: list[str], fraction: float, burst: float) -> None:
    """The quiet-stream refill is the one credit not earned by events: each adds at most ``burst``."""
    budget = ProgressBudget(fraction=fraction, burst=burst)
    events = 0
    for op in ops:
        if op == "event":
            budget.credit()
            events += 1
        elif op == "spend":
            budget.try_spend()
        else:
            budget.refill()
        assert budget.granted <= fraction * events + burst * (1 + budget.refills) + 1e-9
