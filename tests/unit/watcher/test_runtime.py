"""``jobwatch run`` sets its process up for the hot path before the watcher
starts (``watcher.ops.runtime``); the other commands leave Python's defaults."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from watcher.cli import commands, interrupts
from watcher.ops import runtime
from watcher.settings import Settings


@pytest.fixture
def default_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


async def test_run_raises_the_collector_thresholds_before_the_watcher_starts(
    monkeypatch: pytest.MonkeyPatch, default_thresholds: None
) -> None:
    seen: list[tuple[int, ...]] = []

    class Started:
        def __init__(self, client: Any, settings: Settings) -> None:
            seen.append(gc.get_threshold())

        def request_stop(self) -> None: ...

        async def run(self) -> None:
            seen.append(gc.get_threshold())

    monkeypatch.setattr(commands, "Watcher", Started)
    code = await commands._run(None, {}, Settings(), print, stopper=interrupts.Stopper())  # type: ignore[arg-type]
    assert code == 0
    assert seen == [runtime.GC_THRESHOLDS, runtime.GC_THRESHOLDS]
    assert runtime.GC_THRESHOLDS[0] > 700 * 10  # fewer young collections by an order of magnitude at least


def test_tune_is_idempotent(default_thresholds: None) -> None:
    runtime.tune()
    runtime.tune()
    assert gc.get_threshold() == runtime.GC_THRESHOLDS
    assert gc.isenabled()  # cycles are still collected, only less often
