"""The periodic schedule: most sweeps read the open spellings only; every
``full_sweep_every``-th also reads missing and unknown statuses, so an odd
status is found within that many intervals; without a stream, every sweep
is full."""

from __future__ import annotations

import anyio
import pytest

from watcher.intake.supervisor import Sweeps
from watcher.intake.sweep import SweepReport
from watcher.ops.metrics import Metrics
from watcher.storage import backoff

DEADLINE_S = 10


async def passes(*, every: int, degraded: bool, count: int) -> list[bool]:
    seen: list[bool] = []
    done = anyio.Event()

    async def sweep(full: bool) -> SweepReport:
        seen.append(full)
        if len(seen) == count:
            done.set()
        return SweepReport(full=full)

    async def after(report: SweepReport) -> None:
        pass

    sweeps = Sweeps(
        sweep,
        Metrics(),
        interval_s=0.001,
        degraded_interval_s=0.001,
        full_every=every,
        retry=backoff.Backoff(base_s=0.01, max_s=0.1),
        after=after,
    )
    with anyio.fail_after(DEADLINE_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sweeps.periodic, lambda: degraded)
            await done.wait()
            tg.cancel_scope.cancel()
    return seen[:count]


@pytest.mark.parametrize("every", [1, 3, 12])
async def test_every_nth_periodic_sweep_is_full(every: int) -> None:
    count = 2 * every + 1
    seen = await passes(every=every, degraded=False, count=count)
    assert [n for n, full in enumerate(seen, start=1) if full] == [n for n in range(1, count + 1) if n % every == 0]


async def test_without_a_stream_every_sweep_is_full() -> None:
    assert await passes(every=12, degraded=True, count=5) == [True] * 5
