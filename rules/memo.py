"""Values the rules build on every event, each made once per distinct input:
a stage's field paths (``stages.thumbnail.completedItems``), the guard
conditions (``Equals("InProgress")``, ``AtLeast(132)``, ``StageNames(...)``)
and the raises (``Raise(50)``).

The same few values recur event after event; building a class instance costs
far more than a dict lookup, and a hit here is a plain C-level subscript.
Each memo forgets everything when it reaches ``LIMIT`` entries, so documents
with ever-new values cannot grow it. Behaviour is that of building the value
afresh: the values are immutable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Generic, NamedTuple, TypeVar

from rules.decision import AtLeast, Condition, Equals, Raise, StageNames

K = TypeVar("K")
V = TypeVar("V")

LIMIT: Final = 4096


class Memo(dict[K, V], Generic[K, V]):
    """``memo[key]`` is ``make(key)``, made once (until the memo is full)."""

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[K], V]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: K) -> V:
        if len(self) >= LIMIT:
            self.clear()
        value = self[key] = self._make(key)
        return value


class StagePaths(NamedTuple):
    """The dotted paths of one stage's fields, as updates and guards name them."""

    status: str
    total: str
    completed: str
    progress: str
    message: str
    completed_at: str


def _stage_paths(name: str) -> StagePaths:
    prefix = f"stages.{name}."
    leaves = ("status", "totalItems", "completedItems", "progress", "message", "completedAt")
    return StagePaths(*(prefix + leaf for leaf in leaves))


#: ``STAGE_PATHS[name]``: the field paths of the stage called ``name``.
STAGE_PATHS: Final[Memo[str, StagePaths]] = Memo(_stage_paths)
#: ``STAGE_NAMES[names]``: the guard "the job has exactly these stages".
STAGE_NAMES: Final[Memo[tuple[str, ...], StageNames]] = Memo(StageNames)
#: ``RAISES[n]``: raise a counter to at least ``n`` (always a plain int: the rules compute it).
RAISES: Final[Memo[int, Raise]] = Memo(Raise)

# Keys carry the value's type where types can mix, so 1, 1.0, Int64(1) and
# True stay apart (they are equal, and hash alike, in Python).
_EQUALS_PLAIN: Final[Memo[int | str, Condition]] = Memo(Equals)  # exact int or str only
_EQUALS_TYPED: Final[Memo[tuple[type, Any], Condition]] = Memo(lambda key: Equals(key[1]))
_AT_LEAST: Final[Memo[tuple[type, Any], Condition]] = Memo(lambda key: AtLeast(key[1]))
_EQUALS_NONE: Final = Equals(None)


def equals(raw: Any) -> Condition:
    """``Equals(raw)``: the field still holds exactly the value read."""
    if raw is None:
        return _EQUALS_NONE
    if type(raw) is str or type(raw) is int:
        return _EQUALS_PLAIN[raw]
    try:
        return _EQUALS_TYPED[(type(raw), raw)]
    except TypeError:  # unhashable (Decimal128): made fresh
        return Equals(raw)


def at_least(bound: int | float) -> Condition:
    """``AtLeast(bound)``: a counter is still at least ``bound``."""
    return _AT_LEAST[(type(bound), bound)]
