"""An orderly stop that a caller or a component's own tasks can ask for.

The service and each partition's pipeline run several tasks; any of them may
end on a deliberate fatal outcome (a configuration the server refuses, a
server that cannot be reached). That is not a crash: the component stops in
order (drain, save the position) and then raises the first such outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from watcher.ops import logs
from watcher.storage import errors

Fatal = errors.ConfigurationProblem | errors.Unreachable


class Stop:
    """An event (``set``, ``is_set``, ``wait``) that also keeps the first
    fatal outcome of the tasks run under ``guard``."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.fatal: Fatal | None = None

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def fail(self, exc: Fatal) -> bool:
        """Ask for the stop because of ``exc``, kept if it is the first fatal
        outcome (then True)."""
        first = self.fatal is None
        if first:
            self.fatal = exc
        self.set()
        return first

    async def guard(self, task: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``task``; a fatal outcome is kept (the first one, logged once)
        and asks for the stop instead of tearing the task group down."""
        try:
            await task(*args)
        except (errors.ConfigurationProblem, errors.Unreachable) as exc:
            if self.fail(exc):
                logs.event("watcher_fatal", "ERROR", str(exc), error=type(exc).__name__)

    def raise_fatal(self) -> None:
        """After the orderly stop: raise the fatal outcome that asked for it, if any."""
        if self.fatal is not None:
            raise self.fatal
