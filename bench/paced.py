"""The watcher's own ceiling: its real intake and dispatch, the database removed.

With a database in the loop the sustained rate says how fast the database
and the consumers go (the embedded server tops out near 100 ``$inc``/s on
these machines), not how fast the watcher can go. Here the product's
``StreamReader`` and ``Dispatcher`` (with its ``JobQueue``, the rules, the
progress budget, update building, metrics and the anyio tasks and signalling
between them) run as in the service, wired as ``Watcher`` wires them; only
the two ends are replaced:

- the change source (the seam the service takes) replays events from
  ``bench/replay.py`` paced on the wall clock at the asked rate, each event
  due at ``start + n / rate`` and handed out no earlier; when nothing is due
  a read waits, like a ``getMore`` with max-await;
- the store answers every guarded update at once (``matched``), so a write
  costs the watcher its own work and nothing else.

The source falls behind its schedule exactly when the watcher does: the
backlog is the events due minus the events read, and "kept up" means the
same as with a database (read >= 95 % of due over the window, backlog not
growing over its second half).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import anyio

import rules
from bench import load, replay
from watcher.decide.coalesce import JobQueue
from watcher.decide.dispatch import Dispatcher
from watcher.intake.counter_watch import CounterWatch
from watcher.intake.stream import StreamReader
from watcher.ops.metrics import Metrics
from watcher.settings import Settings
from watcher.storage import backoff
from watcher.storage.position import Token


class PacedStream:
    """Events handed out no earlier than their due time."""

    def __init__(self, events: Iterator[dict[str, Any]], rate: float, max_await_ms: int) -> None:
        self._events = events
        self._rate = rate
        self._max_await_s = max_await_ms / 1000
        self._token: Token | None = None
        self.started = time.monotonic()
        self.read = 0

    def due(self, now: float) -> int:
        return int((now - self.started) * self._rate)

    async def try_next(self) -> Mapping[str, Any] | None:
        wait_s = self.started + self.read / self._rate - time.monotonic()
        if wait_s > self._max_await_s:
            await anyio.sleep(self._max_await_s)
            return None
        if wait_s > 0:
            await anyio.sleep(wait_s)
        else:
            await anyio.lowlevel.checkpoint()  # a driver's read yields to the loop too
        event = next(self._events)
        self.read += 1
        self._token = event["_id"]
        return event

    @property
    def resume_token(self) -> Token | None:
        return self._token

    async def close(self) -> None:
        return None


class PacedSource:
    def __init__(self, events: Iterator[dict[str, Any]], rate: float) -> None:
        self._events = events
        self._rate = rate
        self.stream: PacedStream | None = None

    async def open(self, pipeline: Sequence[Mapping[str, Any]], *, resume_after: Token | None, max_await_ms: int) -> PacedStream:
        self.stream = PacedStream(self._events, self._rate, max_await_ms)
        return self.stream


class InstantStore:
    """A store whose every guarded update matches at once."""

    def __init__(self) -> None:
        self.writes = 0

    async def apply(self, job_id: Any, query: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
        await anyio.lowlevel.checkpoint()  # a round trip yields to the loop
        self.writes += 1
        return True


async def step(rate: float, window_s: float, *, jobs: int = 100, items: int = 60) -> dict[str, Any]:
    """One window at ``rate`` events/s through the watcher's own path."""
    settings = Settings(health_port=0, sweep_interval_s=3600)
    metrics = Metrics()
    queue = JobQueue(max_jobs=settings.max_pending_jobs, progress_interval_s=settings.progress_interval_s)
    store = InstantStore()

    def new_backoff() -> backoff.Backoff:
        return backoff.Backoff(base_s=settings.backoff_base_s, max_s=settings.max_backoff_s)

    dispatcher = Dispatcher(
        store,  # type: ignore[arg-type]  # the seam: only apply() is called on the hot path
        queue,
        metrics,
        workers=settings.workers,
        policy=rules.Policy(scan_stage=settings.scan_stage),
        retry_backoff=new_backoff(),
    )
    source = PacedSource(replay.events(jobs, 10**12, items=items), rate)
    reader = StreamReader(source, dispatcher, metrics, settings, healthy=new_backoff(), counters=CounterWatch(quiet_s=settings.path_a_quiet_s))
    samples: list[tuple[float, int]] = []
    watch = load.LoadWatch()
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.run)
        stream = await reader.open(None)
        tg.start_soon(reader.consume, stream)
        started, cpu_started = time.monotonic(), time.process_time()
        paced = source.stream
        assert paced is not None
        while (now := time.monotonic()) < started + window_s:
            await anyio.sleep(0.5)
            now = time.monotonic()
            samples.append((now - paced.started, paced.due(now) - paced.read))
            queue.advance(now)  # the position keeper's call
            if len(samples) % 10 == 0:
                watch.sample()
        ended = time.monotonic()
        cpu_s = time.process_time() - cpu_started
        due, read = paced.due(ended), paced.read
        pending = queue.pending_jobs
        tg.cancel_scope.cancel()
    elapsed = ended - paced.started
    half = [b for b in samples if b[0] >= elapsed / 2]
    growth_per_s = (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) if len(half) >= 2 and half[-1][0] > half[0][0] else 0.0
    handled_ratio = read / due if due else 1.0
    growing = growth_per_s > 0.05 * rate
    return {
        "rate_asked": rate,
        "rate_achieved": round(read / elapsed, 1) if elapsed else 0.0,
        "window_s": round(elapsed, 2),
        "events_due": due,
        "events_read": read,
        "handled_ratio": round(handled_ratio, 3),
        "backlog_growth_events_per_s": round(growth_per_s, 1),
        "backlog_growing": growing,
        "backlog_events_at_end": due - read,
        "pending_jobs_at_end": pending,
        "writes": store.writes,
        "kept_up": handled_ratio >= 0.95 and not growing,
        "process_cpu_share": round(cpu_s / (ended - started), 2),
        "cpu_us_per_event_read": round(1e6 * cpu_s / read, 1) if read else None,
        "load_avg_1m": watch.summary(),
    }
