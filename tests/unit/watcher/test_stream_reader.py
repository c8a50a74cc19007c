"""The stream reader takes a batch at a time: every event of it queued before
it reads again, the batch's position recorded after them, the metrics
counted once per batch; an ending event hands over what came before it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import pytest

import rules
from tests.support.memory import MemoryJobStore
from watcher.decide.coalesce import JobQueue
from watcher.decide.dispatch import Dispatcher
from watcher.intake import stream
from watcher.ops.metrics import Metrics
from watcher.settings import Settings
from watcher.storage import backoff, errors


class Batches:
    """Hands out one batch per read, then reads that never answer."""

    def __init__(self, *batches: Sequence[Mapping[str, Any]], token: str = "end") -> None:
        self._batches = list(batches)
        self._token = token
        self.reads = 0

    async def next_batch(self) -> Sequence[Mapping[str, Any]]:
        self.reads += 1
        if not self._batches:
            await anyio.sleep_forever()
        return self._batches.pop(0)

    @property
    def resume_token(self) -> Any:
        return {"_data": f"{self._token}{self.reads}"}

    async def close(self) -> None:
        return None


def update(n: int, job_id: Any) -> dict[str, Any]:
    doc = {"_id": job_id, "status": "InProgress", "stages": {"a": {"completedItems": n, "totalItems": 9}}}
    return {
        "_id": {"_data": f"{n:04d}"},
        "operationType": "update",
        "documentKey": {"_id": job_id},
        "fullDocument": doc,
    }


def reader_and_queue(max_await_ms: int = 1000) -> tuple[stream.StreamReader, JobQueue, Metrics]:
    queue = JobQueue(max_jobs=10, progress_interval_s=0)
    metrics = Metrics()
    healthy = backoff.Backoff(base_s=0.1, max_s=1)
    dispatcher = Dispatcher(
        MemoryJobStore(), queue, metrics, workers=1, policy=rules.DEFAULT_POLICY, retry_backoff=healthy
    )
    reader = stream.StreamReader(
        None,  # type: ignore[arg-type]  # consume() is given its stream
        dispatcher,
        metrics,
        pipeline=stream.pipeline(Settings(health_port=0)),
        max_await_ms=max_await_ms,
        server_selection_s=1.0,
        healthy=healthy,
    )
    return reader, queue, metrics


async def test_a_batch_is_queued_whole_and_its_position_recorded_after_it() -> None:
    reader, queue, metrics = reader_and_queue()
    source = Batches([update(1, "a"), update(2, "a"), update(3, "b")])
    with anyio.move_on_after(0.5):  # the second read never answers
        await reader.consume(source)
    assert queue.pending_jobs == 2  # a's two events became one evaluation
    assert metrics.registry.get_sample_value("jobwatch_events_received_total", {"operation": "update"}) == 3
    assert reader.last_token == {"_data": "end1"}
    work = [queue.take(0), queue.take(0)]
    assert [w.doc["stages"]["a"]["completedItems"] for w in work if w is not None] == [2, 3]
    for w in work:
        assert w is not None
        queue.finish(w)
    assert queue.advance(0) == {"_data": "end1"}  # the batch's post-batch token, once all of it is handled


async def test_an_ending_event_hands_over_what_came_before_it() -> None:
    reader, queue, _ = reader_and_queue()
    source = Batches([update(1, "a"), {"_id": {"_data": "x"}, "operationType": "invalidate"}, update(2, "b")])
    with pytest.raises(errors.StreamBroken) as broken:
        await reader.consume(source)
    assert broken.value.action is errors.Action.RESTART
    assert queue.pending_jobs == 1 and reader.last_token is None  # "a" queued; no position past the end


async def test_a_read_that_never_answers_is_a_stall() -> None:
    reader, _, _ = reader_and_queue(max_await_ms=10)  # the stall bound is then its floor, 1 s
    source = Batches([update(1, "a")])
    with anyio.fail_after(10), pytest.raises(errors.StreamBroken) as broken:
        await reader.consume(source)
    assert broken.value.error == "StreamStalled" and source.reads == 2
    assert reader.health.last_batch_at is not None
