"""What ``evaluate`` returns: small immutable values, no I/O.

An ``Evaluation`` carries the canonical field writes (dotted path -> value),
the guard those writes must be applied under, and a rule-by-rule account.
Storage code turns writes and guard into one conditional update; nothing
here knows about the driver.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple


class _ServerNow:
    """Marker for "the server's clock at write time" ($$NOW / $currentDate).

    The rules never read a clock for what they write: two watchers, or a
    watcher on a skewed host, must agree on the timestamp source.
    """

    _instance: _ServerNow | None = None

    def __new__(cls) -> _ServerNow:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SERVER_NOW"


SERVER_NOW: Final = _ServerNow()


class _Value(NamedTuple):
    """Base of the small immutable values below: tuple-fast to build (one
    evaluation makes dozens), but only equal to a value of the same kind."""

    value: Any

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self)))


class Raise(_Value):
    """Raise a counter to at least ``value``: MongoDB's ``$max``, never ``$set``,
    so a consumer's concurrent ``$inc`` is never undone."""

    __slots__ = ()


WriteValue = int | str | _ServerNow | Raise


# Guard conditions: what the decision relied on, re-checked by the server.


class Equals(_Value):
    """The field still holds exactly what we read (null also matches missing)."""

    __slots__ = ()


class AtLeast(_Value):
    """A numeric counter is still at least ``value``. Counters only grow under
    ``$inc``, so growth since our read does not invalidate the decision."""

    __slots__ = ()


class StageNames(_Value):
    """The job still has exactly these stages (none added or removed);
    ``value`` is the tuple of names."""

    __slots__ = ()


Condition = Equals | AtLeast | StageNames


class Outcome(enum.Enum):
    """What an evaluation decided, from most to least significant."""

    JOB_COMPLETED = "job_completed"
    STAGE_COMPLETED = "stage_completed"
    PROGRESS = "progress"
    UNCHANGED = "unchanged"
    TERMINAL = "terminal"
    REJECTED = "rejected"


class Finding(NamedTuple):
    """One rule's verdict on one job (or one of its stages)."""

    rule: int
    title: str
    holds: bool
    detail: str
    stage: str | None = None


_NOTHING: Mapping[str, Any] = MappingProxyType({})


class Evaluation(NamedTuple):
    """The rules' decision for one job document.

    ``writes`` is empty when nothing is to change; then no database call is
    needed. Otherwise the caller applies all ``writes`` in one update whose
    filter is ``guard`` (plus the job's ``_id``): if the document changed in
    a way the decision relied on, the update matches nothing, which is right.

    ``findings`` (the rule-by-rule account) are recorded only when asked for,
    with ``evaluate(..., explain=True)``: the hot path does not format text
    nobody reads. ``rules.explain.render`` turns them into what
    ``jobwatch explain`` prints.
    """

    job_id: Any
    outcome: Outcome
    writes: Mapping[str, WriteValue] = _NOTHING
    guard: Mapping[str, Condition] = _NOTHING
    completed_stages: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    rejection: str | None = None
    job_type: Any = None

    @property
    def completes_job(self) -> bool:
        """The update completes the job (and any stages still open with it)."""
        return self.outcome is Outcome.JOB_COMPLETED

    @property
    def completes_stage(self) -> bool:
        """The update completes at least one stage."""
        return bool(self.completed_stages)
