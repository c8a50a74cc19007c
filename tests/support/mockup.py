"""MockupDB (MongoDB's own wire-protocol test server) for the protocol tests:
a replica-set primary that answers the driver's housekeeping by itself, and
a stream reader over the real PyMongo change source, wired as the watcher
wires it (its dispatcher never writes: it has no store)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from mockupdb import MockupDB, Request
from pymongo import AsyncMongoClient

from watcher.decide.coalesce import JobQueue
from watcher.decide.dispatch import Dispatcher
from watcher.intake import stream
from watcher.intake.source import PyMongoChangeSource
from watcher.ops.metrics import Metrics
from watcher.settings import Settings
from watcher.storage import backoff

NS = "imageviewer.background_jobs"
CURSOR_ID = 42
#: How long a test waits for the driver's next command.
WAIT_S = 10.0


def _housekeeping(request: Request) -> bool:
    doc = request.doc
    if "killCursors" in doc:
        return bool(request.ok(cursorsKilled=doc.get("cursors", [])))
    if "endSessions" in doc:
        return bool(request.ok())
    return False


def running_server() -> Iterator[MockupDB]:
    mock = MockupDB(
        auto_ismaster={
            "ismaster": True,
            "isWritablePrimary": True,
            "setName": "rs0",
            "minWireVersion": 0,
            "maxWireVersion": 21,
        }
    )
    mock.run()
    mock.autoresponds(_housekeeping)
    try:
        yield mock
    finally:
        _stop(mock)


def _stop(mock: MockupDB) -> None:
    """``mock.stop()`` without its second of waiting: MockupDB's accept loop
    sleeps in a one-second ``select`` that closing the socket does not wake,
    and ``stop`` joins it (a second per protocol test). A connection wakes it
    once it is told to stop."""
    mock._stopped = True
    with contextlib.suppress(OSError), socket.create_connection((mock.host, mock.port), timeout=1):
        pass
    mock.stop()


def reader_for(client: AsyncMongoClient[Any]) -> tuple[stream.StreamReader, JobQueue]:
    settings = Settings(database="imageviewer", health_port=0, max_await_ms=100, server_selection_timeout_ms=2000)
    queue = JobQueue(max_jobs=10, progress_interval_s=0)
    metrics = Metrics()
    healthy = backoff.Backoff(base_s=0.1, max_s=1)
    dispatcher = Dispatcher(None, queue, metrics, workers=1, policy=None, retry_backoff=healthy)  # type: ignore[arg-type]
    source = PyMongoChangeSource(client["imageviewer"]["background_jobs"])
    reader = stream.StreamReader(
        source,
        dispatcher,
        metrics,
        pipeline=stream.pipeline(settings),
        max_await_ms=settings.max_await_ms,
        server_selection_s=settings.server_selection_timeout_ms / 1000,
        healthy=healthy,
    )
    return reader, queue
