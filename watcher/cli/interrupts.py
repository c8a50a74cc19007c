"""SIGINT and SIGTERM, from the first instruction to the last.

In a container jobwatch is PID 1, and the kernel delivers no signal to PID 1
that has no handler: without one, ``docker stop`` waits and kills. So the
console script installs jobwatch's handlers before it imports anything else
(``watcher.cli.entry``), and every phase obeys them:

- outside the event loop (parsing, settings, imports) a signal raises
  ``Interrupted`` where the program is, and ``main`` ends with its exit code;
- inside it, ``watch`` (a task beside the command) hears it: the first signal
  is logged and stops the command (``Stopper``): the service drains and
  saves its position, any other command is cancelled wherever it waits
  (a server that does not answer included); a second one exits at once.
  A signal that arrives while the loop runs but before ``watch`` listens is
  kept, and ``watch`` acts on it first.

Exit codes: SIGINT 130 (as shells do), SIGTERM 0 (the orderly stop an
orchestrator asks for); a forced exit (second signal) 128 + the signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # anyio is imported where the loop runs: installing the handlers comes first
    from anyio.abc import TaskStatus

SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES: Final = {signal.SIGINT: 130, signal.SIGTERM: 0}

#: Signals received while an event loop ran and nobody listened yet.
_pending: list[int] = []


class Interrupted(BaseException):
    """A signal arrived outside the event loop. A BaseException, like
    KeyboardInterrupt: no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(name(signum))
        self.signum = signum


def name(signum: int) -> str:
    return signal.Signals(signum).name


def exit_code(signum: int) -> int:
    return EXIT_CODES.get(signal.Signals(signum), 128 + signum)


def _loop_running() -> bool:
    asyncio = sys.modules.get("asyncio")  # not imported yet: no loop can be running
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _handler(signum: int, frame: FrameType | None) -> None:
    if _loop_running():
        _pending.append(signum)  # raising inside the loop would tear it down mid-step
        return
    raise Interrupted(signum)


def install() -> None:
    """jobwatch's handlers for SIGINT and SIGTERM (main thread only: Python
    runs handlers there and nowhere else)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handler)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """jobwatch's handlers for the block, the previous ones restored after
    (``main`` called in-process, as tests do, leaves the caller's alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _pending.clear()
    install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def log_interrupted(signum: int) -> None:
    """The line a signal that cancels a command leaves, wherever it landed."""
    from watcher.ops import logs

    logs.event("signal_received", "INFO", "interrupted: stopping", signal=name(signum))


class Stopper:
    """What the first signal stops: the command's cancel scope (``scope``,
    set by the command once its event loop runs), or while a service runs
    (``gracefully``) its orderly stop."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.scope: Any = None  # an anyio.CancelScope, made inside the loop
        self._graceful: Callable[[], None] | None = None

    def on_signal(self, signum: int) -> None:
        from watcher.ops import logs

        if self.signum is not None:
            logs.event(
                "shutdown_forced", "WARNING", "second signal: exiting at once, without saving", signal=name(signum)
            )
            os._exit(128 + signum)
        self.signum = signum
        if self._graceful is not None:
            logs.event("signal_received", "INFO", "stopping cleanly (send it again to force)", signal=name(signum))
            self._graceful()
        else:
            log_interrupted(signum)
            if self.scope is not None:
                self.scope.cancel()

    @contextlib.contextmanager
    def gracefully(self, stop: Callable[[], None]) -> Iterator[None]:
        """While the block runs, a signal calls ``stop`` instead of cancelling."""
        self._graceful = stop
        try:
            if self.signum is not None:  # it came before the service was there to stop
                stop()
            yield
        finally:
            self._graceful = None

    def exit_code(self, code: int) -> int:
        """The command's exit code, or the signal's if one stopped it."""
        return code if self.signum is None else exit_code(self.signum)


async def watch(stopper: Stopper, *, task_status: TaskStatus[None]) -> None:
    """Forever (a task to cancel; start it with ``TaskGroup.start``): hand each
    SIGINT or SIGTERM to ``stopper``, first those that came before this listened."""
    import anyio

    if threading.current_thread() is not threading.main_thread():  # an in-process caller off the main thread
        task_status.started()
        await anyio.sleep_forever()
        return
    try:
        with anyio.open_signal_receiver(*SIGNALS) as received:
            task_status.started()
            while _pending:
                stopper.on_signal(_pending.pop(0))
            async for signum in received:
                stopper.on_signal(signum)
    finally:
        install()  # leaving the receiver gave SIGTERM back its default, deadly to the teardown
