"""A tolerant, hand-written reader of job documents as the C# service (and its
past) wrote them.

Reading is forgiving where the meaning is clear: counters stored as text,
doubles or Decimal128, null or negative counters, status case variants,
missing fields and missing stages all read. What cannot be read safely is a
``Rejection`` (the job is skipped and nothing is written to it):

- a counter that is not a number (``"lots"``, a boolean, bytes or ``Binary``,
  a date, a document, a list, JavaScript ``Code``), or that is not finite
  (NaN, Infinity), or whose size is beyond the 64-bit integers MongoDB can
  store (``1e30``, ``Decimal128("1E+40")``): any value we derived from it
  could not be written back;
- a status that is neither text nor null (a regex, a ``{"$ne": 1}``
  document, ``Code``, a number): we cannot tell whether the job is open, so
  we never overwrite it;
- a stage that is not a document, or a stage name that is not addressable as
  a MongoDB field path (empty, a dot, a leading ``$``, a NUL, or not UTF-8).

Fractions never advance a completion: a stage's ``totalItems`` rounds up and
every other counter rounds down, so a total of 131.5 needs 132 items.

This reader is plain Python (no pydantic, no bson import): it runs for every
change event. Values from bson are recognised by duck typing (``Int64`` is an
``int``; ``Decimal128`` has ``to_decimal``; ``Code`` is a ``str`` subclass and
is therefore not text here).
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from rules import status as status_mod
from rules.status import TERMINAL, Status

#: The largest integer BSON can store (int64). A counter beyond it is rejected.
INT64_MAX: Final = 2**63 - 1

#: Counters written as text by legacy rows: a plain decimal number, nothing else
#: (Python's float() would also take "1_000", "nan" and non-ASCII digits).
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Unreadable(ValueError):
    """A field the rules cannot read; the message says why, on its own."""


def read_count(raw: object, *, round_up: bool = False) -> int:
    """A counter as the rules use it: a whole number in ``0..INT64_MAX``.

    Missing and null read as 0, and so do negative values (a counter cannot
    be below zero). Fractions round down, or up with ``round_up`` (totals).
    Raises ``Unreadable`` for anything else.

    >>> read_count(132), read_count("132"), read_count(131.5), read_count(131.5, round_up=True), read_count(-3)
    (132, 132, 131, 132, 0)
    """
    if type(raw) is int:  # the common case first: this runs for every counter
        if raw > INT64_MAX or raw < -INT64_MAX:
            raise Unreadable(f"{raw} is beyond the 64-bit range MongoDB stores")
        return raw if raw > 0 else 0
    if raw is None:
        return 0
    if isinstance(raw, bool):  # bool is an int subclass in Python, never a count
        raise Unreadable(f"a count, not a boolean ({raw!r})")
    if isinstance(raw, int):  # Int64 and other int subclasses: plain int out
        return read_count(int(raw), round_up=round_up)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise Unreadable(f"a finite number, not {raw!r}")
        if raw > INT64_MAX or raw < -INT64_MAX:  # exact: Python compares float and int exactly
            raise Unreadable(f"{raw!r} is beyond the 64-bit range MongoDB stores")
        whole = math.ceil(raw) if round_up else math.floor(raw)
        return whole if whole > 0 else 0
    if type(raw) is str:
        text = raw.strip()
        if not _NUMBER_TEXT.fullmatch(text):
            raise Unreadable(f"a number, not the text {_short(raw)}")
        return _from_decimal(decimal.Decimal(text), raw, round_up)
    to_decimal = getattr(type(raw), "to_decimal", None)  # bson.Decimal128, duck-typed
    if to_decimal is not None:
        value = to_decimal(raw)
        if isinstance(value, decimal.Decimal):
            return _from_decimal(value, raw, round_up)
    raise Unreadable(f"a number, not {type(raw).__name__}")


def _from_decimal(value: decimal.Decimal, raw: object, round_up: bool) -> int:
    if not value.is_finite():
        raise Unreadable(f"a finite number, not {_short(raw)}")
    if value.copy_abs() > INT64_MAX:  # copy_abs: no context, so 1E+999999999 cannot trap
        raise Unreadable(f"{_short(raw)} is beyond the 64-bit range MongoDB stores")
    whole = int(value.to_integral_value(decimal.ROUND_CEILING if round_up else decimal.ROUND_FLOOR))
    return whole if whole > 0 else 0


def read_status(raw: object) -> Status:
    """A stored status: text (any known spelling; unknown text is ``UNKNOWN``,
    which is open) or null/missing (``UNKNOWN``). Any other type is ``Unreadable``."""
    if raw is None:
        return Status.UNKNOWN
    if type(raw) is not str:  # Code is a str subclass: JavaScript, not a status
        raise Unreadable(f"a status must be text, not {type(raw).__name__}")
    found = status_mod.parse(raw)
    if found is Status.UNKNOWN and not _is_utf8(raw):
        raise Unreadable("a status must be valid UTF-8 text")
    return found


def check_stage_name(name: object) -> str:
    """A stage name usable in a dotted update path, or ``Unreadable``."""
    if type(name) is not str or not name:
        raise Unreadable(f"stage name {_short(name)} cannot be addressed as a field path")
    if "." in name or name[0] == "$" or "\x00" in name or not _is_utf8(name):
        raise Unreadable(f"stage name {_short(name)} cannot be addressed as a field path")
    return name


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no BSON string can hold it
        return False
    return True


def _short(raw: object) -> str:
    shown = repr(raw)
    return shown if len(shown) <= 60 else shown[:57] + "..."


class Stage(NamedTuple):
    """One stage as read: the values the rules decide on, and the values as
    stored (``raw_*``), which the guard pins and ``$max`` is compared with.

    Built per stage per change event: a NamedTuple is cheap to build, and its
    fields read as fast as a plain tuple's.
    """

    name: str
    status: Status
    #: ``totalItems``, rounded up: a fraction must never advance a completion.
    total: int
    #: ``completedItems``, rounded down.
    completed: int
    #: ``progress`` (a percentage), rounded down.
    progress: int
    raw_status: str | None
    raw_total: Any
    raw_completed: Any
    raw_progress: Any


class Job(NamedTuple):
    """A job as read: the values the rules decide on, the values as stored
    (``raw_*``), and its stages in document order.

    A terminal job is read no further than its status: it is never touched,
    so its counters and stages do not matter (zero, ``None`` and empty here).
    """

    #: ``_id``, as stored (ObjectId, or a string on legacy rows).
    id: Any
    #: ``jobType``, as stored: only reported, never decided on.
    job_type: Any
    status: Status
    raw_status: str | None
    #: ``progress``, ``totalItems`` and ``completedItems``, rounded down.
    progress: int
    total: int
    completed: int
    raw_progress: Any
    raw_total: Any
    raw_completed: Any
    stages: tuple[Stage, ...]


class Rejection(NamedTuple):
    """Why a document could not be read as a job. Typed, so callers can log it
    and count it; ``reason`` reads well on its own and starts with the field."""

    job_id: Any
    reason: str
    field: str | None = None


_CANONICAL: dict[str, Status] = status_mod.CANONICAL


def read_job(doc: object) -> Job | Rejection:
    """Read ``doc`` as a job, or say precisely why it cannot be read.

    Every counter goes through ``read_count`` and every status through
    ``read_status``. This runs for every change event, so the common cases
    are answered inline first with the same result: a plain int in range is
    taken as it is, a canonical spelling is looked up.

    >>> job = read_job({"_id": 1, "status": "inprogress", "stages": {"a": {"completedItems": "3", "totalItems": 9.5}}})
    >>> job.status, job.stages[0].total, job.stages[0].completed, job.stages[0].raw_completed
    (<Status.IN_PROGRESS: 'InProgress'>, 10, 3, '3')
    >>> read_job({"_id": 1, "progress": "lots"}).reason
    "progress: a number, not the text 'lots'"
    """
    if type(doc) is not dict and not isinstance(doc, Mapping):
        return Rejection(None, f"a job must be a document, not {type(doc).__name__}")
    get = doc.get
    job_id = get("_id")
    if job_id is None:
        return Rejection(None, "the document has no _id", "_id")
    if isinstance(job_id, list):
        return Rejection(None, "_id: an _id cannot be an array", "_id")
    where = "status"
    try:
        raw_status = get("status")
        found = _CANONICAL.get(raw_status) if type(raw_status) is str else None
        status = read_status(raw_status) if found is None else found
        if status in TERMINAL:
            return Job(job_id, get("jobType"), status, raw_status, 0, 0, 0, None, None, None, ())
        where = "progress"
        raw_progress = get("progress")
        progress = (
            raw_progress if type(raw_progress) is int and 0 <= raw_progress <= INT64_MAX else read_count(raw_progress)
        )
        where = "totalItems"
        raw_total = get("totalItems")
        total = raw_total if type(raw_total) is int and 0 <= raw_total <= INT64_MAX else read_count(raw_total)
        where = "completedItems"
        raw_completed = get("completedItems")
        completed = (
            raw_completed
            if type(raw_completed) is int and 0 <= raw_completed <= INT64_MAX
            else read_count(raw_completed)
        )
        where = "stages"
        stages = _read_stages(get("stages"))
    except _StageUnreadable as exc:
        return Rejection(job_id, f"{exc.where}: {exc.reason}", exc.where)
    except Unreadable as exc:
        return Rejection(job_id, f"{where}: {exc}", where)
    return Job(
        job_id,
        get("jobType"),
        status,
        raw_status,
        progress,
        total,
        completed,
        raw_progress,
        raw_total,
        raw_completed,
        stages,
    )


#: The public name (``rules.parse_job``) of the one reader.
parse_job = read_job


class _StageUnreadable(Exception):
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(where, reason)
        self.where = where
        self.reason = reason


def _read_stages(raw: object) -> tuple[Stage, ...]:
    if raw is None:
        return ()
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise Unreadable(f"stages must be a document of named stages, not {type(raw).__name__}")
    return tuple([_read_stage(name, stage) for name, stage in raw.items()])


def _read_stage(name: object, raw: object) -> Stage:
    # The cheap checks of check_stage_name first; it decides the rest.
    if not (
        type(name) is str and name and name.isascii() and "." not in name and name[0] != "$" and "\x00" not in name
    ):
        try:
            check_stage_name(name)
        except Unreadable as exc:
            raise _StageUnreadable("stages", str(exc)) from None
    assert isinstance(name, str)  # check_stage_name proved it
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise _StageUnreadable(f"stages.{name}", f"a stage must be a document, not {type(raw).__name__}")
    get = raw.get
    where = "status"
    try:
        raw_status = get("status")
        found = _CANONICAL.get(raw_status) if type(raw_status) is str else None
        status = read_status(raw_status) if found is None else found
        where = "totalItems"
        raw_total = get("totalItems")
        # Totals round up: a fraction must never advance a completion.
        total = (
            raw_total
            if type(raw_total) is int and 0 <= raw_total <= INT64_MAX
            else read_count(raw_total, round_up=True)
        )
        where = "completedItems"
        raw_completed = get("completedItems")
        completed = (
            raw_completed
            if type(raw_completed) is int and 0 <= raw_completed <= INT64_MAX
            else read_count(raw_completed)
        )
        where = "progress"
        raw_progress = get("progress")
        progress = (
            raw_progress if type(raw_progress) is int and 0 <= raw_progress <= INT64_MAX else read_count(raw_progress)
        )
    except Unreadable as exc:
        raise _StageUnreadable(f"stages.{name}.{where}", str(exc)) from None
    return Stage(name, status, total, completed, progress, raw_status, raw_total, raw_completed, raw_progress)
