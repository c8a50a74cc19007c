"""Retry delays: exponential, capped, full jitter (pure; only the caller sleeps)."""

from __future__ import annotations

import random
from collections.abc import Callable


def delay_s(attempt: int, *, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt`` (1-based): uniform in [0, min(max, base*2^(attempt-1))].

    Full jitter spreads two watchers (or two hundred) that failed together.
    """
    if attempt < 1:
        return 0.0
    ceiling: float = min(max_s, base_s * 2.0 ** min(attempt - 1, 32))
    return ceiling * rand()


class Backoff:
    """Counts consecutive failures; ``reset()`` after a healthy batch."""

    def __init__(self, *, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> None:
        self._base_s = base_s
        self._max_s = max_s
        self._rand = rand
        self.attempt = 0

    def next_delay_s(self) -> float:
        self.attempt += 1
        return delay_s(self.attempt, base_s=self._base_s, max_s=self._max_s, rand=self._rand)

    def reset(self) -> None:
        self.attempt = 0
