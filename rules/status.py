"""Job and stage statuses: the canonical spellings, how we read the others,
and the lists of spellings the storage layer puts in its queries.

The C# service writes PascalCase (``InProgress``); legacy rows and hand edits
hold case variants (``inprogress``, ``in_progress``, ``CANCELED``). We read
them all and only ever write the canonical spelling defined here. This module
is the one place that says which statuses are open and which are terminal.
"""

from __future__ import annotations

import enum
from typing import Final


class Status(enum.Enum):
    """A job's or a stage's status; the value is its canonical spelling."""

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    #: Missing, null, or a spelling we do not know. Treated as open (rule 1).
    UNKNOWN = "Unknown"

    @property
    def is_open(self) -> bool:
        """Not terminal: work may still be going on (``UNKNOWN`` included)."""
        return self not in TERMINAL

    @property
    def is_explicit_stop(self) -> bool:
        """Failed or Cancelled: a decision somebody made; the watcher keeps it."""
        return self is Status.FAILED or self is Status.CANCELLED


#: Statuses that end a job or a stage. A terminal job is never touched (rule 5),
#: a terminal stage never rewritten; every other status, unknown ones too, is open.
TERMINAL: Final = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

#: The words ``parse`` reads, lower case and without separators, by the status
#: they mean (``parse`` folds case and drops ``_``, ``-`` and spaces first).
_ALIASES = {
    "pending": Status.PENDING,
    "inprogress": Status.IN_PROGRESS,
    "running": Status.IN_PROGRESS,
    "completed": Status.COMPLETED,
    "complete": Status.COMPLETED,
    "failed": Status.FAILED,
    "cancelled": Status.CANCELLED,
    "canceled": Status.CANCELLED,
}

#: Words of more than one part, with the separators legacy data puts between
#: them (``parse`` ignores separators; the server-side lists cannot).
_SEPARATED = {Status.IN_PROGRESS: ("in_progress", "in-progress", "in progress")}

#: The canonical spellings (what we write), for a fast exact lookup.
CANONICAL: dict[str, Status] = {status.value: status for status in Status if status is not Status.UNKNOWN}


def parse(raw: object) -> Status:
    """Read a stored status tolerantly; anything unrecognised is ``UNKNOWN``.

    >>> parse("in_progress"), parse(" COMPLETED "), parse(None)
    (<Status.IN_PROGRESS: 'InProgress'>, <Status.COMPLETED: 'Completed'>, <Status.UNKNOWN: 'Unknown'>)
    """
    if type(raw) is not str:  # bson.Code is an unhashable str subclass: not a status
        return Status.UNKNOWN
    exact = CANONICAL.get(raw)
    if exact is not None:
        return exact
    key = raw.strip().lower().replace("_", "").replace("-", "").replace(" ", "")
    return _ALIASES.get(key, Status.UNKNOWN)


def spellings(*statuses: Status) -> list[str]:
    """Stored spellings that ``parse`` maps to ``statuses``, for server-side
    filters and the sweep's index, which cannot lower-case on the server.

    Each word ``parse`` knows (the canonical one, the aliases, ``in_progress``
    with each separator) in its usual casings: as written, lower, UPPER,
    Capitalized and Title. A spelling missing here reads correctly but is
    filtered wrongly on the server: a ``CANCELED`` job would be counted open.

    >>> spellings(Status.CANCELLED)
    ['Cancelled', 'cancelled', 'CANCELLED', 'canceled', 'CANCELED', 'Canceled']
    """
    out: list[str] = []
    for status in statuses:
        words = [status.value, *(alias for alias, target in _ALIASES.items() if target is status)]
        words += _SEPARATED.get(status, ())
        for word in words:
            for spelling in (word, word.lower(), word.upper(), word.capitalize(), word.title()):
                if spelling not in out:
                    out.append(spelling)
    return out


# The lists the storage layer sends to the server (``$in`` / ``$nin``): queries
# cannot fold case there, so they name every spelling ``spellings`` knows.

#: Every spelling of an open status we know by name: the sweep reads these jobs on every pass.
OPEN_SPELLINGS: Final = spellings(*(status for status in Status if status.is_open and status is not Status.UNKNOWN))
#: Every spelling of a terminal status: what counts of open jobs leave out (``$nin``).
TERMINAL_SPELLINGS: Final = spellings(*(status for status in Status if status in TERMINAL))
#: Every spelling we know. A job whose status is none of these (missing, null,
#: ``Queued``) is open: the full sweep finds it with ``$nin`` of this list.
KNOWN_SPELLINGS: Final = OPEN_SPELLINGS + TERMINAL_SPELLINGS
