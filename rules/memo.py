"""Bounded memos of small immutable values the rules build on every event.

The same few values recur event after event (the paths of a stage named
``thumbnail``, ``Equals("InProgress")``, ``AtLeast(132)``, ``Raise(50)``);
building a class instance costs far more than a dict lookup, and a hit here is
a plain C-level subscript. Each memo forgets everything when it reaches
``LIMIT`` entries, so documents with ever-new values cannot grow it.
Behaviour is that of building the value afresh: the values are immutable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

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
