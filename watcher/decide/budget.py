"""The progress-write budget: across all jobs, progress-only writes stay a
fixed share of the change events the watcher sees.

Why a budget and not only a per-job interval: with many slow jobs (100 jobs,
one increment every few seconds each) a per-job "at most once a second" lets
nearly every increment through as a write of its own, so the watcher doubles
the primary's write load. Crediting the budget per event seen makes the
bound hold at every rate and every job count: over any stretch,

    progress writes <= fraction * events + burst

A token bucket, filled by events rather than by time, so it needs no clock:
``credit()`` for each change event, ``try_spend()`` before a progress-only
write. Completions (a stage or the job) never ask: they are never delayed
and never debited.

The events the watcher sees include those of its own writes. With ``f`` the
fraction, progress writes ``W`` against consumer increments ``I`` obey
``W <= f * (I + W + completions) + burst``; the default ``f = 0.09`` keeps
``W`` under 10 % of ``I`` (``0.09 / 0.91 < 0.099``).

Integration (dispatch, before a PROGRESS write): a refused write is not
dropped: the dispatcher holds it back (a trailing write, see
``watcher.decide.coalesce``) and makes it once the job has been quiet for
``progress_interval_s`` and a token is free, before any new progress write
asks. Held back beside the queue, it never holds the saved position back.

Events credit the bucket, so a watcher whose consumers all stopped would
never earn the tokens its last held-back writes need: when no event arrived
for a whole ``progress_interval_s``, the dispatcher refills the bucket
(``refill()``). That adds at most ``burst`` writes per quiet interval, and
only while nothing else is being written; the bound becomes

    progress writes <= fraction * events + burst * (1 + refills)
"""

from __future__ import annotations

#: Share of change events that may become progress-only writes (see above for
#: why 0.09 and not 0.10).
DEFAULT_FRACTION = 0.09
#: Writes the bucket can hold: what a quiet period can save up for a burst.
DEFAULT_BURST = 10.0


class ProgressBudget:
    """A token bucket credited by change events, debited per progress write.

    >>> budget = ProgressBudget(fraction=0.1, burst=1.0)
    >>> budget.try_spend(), budget.try_spend()
    (True, False)
    >>> budget.credit(10)
    >>> budget.try_spend()
    True
    """

    def __init__(self, *, fraction: float = DEFAULT_FRACTION, burst: float = DEFAULT_BURST) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be within 0..1 (got {fraction!r})")
        if burst < 1.0:
            raise ValueError(f"burst must allow at least one write (got {burst!r})")
        self._fraction = fraction
        self._burst = burst
        self._tokens = burst  # a fresh watcher may write the first few at once
        self.granted = 0
        self.refused = 0
        self.refills = 0

    def credit(self, events: int = 1) -> None:
        """``events`` change events were seen (any job, any operation)."""
        if events <= 0:
            return
        self._tokens = min(self._tokens + events * self._fraction, self._burst)

    def try_spend(self) -> bool:
        """True (and one token used) if a progress-only write may go now."""
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.granted += 1
            return True
        self.refused += 1
        return False

    def refill(self) -> None:
        """Fill the bucket (the stream was quiet: see the module's docstring)."""
        self._tokens = self._burst
        self.refills += 1

    @property
    def tokens(self) -> float:
        """Writes available now (fractional: part of the next one)."""
        return self._tokens

    @property
    def fraction(self) -> float:
        return self._fraction

    @property
    def burst(self) -> float:
        return self._burst
