"""The machine's load while a benchmark runs, sampled along the run.

The results file's ``machine.load_avg_1m`` is one reading, taken when the
file is written. On a machine shared with other work the load moves during a
long run, and wall-clock figures move with it, so the benchmarks that run for
minutes keep the 1-minute load average at their start, end, lowest and
highest sample beside their figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


def load_avg_1m() -> float:
    return round(os.getloadavg()[0], 2)


def span(summary: dict[str, Any]) -> str:
    """A ``LoadWatch.summary()`` as the tables show it: ``min-max``."""
    return f"{summary['min']}-{summary['max']}"


@dataclass
class LoadWatch:
    samples: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sample()

    def sample(self) -> float:
        value = load_avg_1m()
        self.samples.append(value)
        return value

    def summary(self) -> dict[str, Any]:
        """``{start, end, min, max, samples}`` (the end is sampled now)."""
        self.sample()
        return {
            "start": self.samples[0],
            "end": self.samples[-1],
            "min": min(self.samples),
            "max": max(self.samples),
            "samples": len(self.samples),
        }
