"""The health endpoint survives accept() errors and floods; errors raised
during start-up reach the caller as one clear exception."""

from __future__ import annotations

import errno
import socket
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from tests.support.backends import Backend
from tests.support.harness import settings_for, wait_until
from watcher import Watcher
from watcher.ops import health
from watcher.ops.metrics import Metrics
from watcher.service import ConfigurationProblem

pytestmark = pytest.mark.reliability


class FlakyListener:
    """A real listener whose first ``failures`` accepts fail as with too many open files."""

    def __init__(self, inner: Any, failures: int) -> None:
        self._inner = inner
        self.failures = failures

    async def accept(self) -> SocketStream:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        stream: SocketStream = await self._inner.accept()
        return stream


async def get(port: int, path: str) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        try:
            while True:
                data += await stream.receive()
        except anyio.EndOfStream:
            return data


async def test_accept_errors_are_retried_not_fatal() -> None:
    server = health.HealthServer(Metrics(), ready=lambda: True, host="127.0.0.1", port=0)
    inner = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = int(inner.extra(anyio.abc.SocketAttribute.local_port))
    flaky = FlakyListener(inner.listeners[0], failures=6)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve_on, flaky)
        with anyio.fail_after(30):
            answer = await get(port, "/healthz")
        assert answer.startswith(b"HTTP/1.0 200") and flaky.failures == 0
        tg.cancel_scope.cancel()
    await inner.aclose()


async def test_connections_beyond_the_cap_are_closed_and_probes_still_answer() -> None:
    server = health.HealthServer(
        Metrics(), ready=lambda: False, why_not_ready=lambda: "backlog at its cap", host="127.0.0.1", port=0
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve)
        idle = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(health.MAX_CONNECTIONS)]
        await anyio.sleep(0.2)
        with anyio.fail_after(10):
            refused = await get(port, "/readyz")  # over the cap: closed without an answer
        assert refused == b""
        for stream in idle:
            await stream.aclose()

        async def answered() -> bool:
            return (await get(port, "/readyz")).startswith(b"HTTP/1.0 503")

        await wait_until(answered, what="a probe answered once the idle connections went away")
        assert b"backlog at its cap" in await get(port, "/readyz")
        tg.cancel_scope.cancel()


async def test_a_busy_health_port_is_one_configuration_problem(mongo: Backend) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        watcher = Watcher(
            mongo.client,
            settings_for(mongo, health_port=port, health_host="127.0.0.1"),
            change_source=mongo.change_source(),
        )
        with pytest.raises(ConfigurationProblem, match="JOBWATCH_HEALTH_PORT") as caught, anyio.fail_after(20):
            await watcher.run()
    assert not isinstance(caught.value, BaseExceptionGroup)
    assert caught.value.exit_code == 2
