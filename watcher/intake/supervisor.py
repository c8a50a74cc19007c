"""One owner for the change stream's life: open, read, reopen, catch up.

The loop, in one place:

1. open the stream (from the saved token, or from now);
2. if it was opened without a token (first start, a position MongoDB can no
   longer resume, a failure before the first token arrived), run a catch-up
   sweep: opened first, swept second, so no change falls between the two;
   the sweep is retried until it succeeds (the flag is cleared only then);
3. read until the stream breaks, then close it, wait a bounded, jittered
   backoff (reset by every healthy batch) and go back to 1, resuming after
   the last token read, or from now when the position is unusable.

Everything that can go wrong arrives as a storage-boundary outcome:
``errors.StreamBroken`` (reopen), ``errors.NotReplicaSet`` (degrade to
sweeps when allowed, else fatal) or a ``ConfigurationProblem`` (fatal). The
stop signal is a cancellation of the scope this runs in, so it is honoured
at every await, including a first open that never succeeds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import anyio

from watcher.intake.source import ChangeStream
from watcher.intake.stream import StreamReader
from watcher.intake.sweep import SweepReport
from watcher.ops import logs
from watcher.ops.metrics import Metrics
from watcher.storage import backoff, errors
from watcher.storage.position import Token

CLOSE_DEADLINE_S = 2.0

SweepState = Literal["never", "ok", "retrying"]


class Sweeps:
    """Sweeps that are retried until they succeed, and the periodic schedule."""

    def __init__(
        self,
        sweep: Callable[[bool], Awaitable[SweepReport]],
        metrics: Metrics,
        *,
        interval_s: float,
        degraded_interval_s: float,
        full_every: int,
        retry: backoff.Backoff,
        after: Callable[[SweepReport], Awaitable[None]],
    ) -> None:
        self._sweep = sweep
        self._interval_s = interval_s
        self._degraded_interval_s = degraded_interval_s
        self._full_every = full_every
        self._metrics = metrics
        self._retry = retry
        self._after = after
        self.state: SweepState = "never"

    async def until_done(self, *, full: bool) -> SweepReport:
        while True:
            try:
                report = await self._sweep(full)
            except errors.StoreUnavailable as exc:
                self.state = "retrying"
                self._metrics.errors.labels(exc.error, exc.action.value).inc()
                delay_s = self._retry.next_delay_s()
                logs.event(
                    "sweep_failed",
                    "WARNING",
                    "sweep could not read or write; retrying",
                    error=exc.error,
                    retry_in_s=round(delay_s, 3),
                )
                await anyio.sleep(delay_s)
                continue
            self._retry.reset()
            self.state = "ok"
            await self._after(report)
            return report

    async def periodic(self, degraded: Callable[[], bool]) -> None:
        count = 0
        while True:
            interval_s = self._degraded_interval_s if degraded() else self._interval_s
            self._metrics.sweep_interval.set(interval_s)
            await anyio.sleep(interval_s)
            count += 1
            await self.until_done(full=degraded() or count % self._full_every == 0)


class Supervisor:
    """The stream's owner. ``allow_degraded``: on a standalone server, go on
    with sweeps every ``degraded_sweep_interval_s`` and look for a stream
    again every ``recheck_s``, instead of stopping."""

    def __init__(
        self,
        reader: StreamReader,
        sweeps: Sweeps,
        metrics: Metrics,
        *,
        retry: backoff.Backoff,
        allow_degraded: bool,
        degraded_sweep_interval_s: float,
        recheck_s: float,
    ) -> None:
        self._reader = reader
        self._sweeps = sweeps
        self._metrics = metrics
        self._retry = retry
        self._allow_degraded = allow_degraded
        self._degraded_sweep_interval_s = degraded_sweep_interval_s
        self._recheck_s = recheck_s
        self.degraded = False
        self.opened = 0  # streams opened so far (for logs and tests)

    async def run(self, token: Token | None, *, started: Callable[[], None]) -> None:
        """Own the stream until cancelled; call ``started`` once the stream is
        open (or degraded) and the start-up sweep has succeeded."""
        stream: ChangeStream | None = None
        needs_sweep = True  # the start-up sweep
        announced = False
        try:
            while True:
                try:
                    if stream is None:
                        stream = await self._open(token)
                    if needs_sweep:
                        await self._sweeps.until_done(full=True)
                        needs_sweep = False
                    if not announced:
                        announced = True
                        started()
                    await self._reader.consume(stream)
                except errors.NotReplicaSet as exc:
                    await self._close(stream)
                    stream = None
                    self._degrade(exc)
                    if needs_sweep:
                        await self._sweeps.until_done(full=True)
                        needs_sweep = False
                    if not announced:
                        announced = True
                        started()
                    # Sweeps carry on (at the degraded interval); look again now and then.
                    await anyio.sleep(self._recheck_s)
                except errors.StreamBroken as exc:
                    await self._close(stream)
                    stream = None
                    token, restart = self._after_break(exc, token)
                    needs_sweep = needs_sweep or restart
                    delay_s = self._retry.next_delay_s()
                    logs.event(
                        "stream_reopen_scheduled",
                        "INFO",
                        "reopening the stream",
                        delay_s=round(delay_s, 3),
                        attempt=self._retry.attempt,
                    )
                    await anyio.sleep(delay_s)
        finally:
            await self._close(stream)

    async def _open(self, token: Token | None) -> ChangeStream:
        stream = await self._reader.open(token)
        self.opened += 1
        if self.degraded:
            self.degraded = False
            logs.event("stream_available_again", "WARNING", "change streams work again: leaving degraded mode")
        logs.event("stream_opened", resumed=token is not None)
        return stream

    def _after_break(self, exc: errors.StreamBroken, token: Token | None) -> tuple[Token | None, bool]:
        """Where to reopen from, and whether a catch-up sweep must follow."""
        self._metrics.errors.labels(exc.error, exc.action.value).inc()
        logs.event(
            "stream_error",
            "WARNING",
            "change stream broke",
            error=exc.error,
            next_step=exc.action.value,
            detail=logs.redacted(str(exc))[:300],
        )
        if exc.action is errors.Action.RESTART:
            logs.event(
                "stream_restarting", "WARNING", "position unusable: streaming from now, then sweeping", error=exc.error
            )
            return None, True
        resume = self._reader.last_token or token
        # No token yet: a reopen starts from now, so what happened since the
        # first open is only covered by a sweep.
        return resume, resume is None

    def _degrade(self, exc: errors.NotReplicaSet) -> None:
        message = (
            "change streams need a replica set or sharded cluster, and this server is a standalone mongod. "
            "Start it with --replSet rs0 and run rs.initiate() once (see docs/how-to/mongodb.md), "
            "or set JOBWATCH_ALLOW_DEGRADED=true to sweep every "
            f"{self._degraded_sweep_interval_s:g}s instead."
        )
        if not self._allow_degraded:
            raise errors.NotReplicaSet(message) from exc
        if not self.degraded:
            self.degraded = True
            logs.event(
                "stream_unavailable_degraded",
                "WARNING",
                "DEGRADED: no change stream; completions wait for the next sweep. " + message,
            )

    async def _close(self, stream: ChangeStream | None) -> None:
        self._reader.health.open = False
        if stream is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_DEADLINE_S):
            try:
                with errors.translated("closing the change stream", "reopen"):
                    await stream.close()
            except (errors.StreamBroken, errors.ConfigurationProblem) as exc:
                # Closing a broken cursor may fail; it is gone either way.
                logs.event("stream_close_failed", "DEBUG", error=errors.name(exc))
