"""Keeping the resume position: load it at start, save the watermark now and
then, save it once more at stop (shielded, with a deadline).

The watermark comes from the coalescing queue (a callable, so this module
stays below it): the newest token all of whose earlier events were handled.
A save that fails is logged and tried again at the next interval; it never
stops the service. A save or heartbeat that finds the lease gone raises
``errors.Deposed``: the pipeline it belongs to stops at once.

Besides the interval, ``save_soon()`` asks for a save at once: the
supervisor calls it when the stream is open and its start-up (or catch-up)
sweep is done, so a watcher that dies in its first interval still leaves a
position to resume from instead of a full catch-up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from watcher.ops import logs
from watcher.ops.metrics import Metrics
from watcher.storage import backoff, errors
from watcher.storage.position import PositionStore, Token

Watermark = Callable[[float], Token | None]


class PositionKeeper:
    def __init__(
        self,
        positions: PositionStore,
        watermark: Watermark,
        metrics: Metrics,
        *,
        interval_s: float,
        retry: backoff.Backoff,
        partition: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._positions = positions
        self._watermark = watermark
        self._metrics = metrics
        self._interval_s = interval_s
        self._retry = retry
        self._partition = str(partition)
        self._clock = clock
        self._wall_clock = wall_clock
        self._unsaved: Token | None = None  # a watermark whose save failed: saved next time
        self._soon = anyio.Event()
        # One save at a time: a slow periodic save and the shutdown save must
        # not race each other to the server (the older token could land last).
        self._saving = anyio.Lock()

    async def load(self) -> Token | None:
        """The saved token, retried with backoff while MongoDB cannot answer
        (the caller's cancel scope ends the wait on stop)."""
        while True:
            try:
                saved = await self._positions.load()
            except errors.StoreUnavailable as exc:
                delay_s = self._retry.next_delay_s()
                logs.event(
                    "position_load_failed",
                    "WARNING",
                    "could not read the saved position; retrying",
                    error=exc.error,
                    retry_in_s=round(delay_s, 3),
                )
                await anyio.sleep(delay_s)
                continue
            self._retry.reset()
            return saved.token if saved else None

    async def run(self) -> None:
        """Save the watermark every ``interval_s``, or at once when asked
        (``save_soon``), until cancelled."""
        while True:
            with anyio.move_on_after(self._interval_s):
                await self._soon.wait()
            self._soon = anyio.Event()
            await self.save()

    def save_soon(self) -> None:
        """Save without waiting for the interval (the next save is counted from it)."""
        self._soon.set()

    async def save(self) -> bool:
        """Save the watermark if it moved (else a heartbeat). False if it failed;
        ``errors.Deposed`` if the lease is no longer ours."""
        async with self._saving:
            return await self._save()

    async def _save(self) -> bool:
        token = self._watermark(self._clock()) or self._unsaved
        try:
            if token is not None:
                await self._positions.save(token)
                self._unsaved = None
                self._metrics.position_saved.labels(self._partition).set(self._wall_clock())
                logs.event("position_saved", "DEBUG", partition=self._partition)
            else:
                await self._positions.heartbeat()
        except errors.StoreUnavailable as exc:
            self._unsaved = token
            self._metrics.errors.labels(exc.error, exc.action.value).inc()
            logs.event(
                "position_save_failed",
                "WARNING",
                "could not save the position; will retry",
                error=exc.error,
                partition=self._partition,
            )
            return False
        return True

    async def save_at_stop(self, deadline_s: float) -> None:
        """The last save: shielded from the cancellation that is stopping us,
        bounded so a dead server cannot hold the exit. Raises ``errors.Deposed``
        when the lease was lost meanwhile (nothing was saved, nothing may be released)."""
        saved = False
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(deadline_s) as scope,
            contextlib.suppress(errors.ConfigurationProblem),  # already stopping, for this reason or another
        ):
            saved = await self.save()
        if scope.cancelled_caught or not saved:
            logs.event(
                "position_not_saved_at_shutdown",
                "WARNING",
                "the last position save failed; a restart re-reads a little history",
                partition=self._partition,
            )
        else:
            logs.event("position_saved_at_shutdown", partition=self._partition)

    async def heartbeat(self, last_sweep: Mapping[str, Any]) -> None:
        """The last sweep's totals in the heartbeat; ``errors.Deposed`` if the lease is gone."""
        with contextlib.suppress(errors.StoreUnavailable):  # the next heartbeat carries it
            await self._positions.heartbeat(last_sweep=last_sweep)
