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

from watcher.ops import redact

_redactor = redact.Redactor()


def add_secret(secret: str) -> None:
    """Never print ``secret`` (e.g. a URI's password), wherever it shows up."""
    _redactor.add(secret)


def event(action: str, level: str = "INFO", message: str | None = None, **context: Any) -> None:
    context = {k: _plain(v) for k, v in context.items() if v is not None}
    logger.bind(action=action, **context).log(level, message or action.replace("_", " "))


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _readable(record: Any) -> str:
    extra = record["extra"]
    action = extra.get("action", "-")
    context = " ".join(f"{k}={v}" for k, v in extra.items() if k != "action")
    line = f"{record['time']:%Y-%m-%d %H:%M:%S.%f} {record['level'].name:<7} {action:<22} {record['message']}"
    if context:
        line += f" | {context}"
    return _redactor(line).replace("{", "{{").replace("}", "}}") + "\n{exception}"


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
            "message": record["message"],
            **{k: v for k, v in record["extra"].items() if k != "action"},
        }
        if record["exception"] is not None:
            doc["exception"] = f"{record['exception'].type.__name__}: {record['exception'].value}"
        write(_redactor(json.dumps(doc, default=str)) + "\n")

    return sink


def setup(*, json_lines: bool = False, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure the process's log output (the CLI calls this once): to
    ``stream``, or to whatever ``sys.stderr`` is when each line is written."""
    write = _writer(stream)
    logger.remove()
    if json_lines:
        logger.add(_json_sink(write), level=level)
    else:
        logger.add(write, level=level, format=_readable, colorize=False, backtrace=False, diagnose=False)


def redacted(text: str) -> str:
    return _redactor(text)
