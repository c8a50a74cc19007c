"""Values from documents as data on a readable line: the one place that makes
them printable.

Job documents are written by other programs, so a job id, a stage name, a
status, a job type, or an error text that quotes one can hold anything: a
newline that would forge a log line, an escape sequence that clears the
operator's terminal, a right-to-left override that reorders what follows,
a lone surrogate no stream can encode, ten kilobytes of junk. Every value
bound for a line a person reads (readable log lines, the commands' text
output) goes through ``value`` or ``text``:

- every character ``repr`` would escape (C0 and C1 controls, DEL, line and
  paragraph separators, bidi and other format characters, surrogates,
  unassigned code points, spaces other than " ") is shown escaped as
  ``repr`` shows it (``\\n``, ``\\x1b``, ``\\u202e``), and so is the backslash, so
  an escape in the output always stands for one character of the value;
- long values are cut, with a marker saying how much was left out;
- nothing is ever interpreted: markup such as ``<b>`` or ``{}`` stays text
  (the log sinks never run values through a formatter).

    >>> value("thumb\\n2026-12-06 INFO job_completed")
    'thumb\\\\n2026-12-06 INFO job_completed'

``--json`` output needs none of this: JSON escapes every control character.
"""

from __future__ import annotations

from typing import Any, Final

#: Characters kept of one value (an id, a stage name, a status, a job type).
VALUE_CHARS: Final = 200
#: Characters kept of a longer text (a message, an error, a reason).
TEXT_CHARS: Final = 2000
#: Characters kept of a metrics label value.
LABEL_CHARS: Final = 64
_SHORT_ESCAPES: Final = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """``text`` with every character that is not plainly printable escaped
    (as ``repr`` escapes it), backslash included; never cut."""
    if text.isprintable() and "\\" not in text:
        return text  # the common case, one C-level scan
    return "".join(_escaped(char) for char in text)


def _escaped(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def cut(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text``, then a marker naming how many
    more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more chars]"


def _as_text(item: Any) -> str:
    if isinstance(item, str):
        return item
    try:
        return str(item)  # an ObjectId as its hex, as MongoDB's tools and the commands' headers show it
    except Exception as exc:  # a value whose __str__ fails is still shown, as what it is
        return f"<{type(item).__name__}: str() failed: {type(exc).__name__}>"


def value(item: Any, limit: int = VALUE_CHARS) -> str:
    """One value from a document (id, stage, status, job type...) as printable
    text: ``str`` of it (an ObjectId as its hex), escaped, cut at ``limit``."""
    return escape(cut(_as_text(item), limit))


def text(item: Any, limit: int = TEXT_CHARS) -> str:
    """A longer text that may quote values (a message, an error, a reason):
    the same treatment with a longer limit."""
    return value(item, limit)


def label(item: Any) -> str:
    """A metrics label value taken from a document (a job type): printable and
    short. Prometheus' exposition escapes what it must; this keeps series
    names readable and bounded."""
    return value(item, LABEL_CHARS)


def field(item: Any, limit: int = VALUE_CHARS) -> str:
    """A value as one ``key=value`` field of a readable log line: printable,
    and in double quotes when it is empty or holds a space, ``=``, ``"`` or
    ``|`` (so a value can never pose as further fields or as the separator)."""
    shown = value(item, limit)
    if shown and not any(char in shown for char in ' ="|'):
        return shown
    return '"' + shown.replace('"', '\\"') + '"'
