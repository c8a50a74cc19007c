"""Spreading partitions over the live instances, the way a consumer group
rebalances (pure).

Each instance aims for its fair share, ``ceil(P / live instances)``, from the
instances' heartbeats: it takes free partitions up to it, and gives up its
surplus (in order: position saved, then lease released) when an instance
holds fewer than its share, so a newcomer finds partitions to take. One
instance alone holds all ``P``; a lease is only ever taken when free, so no
partition has two holders while the group rebalances.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable


def fair_share(partitions: int, instances: int) -> int:
    """How many partitions each of ``instances`` live instances should hold."""
    return math.ceil(partitions / max(instances, 1))


def surplus(held: Iterable[int], share: int, *, someone_below_share: bool) -> list[int]:
    """The partitions to give up: beyond ``share``, only while another
    instance holds fewer than its share (nobody else could take them
    otherwise); the highest-numbered first."""
    mine = sorted(held)
    if not someone_below_share or len(mine) <= share:
        return []
    return mine[share:]


def candidates(partitions: int, busy: Collection[int], rng: random.Random) -> list[int]:
    """The partitions worth trying to take, in a random order (instances that
    try at the same moment spread over different partitions)."""
    free = [k for k in range(partitions) if k not in busy]
    rng.shuffle(free)
    return free
