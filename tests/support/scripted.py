"""Change sources for tests: a real source underneath, with a script on top
(raise a chosen PyMongo error after N events, inject an event, deliver twice).
Fakes live only at this seam; the rules and the watcher are real. A batch
that runs past the step's event is cut there: the rest follows later."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from pymongo import errors as pe

from watcher.intake.source import ChangeSource, ChangeStream, Event
from watcher.storage.position import Token


def failure(code: int, name: str, *labels: str) -> pe.OperationFailure:
    """A server error as PyMongo raises it: code, code name and error labels."""
    return pe.OperationFailure(
        name, code=code, details={"ok": 0, "code": code, "codeName": name, "errorLabels": list(labels)}
    )


@dataclass
class Step:
    """For one ``open()``: pass ``after`` events through, then raise ``error``
    (or deliver ``inject`` as the next event instead)."""

    after: int
    error: BaseException | None = None
    inject: Mapping[str, Any] | None = None
    on_open: BaseException | None = None  # raise from open() itself
    hang: bool = False  # never answer the next read (a half-open connection)
    #: Show no resume token before the first event, like a source without
    #: post-batch tokens (MongoDB and the embedded server give one at open).
    tokenless: bool = False
    #: Hold ``open()`` until this event is set (a reopen that takes its time).
    hold: anyio.Event | None = None


class _Stream:
    def __init__(self, inner: ChangeStream, step: Step | None, duplicate: bool) -> None:
        self._inner = inner
        self._step = step
        self._duplicate = duplicate
        self._held: list[Event] = []  # the rest of an inner batch, cut where the step acts
        self._token: Token | None = None  # after the last event handed out, while events are held
        self.delivered = 0
        self.hung = False
        self._tokenless = step is not None and step.tokenless

    async def next_batch(self) -> Sequence[Event]:
        if self._step is not None and self.delivered >= self._step.after:
            step, self._step = self._step, None
            if step.hang:
                self.hung = True
                await anyio.sleep_forever()
            if step.error is not None:
                raise step.error
            if step.inject is not None:
                return [{"_id": self.resume_token or {"_data": "injected"}, **step.inject}]
        batch, self._held = (self._held, []) if self._held else (list(await self._inner.next_batch()), [])
        if self._step is not None and len(batch) > self._step.after - self.delivered:
            cut = self._step.after - self.delivered
            batch, self._held = batch[:cut], batch[cut:]
        if batch:
            self._token = batch[-1]["_id"]
        self.delivered += len(batch)
        if self._duplicate:
            return [event for event in batch for _ in range(2)]
        return batch

    @property
    def resume_token(self) -> Token | None:
        if self._tokenless and self.delivered == 0:
            return None
        if self._held:
            return self._token  # the inner stream is past the events still held
        return self._inner.resume_token

    async def close(self) -> None:
        await self._inner.close()


class ScriptedSource:
    def __init__(self, inner: ChangeSource, steps: Sequence[Step] = (), *, duplicate: bool = False) -> None:
        self._inner = inner
        self._steps = list(steps)
        self._duplicate = duplicate
        self.opened_with: list[Token | None] = []

    async def open(
        self, pipeline: Sequence[Mapping[str, Any]], *, resume_after: Token | None, max_await_ms: int
    ) -> ChangeStream:
        self.opened_with.append(resume_after)
        step = self._steps.pop(0) if self._steps else None
        if step is not None and step.hold is not None:
            await step.hold.wait()
        if step is not None and step.on_open is not None:
            raise step.on_open
        inner = await self._inner.open(pipeline, resume_after=resume_after, max_await_ms=max_await_ms)
        return _Stream(inner, step, self._duplicate)


def opened(source: ScriptedSource, count: int) -> Callable[[], Awaitable[bool]]:
    """A ``wait_until`` condition: ``source`` has opened ``count`` streams."""

    async def check() -> bool:
        return len(source.opened_with) >= count

    return check
