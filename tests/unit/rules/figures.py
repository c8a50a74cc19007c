"""Counts what the hostile-document tests saw, for the session's closing figures."""

from __future__ import annotations

from collections import Counter

from rules import Outcome

SEEN: Counter[str] = Counter()


def record(outcome: Outcome) -> None:
    """One document passed every check."""
    SEEN["documents"] += 1
    SEEN[outcome.value] += 1


def failed() -> None:
    """One document failed a check (an exception or a write the rules cannot
    justify); hypothesis replays it while shrinking, so this counts runs."""
    SEEN["documents"] += 1
    SEEN["failed"] += 1


def summary() -> str | None:
    if not SEEN["documents"]:
        return None
    shown = ", ".join(f"{outcome.value} {SEEN[outcome.value]:,}" for outcome in Outcome if SEEN[outcome.value])
    return (
        f"hostile job documents through the rules: {SEEN['documents']:,} evaluated, "
        f"{SEEN['failed']:,} failed a check ({shown})"
    )
