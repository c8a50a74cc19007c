"""Every branch of the dispatch loop, without a database: the dispatcher
writes to the in-memory job store (tests/support/memory.py), and the stream's
batches are handed to it as ``StreamReader`` hands them.

Held-back progress writes (issue 16): a progress write the rate limit or the
budget holds back is made once due, and never holds the saved position back.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import rules
from tests.support.documents import fresh_job
from tests.support.harness import wait_until
from tests.support.memory import MemoryJobStore
from watcher.decide.budget import ProgressBudget
from watcher.decide.coalesce import JobQueue
from watcher.decide.dispatch import Dispatcher
from watcher.ops.metrics import Metrics
from watcher.storage import backoff, errors
from watcher.storage.store import job_key

INTERVAL_S = 0.2


class Loop:
    """A running dispatcher, its queue and metrics, and the store it writes to."""

    def __init__(self, store: MemoryJobStore, dispatcher: Dispatcher, queue: JobQueue, metrics: Metrics) -> None:
        self.store, self.dispatcher, self.queue, self.metrics = store, dispatcher, queue, metrics
        self._token = 0

    async def events(self, *docs: dict[str, Any]) -> dict[str, int]:
        """The store's documents become these, and the stream hands them over
        as one batch; returns the batch's token."""
        self.store.add(*docs)
        self._token += 1
        token = {"_data": self._token}
        await self.dispatcher.accept([(job_key(doc["_id"]), doc, None) for doc in docs], token, anyio.current_time())
        return token

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def writes(self, kind: str, result: str = "applied", source: str = "stream") -> float:
        return self.sample("jobwatch_writes_total", source=source, kind=kind, result=result)


@contextlib.asynccontextmanager
async def dispatching(
    store: MemoryJobStore | None = None,
    *,
    budget: ProgressBudget | None = None,
    give_up_after: int | None = None,
    workers: int = 2,
) -> AsyncIterator[Loop]:
    store = store or MemoryJobStore()
    metrics = Metrics()
    queue = JobQueue(max_jobs=100, progress_interval_s=INTERVAL_S)
    dispatcher = Dispatcher(
        store,
        queue,
        metrics,
        workers=workers,
        policy=rules.DEFAULT_POLICY,
        retry_backoff=backoff.Backoff(base_s=0.01, max_s=0.02),
        progress_budget=budget or ProgressBudget(),
        progress_interval_s=INTERVAL_S,
        clock=anyio.current_time,
    )
    with anyio.fail_after(60):  # beyond wait_until's deadline, which says what was awaited
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(dispatcher.run, give_up_after=give_up_after))
            yield Loop(store, dispatcher, queue, metrics)
            tg.cancel_scope.cancel()


def counted(job: dict[str, Any], **done: int) -> dict[str, Any]:
    """``job`` with stage counters moved to ``done`` (stage -> items)."""
    stages = {
        name: {**stage, "completedItems": done.get(name, stage["completedItems"])}
        for name, stage in job["stages"].items()
    }
    return {**job, "stages": stages}


def until(check: Any) -> Any:
    async def predicate() -> bool:
        return bool(check())

    return predicate


async def test_a_completing_event_is_written_at_once_and_timed() -> None:
    async with dispatching() as loop:
        job = fresh_job(2)
        await loop.events(counted(job, thumbnail=2, cache=2))
        await wait_until(until(lambda: loop.store.get(job["_id"])["status"] == "Completed"), what="the completion")
        assert loop.writes("job") == 1
        assert loop.sample("jobwatch_decision_seconds_count", kind="job") == 1


async def test_a_guard_that_no_longer_holds_is_counted_stale_and_changes_nothing() -> None:
    async with dispatching() as loop:
        job = counted(fresh_job(2), thumbnail=2, cache=2)
        await loop.events(job)
        loop.store.add(counted(job, thumbnail=1))  # a consumer's correction landed first
        await wait_until(until(lambda: loop.writes("job", "stale") == 1), what="the stale write")
        assert loop.store.get(job["_id"])["status"] == "InProgress"


async def test_an_unreadable_job_is_skipped_and_logged_once() -> None:
    async with dispatching() as loop:
        broken = {"_id": "broken", "status": "Pending", "stages": "not a document"}
        for _ in range(3):
            await loop.events(broken)
        await loop.dispatcher.drained()
        assert loop.sample("jobwatch_skipped_jobs_total", reason="unreadable") == 1
        assert loop.store.writes == []


async def test_a_write_the_server_refuses_skips_the_job_without_retrying() -> None:
    store = MemoryJobStore()
    store.fail_next(errors.Rejected("update of job 'x': DocumentValidationFailure", error="DocumentValidationFailure"))
    async with dispatching(store) as loop:
        job = counted(fresh_job(1), thumbnail=1, cache=1)
        await loop.events(job)
        await wait_until(
            until(lambda: loop.sample("jobwatch_skipped_jobs_total", reason="write_refused") == 1), what="the skip"
        )
        await loop.dispatcher.drained()
        assert loop.store.writes == [] and not loop.store.failures
        assert loop.sample("jobwatch_errors_total", error="DocumentValidationFailure", action="skip") == 1


async def test_an_unavailable_store_is_retried_until_the_write_goes_through() -> None:
    store = MemoryJobStore()
    store.fail_next(errors.StoreUnavailable("update: AutoReconnect", error="AutoReconnect"), times=3)
    async with dispatching(store) as loop:
        job = counted(fresh_job(1), thumbnail=1, cache=1)
        token = await loop.events(job)
        await wait_until(
            until(lambda: loop.store.get(job["_id"])["status"] == "Completed"), what="the retried completion"
        )
        assert loop.sample("jobwatch_errors_total", error="AutoReconnect", action="resume") == 3
        await loop.dispatcher.drained()
        assert loop.queue.advance(anyio.current_time()) == token  # handled only once written


async def test_a_one_shot_caller_gives_up_after_its_attempts() -> None:
    store = MemoryJobStore()
    store.fail_next(errors.StoreUnavailable("update: AutoReconnect", error="AutoReconnect"), times=100)
    with pytest.raises(BaseExceptionGroup) as caught:
        async with dispatching(store, give_up_after=3) as loop:
            await loop.events(counted(fresh_job(1), thumbnail=1, cache=1))
            await anyio.sleep_forever()  # ended by the dispatcher's error
    assert caught.group_contains(errors.StoreUnavailable)
    assert len(store.failures) == 100 - 3


async def test_a_rate_limited_progress_write_is_made_when_due_without_holding_the_position() -> None:
    async with dispatching() as loop:
        job = fresh_job(10)
        await loop.events(counted(job, thumbnail=1))
        await wait_until(until(lambda: loop.writes("progress") == 1), what="the first progress write")
        token = await loop.events(counted(job, thumbnail=2))  # within the interval: held back
        await wait_until(until(lambda: loop.queue.trailing_jobs == 1), what="the held-back write")
        assert loop.queue.advance(anyio.current_time()) == token  # the position moves on meanwhile
        await wait_until(until(lambda: loop.writes("progress") == 2), what="the held-back write, once due")
        assert loop.store.get(job["_id"]).get("progress") == 10


async def test_a_progress_write_over_budget_is_made_once_the_job_stops_moving() -> None:
    # The budget has one write and no credit per event: only the quiet-stream
    # refill can pay for the second job's progress. Before held-back writes,
    # it was dropped: its progress stayed stale until the next sweep.
    async with dispatching(budget=ProgressBudget(fraction=0.0, burst=1.0)) as loop:
        first, second = fresh_job(10), fresh_job(10)
        await loop.events(counted(first, thumbnail=5))
        await wait_until(until(lambda: loop.writes("progress") == 1), what="the one write the budget has")
        token = await loop.events(counted(second, thumbnail=3, cache=3))
        await wait_until(until(lambda: loop.queue.trailing_jobs == 1), what="the held-back write")
        assert loop.queue.advance(anyio.current_time()) == token  # held back, not holding the position
        await wait_until(
            until(lambda: loop.store.get(second["_id"]).get("progress") == 30), what="the held-back progress"
        )
        assert loop.writes("progress") == 2


async def test_news_replaces_a_held_back_write_and_a_completion_is_never_held() -> None:
    async with dispatching(budget=ProgressBudget(fraction=0.0, burst=1.0)) as loop:
        job = fresh_job(4)
        await loop.events(counted(job, thumbnail=1))
        await wait_until(until(lambda: loop.writes("progress") == 1), what="the one write the budget has")
        await loop.events(counted(job, thumbnail=2))  # over budget: held back
        await wait_until(until(lambda: loop.queue.trailing_jobs == 1), what="the held-back write")
        await loop.events(counted(job, thumbnail=4, cache=4))  # the completion: written at once
        await wait_until(until(lambda: loop.writes("job") == 1), what="the completion")
        assert loop.queue.trailing_jobs == 0  # the held-back progress went with the news
        await loop.dispatcher.drained()
        assert loop.writes("progress") == 1


async def test_a_full_queue_makes_the_stream_wait_until_work_finishes() -> None:
    store = MemoryJobStore()
    metrics = Metrics()
    queue = JobQueue(max_jobs=2, progress_interval_s=0)
    dispatcher = Dispatcher(
        store,
        queue,
        metrics,
        workers=1,
        policy=rules.DEFAULT_POLICY,
        retry_backoff=backoff.Backoff(base_s=0.01, max_s=0.02),
    )
    jobs = [counted(fresh_job(1), thumbnail=1, cache=1) for _ in range(5)]
    store.add(*jobs)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            accepted = anyio.Event()

            async def hand_over() -> None:
                await dispatcher.accept([(job_key(job["_id"]), job, None) for job in jobs], {"_data": 1}, 0.0)
                accepted.set()

            tg.start_soon(hand_over)
            await wait_until(until(lambda: queue.full), what="a full queue")
            assert not accepted.is_set()
            tg.start_soon(dispatcher.run)
            await accepted.wait()
            await dispatcher.drained()
            tg.cancel_scope.cancel()
    assert all(store.get(job["_id"])["status"] == "Completed" for job in jobs)
