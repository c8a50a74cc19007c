"""The stream reader forgets path A's evidence for a job it sees deleted
(an update whose looked-up document is gone), so deleted jobs are not
remembered until the cap pushes them out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from watcher.decide.coalesce import JobQueue
from watcher.decide.dispatch import Dispatcher
from watcher.intake import stream
from watcher.intake.counter_watch import CounterWatch
from watcher.ops.metrics import Metrics
from watcher.settings import Settings
from watcher.storage import backoff


class ListStream:
    """Hands out ``events`` one batch each, then waits like an idle getMore."""

    def __init__(self, events: Sequence[Mapping[str, Any]]) -> None:
        self._events = list(events)
        self.delivered = 0

    async def next_batch(self) -> Sequence[Mapping[str, Any]]:
        if self.delivered < len(self._events):
            self.delivered += 1
            return [self._events[self.delivered - 1]]
        await anyio.sleep(0.05)
        return ()

    @property
    def resume_token(self) -> Any:
        return {"_data": f"{self.delivered:04d}"}

    async def close(self) -> None:
        return None


def event(n: int, job_id: int, full_document: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "_id": {"_data": f"{n:04d}"},
        "operationType": "update",
        "documentKey": {"_id": job_id},
        "fullDocument": full_document,
    }


async def test_a_deleted_job_is_forgotten() -> None:
    settings = Settings(health_port=0)
    queue = JobQueue(max_jobs=10, progress_interval_s=0)
    healthy = backoff.Backoff(base_s=0.1, max_s=1)
    dispatcher = Dispatcher(None, queue, Metrics(), workers=1, policy=None, retry_backoff=healthy)  # type: ignore[arg-type]  # never runs: nothing is evaluated
    counters = CounterWatch(quiet_s=10)
    reader = stream.StreamReader(
        None,  # type: ignore[arg-type]  # consume() is given its stream
        dispatcher,
        Metrics(),
        pipeline=stream.pipeline(settings),
        max_await_ms=settings.max_await_ms,
        server_selection_s=1.0,
        healthy=healthy,
        counters=counters,
    )
    stages = {"thumbnail": {"completedItems": 1, "totalItems": 9}}
    open_doc = {"_id": 1, "status": "InProgress", "collectionId": "c1", "stages": stages}  # path A is watched for it
    other = {**open_doc, "_id": 2}
    source = ListStream([event(1, 1, open_doc), event(2, 2, other)])
    seen_both = False
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.consume, source)
            while source.delivered < 2:
                await anyio.sleep(0.01)
            seen_both = len(counters) == 2
            source._events.append(event(3, 1, None))  # job 1 deleted before the lookup
            while len(counters) != 1:  # job 2 is still open and remembered
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert seen_both
