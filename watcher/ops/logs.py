"""Structured logs with loguru: a stable snake_case ``action`` per event, bound
context (``job_id``, ``stage``, ...), readable lines or JSON, secrets redacted.

    logs.event("stage_completed", job_id=job_id, stage="thumbnail")
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from loguru import logger

from watcher.ops import printable, redact

_redactor = redact.Redactor()
_set_up = False


def add_secret(secret: str) -> None:
    """Never print ``secret`` (e.g. a URI's password), wherever it shows up."""
    _redactor.add(secret)


def event(action: str, level: str = "INFO", message: str | None = None, **context: Any) -> None:
    if _level_no(level) < _lowest_level_taken():
        return  # no sink takes this level (a high-rate watcher at WARNING): nothing to build
    context = {k: _plain(v) for k, v in context.items() if v is not None}
    logger.bind(action=action, **context).log(level, message or action.replace("_", " "))


_LEVELS: dict[str, int] = {}


def _level_no(level: str) -> int:
    number = _LEVELS.get(level)
    if number is None:
        number = _LEVELS[level] = logger.level(level).no
    return number


def _lowest_level_taken() -> float:
    """The lowest level any sink takes, as loguru keeps it for its own check;
    0 (everything is built) should a loguru version not keep it there."""
    return getattr(getattr(logger, "_core", None), "min_level", 0)


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _readable_sink(write: Callable[[str], None]) -> Any:
    """Readable lines, built here from the record: the message and every
    value go through ``printable`` (escaped, cut at ``TEXT_CHARS``, quoted
    when they hold a space) after redaction, and nothing is handed to loguru's formatter, so a
    value's ``<tag>`` or ``{}`` is text and a newline cannot start a line."""

    def sink(message: Any) -> None:
        record = message.record
        extra = record["extra"]
        action = extra.get("action", "-")
        fields = " ".join(
            f"{k}={printable.field(_redactor(str(v)), printable.TEXT_CHARS)}" for k, v in extra.items() if k != "action"
        )
        text = printable.text(_redactor(record["message"]))
        line = f"{record['time']:%Y-%m-%d %H:%M:%S.%f%z} {record['level'].name:<7} {action:<22} {text}"
        if fields:
            line += f" | {fields}"
        if record["exception"] is not None:
            line += f" | exception={printable.field(_redactor(_exception(record)), printable.TEXT_CHARS)}"
        write(line + "\n")

    return sink


def _exception(record: Any) -> str:
    return f"{record['exception'].type.__name__}: {record['exception'].value}"


def _bounded(value: Any, limit: int) -> Any:
    """A JSON line's value: numbers and booleans as they are, text cut at
    ``limit`` (JSON escapes the rest)."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    return printable.cut(str(value), limit)


def _writer(stream: TextIO | None) -> Callable[[str], None]:
    def write(text: str) -> None:
        # Without an explicit stream, sys.stderr is looked up per line, not at
        # setup: whoever replaced it since (pytest's capture, a daemon's
        # redirect) gets the line, never a stream that has since been closed.
        out = sys.stderr if stream is None else stream
        out.write(text)
        out.flush()

    return write


def _json_sink(write: Callable[[str], None]) -> Any:
    def sink(message: Any) -> None:
        record = message.record
        doc = {
            "time": record["time"].isoformat(),
            "level": record["level"].name,
            "action": record["extra"].get("action"),
            "message": _bounded(record["message"], printable.TEXT_CHARS),
            **{k: _bounded(v, printable.TEXT_CHARS) for k, v in record["extra"].items() if k != "action"},
        }
        if record["exception"] is not None:
            doc["exception"] = _bounded(_exception(record), printable.TEXT_CHARS)
        # Redacted value by value, before JSON escapes them: a secret holding a
        # quote or a backslash would not be found in the escaped line.
        write(json.dumps({k: _redactor(v) if isinstance(v, str) else v for k, v in doc.items()}) + "\n")

    return sink


def setup(*, json_lines: bool = False, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure the process's log output (the CLI calls this once): to
    ``stream``, or to whatever ``sys.stderr`` is when each line is written."""
    global _set_up
    _set_up = True
    write = _writer(stream)
    logger.remove()
    if json_lines:
        logger.add(_json_sink(write), level=level, format="{message}", colorize=False)
    else:
        logger.add(_readable_sink(write), level=level, format="{message}", colorize=False)


def setup_once() -> None:
    """The default output (readable, to stderr), unless ``setup`` ran already."""
    if not _set_up:
        setup()


def redacted(text: str) -> str:
    return _redactor(text)
