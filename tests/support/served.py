"""An embedded engine served from a background thread, for tests that call the
CLI (in-process or as a subprocess) and need a URI, not an event loop."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.from_thread

from watcher import embedded


@contextlib.contextmanager
def serve_engine() -> Iterator[str]:
    ready = threading.Event()
    uri: list[str] = []
    stop: list[Any] = []

    async def main() -> None:
        async with embedded.start() as engine:
            uri.append(engine.uri)
            event = anyio.Event()
            stop.append((anyio.from_thread.BlockingPortal, event))
            ready.set()
            await event.wait()

    with anyio.from_thread.start_blocking_portal() as portal:
        future = portal.start_task_soon(main)
        if not ready.wait(30):
            raise RuntimeError("embedded engine did not start")
        try:
            yield uri[0]
        finally:
            portal.call(stop[0][1].set)
            future.result(timeout=30)
