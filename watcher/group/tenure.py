"""How long a lease may be trusted, on this process's own clock (pure).

The server sets a lease's expiry to *its* ``$$NOW`` + ``lease_s`` when it
applies a take or a renewal, and it applies it after the request was sent.
So, measured on any clock that runs at a sane rate, the lease lasts at least
``lease_s`` from the moment the request was **sent**, whatever the clocks of
the server and of this host say: only durations on one clock are compared,
never two clocks' readings.

A holder stops by itself at its renew deadline, ``2/3`` of the lease after
its last successful renewal was sent (client-go's ratio: 10 s of 15), and
so before the lease can run out on the server and another instance can take
it. The last third covers the stop itself and an event loop that was slow
to notice.

    timing = Timing(lease_s=10, renew_s=2)
    tenure = Tenure(grant, timing, renewed_at=sent_at)
    tenure.lapsed(now)        # past the renew deadline: stop now
"""

from __future__ import annotations

from dataclasses import dataclass

from watcher.storage.lease import Grant

#: The renew deadline as a share of the lease.
RENEW_DEADLINE_SHARE = 2 / 3
#: After a failed renewal, the next attempt comes sooner: this share of renew_s.
RETRY_SHARE = 1 / 4


@dataclass(frozen=True)
class Timing:
    lease_s: float
    renew_s: float

    @property
    def deadline_s(self) -> float:
        """A holder that could not renew for this long stops by itself."""
        return self.lease_s * RENEW_DEADLINE_SHARE

    @property
    def retry_s(self) -> float:
        return self.renew_s * RETRY_SHARE


@dataclass
class Tenure:
    """One lease this instance holds: its grant and when it was last renewed."""

    grant: Grant
    timing: Timing
    #: Local monotonic time the last successful take or renewal was sent.
    renewed_at: float

    @property
    def deadline_at(self) -> float:
        return self.renewed_at + self.timing.deadline_s

    def lapsed(self, now: float) -> bool:
        """Past the renew deadline: stop streaming and writing now."""
        return now >= self.deadline_at

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` succeeded (a late reply to an older
        request never moves the deadline back)."""
        self.renewed_at = max(self.renewed_at, sent_at)

    def renew_budget_s(self, now: float) -> float:
        """How long a renewal sent now may take: never past the renew deadline."""
        return max(min(self.timing.renew_s, self.deadline_at - now), 0.0)
