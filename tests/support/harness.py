"""Helpers for tests that run a watcher against a backend."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from tests.support.backends import Backend
from watcher import Settings, Watcher
from watcher.intake.source import ChangeSource

DEADLINE_S = 20.0


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, deadline_s: float = DEADLINE_S, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while not await predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        await anyio.sleep(0.02)


def metric(watcher: Watcher, name: str, **labels: str) -> float:
    """One sample of the watcher's registry, as Prometheus would scrape it
    (0 when the series has not been seen yet)."""
    value = watcher.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def completions(*watchers: Watcher) -> tuple[float, float]:
    """(job completions, stage completions) applied over all ``watchers``."""
    jobs = sum(
        metric(w, "jobwatch_writes_total", source=source, kind="job", result="applied")
        for w in watchers
        for source in ("stream", "sweep")
    )
    stages = sum(
        metric(w, "jobwatch_stages_completed_total", source=source) for w in watchers for source in ("stream", "sweep")
    )
    return jobs, stages


async def settled(jobs: Any, *watchers: Watcher) -> None:
    """Until each watcher has handled every change made before this call.

    A negative check ("nothing more was written") must not rest on a sleep
    that a slow machine outlasts. A marker job (no stages: the rules never
    write to it) is inserted after everything the test did; the stream
    delivers in order, so once a watcher has received the marker's insert and
    has nothing pending, every earlier event was evaluated and written."""
    seen = {id(w): metric(w, "jobwatch_events_received_total", operation="insert") for w in watchers}
    await jobs.insert_one({"_id": ObjectId(), "jobType": "test-marker"})

    async def handled() -> bool:
        return all(
            metric(w, "jobwatch_events_received_total", operation="insert") > seen[id(w)]
            and metric(w, "jobwatch_pending_jobs") == 0
            for w in watchers
        )

    await wait_until(handled, what="the watchers to handle every earlier change")


def settings_for(mongo: Backend, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "uri": mongo.uri,
        "database": mongo.db_name,
        "health_port": 0,
        "sweep_interval_s": 3600,
        "position_save_interval_s": 0.2,
        "max_await_ms": 100,
        "progress_interval_s": 0.0,
        "backoff_base_s": 0.05,
        "max_backoff_s": 0.2,
        "server_selection_timeout_ms": 5000,
        "path_a_quiet_s": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running(
    mongo: Backend,
    *,
    client: AsyncMongoClient[Any] | None = None,
    source: ChangeSource | None = None,
    **overrides: Any,
) -> AsyncIterator[Watcher]:
    watcher = Watcher(
        client or mongo.client, settings_for(mongo, **overrides), change_source=source or mongo.change_source()
    )
    async with watcher:
        yield watcher


class CommandLog(monitoring.CommandListener):
    """Every command a client sends, by name (for asserting round trips)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def clear(self) -> None:
        with self._lock:
            self.commands.clear()

    def named(self, *names: str, collection: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                cmd
                for name, cmd in self.commands
                if name in names and (collection is None or cmd.get(name) == collection)
            ]


async def complete_a_job(mongo: Backend, *, items: int = 3) -> Any:
    """Insert a one-stage job, count its items up one ``$inc`` at a time as a
    consumer does, and wait for the watcher to complete it; its ``_id``."""
    jobs = mongo.db.background_jobs
    job_id = ObjectId()
    await jobs.insert_one(
        {
            "_id": job_id,
            "status": "InProgress",
            "stages": {"a": {"status": "InProgress", "completedItems": 0, "totalItems": items}},
        }
    )
    for _ in range(items):
        await jobs.update_one({"_id": job_id}, {"$inc": {"stages.a.completedItems": 1}})

    async def done() -> bool:
        return await jobs.count_documents({"_id": job_id, "status": "Completed"}) == 1

    await wait_until(done, what=f"job {job_id} to complete")
    return job_id
