"""Log output goes to the stream that is stderr when a line is written."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.printing import FORGED_LINE, hostile_text, raw_controls
from watcher.ops import logs, printable


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


class _Counted:
    """A value that counts how often it was turned into text."""

    def __init__(self) -> None:
        self.shown = 0

    def __str__(self) -> str:
        self.shown += 1
        return "counted"


def test_an_event_below_every_sink_is_not_built() -> None:
    """A watcher at WARNING completes thousands of jobs a second: the INFO
    line about each must cost nothing, not even its values turned to text."""
    out = io.StringIO()
    logs.setup(level="WARNING", stream=out)
    value = _Counted()
    logs.event("job_completed", job_id=value)
    assert value.shown == 0 and out.getvalue() == ""
    logs.event("write_retry", "WARNING", job_id=value)
    assert value.shown == 1 and "write_retry" in out.getvalue()


def test_a_sink_added_later_gets_what_its_level_takes() -> None:
    """What is skipped follows every sink loguru has, not only the one setup() added."""
    from loguru import logger

    logs.setup(level="WARNING", stream=io.StringIO())
    seen: list[str] = []
    handler = logger.add(lambda message: seen.append(message.record["extra"]["action"]), level="DEBUG")
    try:
        logs.event("update_stale", "DEBUG")
        logs.event("job_completed")
    finally:
        logger.remove(handler)
    assert seen == ["update_stale", "job_completed"]
    logs.event("job_completed")
    assert seen == ["update_stale", "job_completed"]


# -- values from documents are data (issue: forged, split, coloured or lost lines) --


def _logged(monkeypatch: pytest.MonkeyPatch, json_lines: bool, message: str, **context: object) -> tuple[str, str]:
    """What one event writes to its stream, and what loguru wrote to stderr
    (its "Logging error" reports go there)."""
    out, errors = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", errors)
    logs.setup(json_lines=json_lines, stream=out)
    logs.event("job_skipped", "WARNING", message, **context)
    return out.getvalue(), errors.getvalue()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(value=hostile_text, message=hostile_text)
@pytest.mark.parametrize("json_lines", [False, True], ids=["readable", "json"])
def test_any_value_makes_exactly_one_whole_line(
    monkeypatch: pytest.MonkeyPatch, json_lines: bool, value: str, message: str
) -> None:
    line, errors = _logged(monkeypatch, json_lines, message, job_id=value, stage=value, status=value, job_type=value)
    assert errors == ""  # no "Logging error in Loguru Handler": nothing lost
    assert line.endswith("\n") and line.count("\n") == 1
    assert not raw_controls(line[:-1])
    if json_lines:
        doc = json.loads(line)
        assert doc["action"] == "job_skipped"
        for key in ("job_id", "stage", "status", "job_type"):
            assert doc[key] == printable.cut(value, printable.TEXT_CHARS)  # the value itself, only cut
    else:
        assert " job_skipped " in line and f"job_id={printable.field(value, printable.TEXT_CHARS)}" in line


def test_a_newline_in_a_value_cannot_forge_a_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    line, errors = _logged(monkeypatch, False, "job skipped; nothing written", job_id="j1", stage=FORGED_LINE)
    assert errors == "" and line.count("\n") == 1
    assert line.split(" ")[2] != "job_completed" and "\\n2026-12-06" in line


@pytest.mark.parametrize("markup", ["<module>", "<b>", "</>", "{}", "{0}", "{message}"])
def test_markup_in_a_message_or_value_is_text(monkeypatch: pytest.MonkeyPatch, markup: str) -> None:
    line, errors = _logged(monkeypatch, False, f"ValueError: Tag {markup} in <module>", stage=markup)
    assert errors == ""
    assert f"ValueError: Tag {markup} in <module>" in line


def test_a_secret_is_redacted_before_it_is_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    logs.add_secret('p"w\\d\n1')
    for json_lines in (False, True):
        line, _ = _logged(monkeypatch, json_lines, 'auth failed for p"w\\d\n1', detail='mongodb://u:p"w\\d\n1@h/')
        assert 'p"w' not in line and 'p\\"w' not in line and "***" in line
