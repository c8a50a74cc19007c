"""Start and run the embedded server: engine, history, wire front.

``start()`` is for tests and ``jobwatch demo`` (an async context manager
giving the URI); ``serve()`` is ``jobwatch embedded-server``: it serves until
SIGINT or SIGTERM, then stops the listener, records every change the engine
still holds and closes the journal, so tokens stay resumable after a restart
with the same data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobwatch_embedded import commands, history, hooks, wire
from jobwatch_embedded import engine as engine_

HOST = "127.0.0.1"


@dataclass
class EmbeddedServer:
    uri: str  # mongodb://127.0.0.1:<port>/?replicaSet=<name>: works as it is
    port: int
    engine: engine_.Engine
    proxy: Any

    @property
    def front(self) -> wire.Front:
        """The commands the server answers itself (fail points, cursors)."""
        front: wire.Front = self.proxy.executor
        return front


@contextlib.asynccontextmanager
async def start(
    port: int = 0,
    data_dir: Path | None = None,
    *,
    max_events: int = history.DEFAULT_MAX_EVENTS,
    replica_set: str = commands.DEFAULT_SET_NAME,
) -> AsyncIterator[EmbeddedServer]:
    """Serve on 127.0.0.1:``port`` (0: a free one) as the one member of the
    replica set ``replica_set``, keeping at least ``max_events`` changes."""
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    async with engine_.open_engine(data_dir, max_events=max_events) as engine:
        members = commands.ReplicaSet(replica_set)
        proxy = wire.new_proxy(engine, members, host=HOST, port=port)
        address = await proxy.start()
        try:
            # The member's address as clients must see it: drivers told the
            # set's name check that the primary names itself as they reach it.
            members.members.append(f"{address.host}:{address.port}")
            uri = f"mongodb://{address.host}:{address.port}/?replicaSet={replica_set}"
            yield EmbeddedServer(uri, address.port, engine, proxy)
        finally:
            await proxy.close()


class TapFailed(Exception):
    """The server can no longer record changes: serving on would be a silent lie."""


async def serve(
    port: int,
    data_dir: Path | None,
    on_ready: Callable[[str], None],
    *,
    max_events: int = history.DEFAULT_MAX_EVENTS,
    replica_set: str = commands.DEFAULT_SET_NAME,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with start(port, data_dir, max_events=max_events, replica_set=replica_set) as server:
            # Everything alive now (the engine's modules, its primed data) lives
            # as long as the process: out of the collector's sight, a full
            # collection scans only what serving creates (it paused the server
            # for 100-200 ms per collection before).
            gc.freeze()
            on_ready(server.uri)
            stopped = asyncio.create_task(stop.wait())
            failed = asyncio.create_task(server.engine.wait_failed())
            await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if failed.done():
                raise TapFailed(f"change history stopped: {failed.result()!r}")
            failed.cancel()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(
    port: int,
    data_dir: Path | None,
    emit: Callable[[str], None],
    *,
    history_events: int = history.DEFAULT_MAX_EVENTS,
    replica_set: str = commands.DEFAULT_SET_NAME,
) -> int:
    """``jobwatch embedded-server``: the URI as the first line of stdout, then
    serve. 0 when stopped by a signal; 1 when it could not go on."""
    try:
        asyncio.run(serve(port, data_dir, emit, max_events=history_events, replica_set=replica_set))
    except (TapFailed, hooks.HookMissing, OSError) as exc:
        print(f"jobwatch embedded-server: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
