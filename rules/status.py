"""Job and stage statuses: the canonical spellings and how we read the others.

The C# service writes PascalCase (``InProgress``); legacy rows and hand edits
hold case variants (``inprogress``, ``in_progress``, ``CANCELED``). We read
them all and only ever write the canonical spelling defined here.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    #: Missing, null, or a spelling we do not know. Treated as open (DESIGN rule 1).
    UNKNOWN = "Unknown"

    @property
    def is_open(self) -> bool:
        return self not in TERMINAL

    @property
    def is_explicit_stop(self) -> bool:
        """Failed or Cancelled: a decision somebody made; the watcher keeps it."""
        return self in (Status.FAILED, Status.CANCELLED)


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

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
