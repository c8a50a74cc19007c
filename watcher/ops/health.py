"""The health and metrics endpoint: ``/healthz`` (the loop is alive),
``/readyz`` (connected and streaming), ``/metrics`` (Prometheus text format,
rendered by prometheus_client).

A deliberately small HTTP/1.0 responder on anyio: three GET routes, no
keep-alive, bounded request size. It runs inside the watcher's task group, so
if the event loop stalls, the probes time out, which is what they are for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.abc import SocketStream
from prometheus_client import CONTENT_TYPE_LATEST

from watcher.ops import logs
from watcher.ops.metrics import Metrics

MAX_REQUEST_BYTES = 8192
READ_DEADLINE_S = 5.0
TICK_S = 1.0
#: The loop counts as stalled when its ticker is this late.
STALL_S = 10.0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable", 400: "Bad Request"}


class HealthServer:
    def __init__(self, metrics: Metrics, *, ready: Callable[[], bool], host: str, port: int) -> None:
        self._metrics = metrics
        self._ready = ready
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
            return Response(200, b"ok\n") if late_s < STALL_S else Response(503, f"loop stalled {late_s:.1f}s\n".encode())
        if path == "/readyz":
            return Response(200, b"ready\n") if self._ready() else Response(503, b"not ready: not connected or not streaming\n")
        if path == "/metrics":
            return Response(200, self._metrics.exposition(), CONTENT_TYPE_LATEST)
        return Response(404, b"try /healthz, /readyz or /metrics\n")

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self._host, local_port=self._port, reuse_port=False)
        async with listener:
            self.bound_port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
            logs.event("health_listening", host=self._host, port=self.bound_port)
            task_status.started(self.bound_port)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._tick)
                await listener.serve(self._handle, task_group=tg)

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
            try:
                await client.send(head.encode("latin-1") + response.body)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass


async def _read_head(client: SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        chunk = await client.receive(4096)
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError("request too large")
    return data
