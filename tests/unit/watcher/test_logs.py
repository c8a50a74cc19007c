"""Log output goes to the stream that is stderr when a line is written."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from watcher.ops import logs


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logs.setup()  # lazily to stderr, as the suite's other tests expect


@pytest.mark.parametrize("json_lines", [False, True], ids=["readable", "json"])
def test_lines_follow_stderr_after_setup(monkeypatch: pytest.MonkeyPatch, json_lines: bool) -> None:
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    logs.setup(json_lines=json_lines)
    first.close()  # what pytest's capture does to the stderr a test had
    later = io.StringIO()
    monkeypatch.setattr("sys.stderr", later)

    logs.event("stage_completed", job_id="j1")

    line = later.getvalue()
    assert "Logging error" not in line  # loguru's report of a write to the closed stream
    assert line.count("\n") == 1 and "stage_completed" in line and "j1" in line
    if json_lines:
        assert json.loads(line)["action"] == "stage_completed"


def test_an_explicit_stream_is_kept() -> None:
    out = io.StringIO()
    logs.setup(stream=out)
    logs.event("sweep_finished", level="WARNING", scanned=3)
    assert "sweep_finished" in out.getvalue() and "scanned=3" in out.getvalue()
