"""A job the sweep cannot decode is reported by every pass, but counted and
logged once, through the same path as the dispatcher's own skips."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import rules
from watcher.decide.coalesce import JobQueue
from watcher.decide.dispatch import Dispatcher
from watcher.intake.counter_watch import CounterWatch
from watcher.intake.sweep import Sweeper
from watcher.ops.metrics import Metrics
from watcher.storage import backoff
from watcher.storage.store import Unreadable


class UndecodableJobs:
    """A store whose only open job cannot be decoded."""

    async def open_jobs(self, *, full: bool, job_types: Iterable[str] = ()) -> AsyncIterator[list[dict[str, Any]]]:
        yield [Unreadable("broken", "InvalidBSON: bad utf-8")]

    async def collection_counts(self, collection_ids: Iterable[Any]) -> dict[Any, dict[str, int]]:
        return {}


def skipped_total(metrics: Metrics) -> float:
    return sum(
        sample.value
        for metric in metrics.skipped_jobs.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def test_an_undecodable_job_is_reported_each_pass_and_counted_once() -> None:
    metrics = Metrics()
    store: Any = UndecodableJobs()
    dispatcher = Dispatcher(
        store,
        JobQueue(max_jobs=10, progress_interval_s=0),
        metrics,
        workers=1,
        policy=rules.DEFAULT_POLICY,
        retry_backoff=backoff.Backoff(base_s=0.1, max_s=1),
    )
    sweeper = Sweeper(
        store, metrics, policy=rules.DEFAULT_POLICY, counters=CounterWatch(quiet_s=1), dispatcher=dispatcher
    )
    for _ in range(3):
        report = await sweeper.sweep(full=True)
        assert report.skipped == [("broken", "InvalidBSON: bad utf-8")]
    assert skipped_total(metrics) == 1
