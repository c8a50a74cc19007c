"""The health and metrics endpoint: ``/healthz`` (the process and its event
loop are alive), ``/readyz`` (the watcher is doing its job: see
``Watcher.ready``), ``/metrics`` (Prometheus text format, rendered by
prometheus_client).

A deliberately small HTTP/1.0 responder on anyio: three GET routes, no
keep-alive, bounded request size, at most ``MAX_CONNECTIONS`` at once (more
are closed at once). An ``accept()`` that fails (too many open files) is
retried with backoff; the endpoint never takes the service down. It runs
inside the watcher's task group, so if the event loop stalls, the probes
time out, which is what they are for.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import anyio
from anyio.abc import SocketStream
from prometheus_client import CONTENT_TYPE_LATEST

from watcher.ops import logs
from watcher.ops.metrics import Metrics

MAX_CONNECTIONS = 32
#: Backoff after a failed accept(): doubling from the first to the last, full jitter.
ACCEPT_RETRY_FIRST_S = 0.05
ACCEPT_RETRY_MAX_S = 2.0
MAX_REQUEST_BYTES = 8192
READ_DEADLINE_S = 5.0
TICK_S = 1.0
#: The loop counts as stalled when its ticker is this late.
STALL_S = 10.0


class Accepting(Protocol):
    async def accept(self) -> SocketStream: ...


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable", 400: "Bad Request"}


class HealthServer:
    def __init__(
        self,
        metrics: Metrics,
        *,
        ready: Callable[[], bool],
        host: str,
        port: int,
        why_not_ready: Callable[[], str | None] | None = None,
    ) -> None:
        self._metrics = metrics
        self._ready = ready
        self._why_not_ready = why_not_ready or (lambda: None)
        self._connections = 0
        self._host = host
        self._port = port
        self._last_tick = time.monotonic()
        self.bound_port: int | None = None

    def route(self, method: str, path: str) -> Response:
        if method != "GET":
            return Response(405, b"GET only\n")
        path = path.split("?", 1)[0]
        if path == "/healthz":
            late_s = time.monotonic() - self._last_tick
            return (
                Response(200, b"ok\n") if late_s < STALL_S else Response(503, f"loop stalled {late_s:.1f}s\n".encode())
            )
        if path == "/readyz":
            if self._ready():
                return Response(200, b"ready\n")
            return Response(503, f"not ready: {self._why_not_ready() or 'not streaming'}\n".encode())
        if path == "/metrics":
            return Response(200, self._metrics.exposition(), CONTENT_TYPE_LATEST)
        return Response(404, b"try /healthz, /readyz or /metrics\n")

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self._host, local_port=self._port, reuse_port=False)
        async with listener:
            self.bound_port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
            logs.event("health_listening", host=self._host, port=self.bound_port)
            task_status.started(self.bound_port)
            # TCP listeners all accept(); the multi-listener's type only promises serve().
            await self.serve_on(*cast("list[Accepting]", listener.listeners))

    async def serve_on(self, *listeners: Accepting) -> None:
        """Answer on open listeners until cancelled (``serve`` opens them)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._tick)
            for listener in listeners:
                tg.start_soon(self._accept_forever, listener, tg)

    async def _accept_forever(self, listener: Accepting, tg: anyio.abc.TaskGroup) -> None:
        failures = 0
        while True:
            try:
                client = await listener.accept()
            except OSError as exc:  # EMFILE, ENFILE, ECONNABORTED...: wait, then accept again
                failures += 1
                delay_s = min(ACCEPT_RETRY_MAX_S, ACCEPT_RETRY_FIRST_S * 2 ** min(failures, 16)) * random.random()
                logs.event(
                    "health_accept_failed",
                    "WARNING",
                    "health endpoint could not accept; retrying",
                    error=exc.strerror or type(exc).__name__,
                    retry_in_s=round(delay_s, 3),
                )
                await anyio.sleep(delay_s)
                continue
            failures = 0
            if self._connections >= MAX_CONNECTIONS:
                await client.aclose()  # over the cap: the prober retries
                continue
            self._connections += 1
            tg.start_soon(self._handle_counted, client)

    async def _handle_counted(self, client: SocketStream) -> None:
        try:
            await self._handle(client)
        finally:
            self._connections -= 1

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await anyio.sleep(TICK_S)

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            try:
                with anyio.fail_after(READ_DEADLINE_S):
                    request = await _read_head(client)
                method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                response = self.route(method, path)
            except (TimeoutError, ValueError, UnicodeDecodeError):
                response = Response(400, b"bad request\n")
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            head = (
                f"HTTP/1.0 {response.status} {REASONS.get(response.status, '')}\r\n"
                f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await client.send(head.encode("latin-1") + response.body)


async def _read_head(client: SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        chunk = await client.receive(4096)
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError("request too large")
    return data
