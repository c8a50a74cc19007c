"""Progress of a long command on stderr, for a person at a terminal and for a
log reading a pipe.

On a terminal the line is redrawn in place (at most every ``REDRAW_S``); on
a pipe or a file a whole line is written every ``LINE_EVERY_S`` (the first
after that long: a quick command stays quiet), so ``jobwatch simulate`` in a
container's log says how far it got. stdout keeps only the command's report.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Final, TextIO

import anyio

from watcher.ops import printable

REDRAW_S: Final = 0.2
LINE_EVERY_S: Final = 5.0


class Progress:
    def __init__(
        self,
        label: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label = label
        self._enabled = enabled
        self._stream = stream
        self._clock = clock
        self._last_at = clock()
        self._redrawn = False

    @property
    def _out(self) -> TextIO:
        return sys.stderr if self._stream is None else self._stream

    def _tty(self) -> bool:
        try:
            return self._out.isatty()
        except (AttributeError, ValueError):
            return False

    def update(self, text: str) -> None:
        """Show ``text`` now, or once it is due (cheap to call for every item)."""
        if not self._enabled:
            return
        now = self._clock()
        line = f"{self._label}: {printable.text(text)}"
        if self._tty():
            if now - self._last_at >= REDRAW_S or not self._redrawn:
                print(f"\r\x1b[K{line}", end="", file=self._out, flush=True)
                self._redrawn, self._last_at = True, now
        elif now - self._last_at >= LINE_EVERY_S:
            print(line, file=self._out, flush=True)
            self._last_at = now

    def close(self) -> None:
        """End a redrawn line, so what follows starts on a line of its own."""
        if self._redrawn:
            print(file=self._out, flush=True)
            self._redrawn = False


async def keep_showing(progress: Progress, text: Callable[[], str | None]) -> None:
    """Forever: show ``text()`` when it names something (a task to cancel when
    the command is done), so a wait that no item marks still shows."""
    while True:
        shown = text()
        if shown is not None:
            progress.update(shown)
        await anyio.sleep(REDRAW_S)
