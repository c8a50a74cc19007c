"""How the commands speak: what they print, on which stream, in which words (every value from a
document made printable first)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from bson import json_util

from watcher.cli.stderr import fail as fail  # the commands call output.fail
from watcher.ops import logs, printable

#: Where a command's answer goes (stdout, one call per line or block).
Emit = Callable[[str], None]
#: The command's parsed options, by name.
Options = Mapping[str, Any]
#: Documents as MongoDB's tools print them (dates, ObjectIds as $date/$oid).
RELAXED = json_util.RELAXED_JSON_OPTIONS


def say(message: str) -> None:
    """A line for the operator on stderr (not the report: stdout)."""
    print(printable.text(logs.redacted(message), limit=4 * printable.TEXT_CHARS), file=sys.stderr, flush=True)


def extended_json(value: Any) -> str:
    """Any BSON value as relaxed Extended JSON (what mongosh and mongoexport show)."""
    return json_util.dumps(value, json_options=RELAXED)


def count(n: int, noun: str) -> str:
    """``1 stuck job``, ``2 stuck jobs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def human_s(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def ago(age_s: float | None) -> str:
    return "never" if age_s is None else f"{human_s(age_s)} ago"


def before(seconds: float | None) -> str:
    return "none" if seconds is None else f"{human_s(seconds)} before it"


def or_unknown(value: Any) -> str:
    return "unknown" if value is None else printable.value(value)
