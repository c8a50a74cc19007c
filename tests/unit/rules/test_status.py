"""Status spellings: the reader's and the server-side lists' agree.

The storage layer cannot lower-case on the server, so its queries (the
sweep's passes, the census, ``jobwatch status``) list spellings. A spelling
the reader takes as terminal but the lists lack is counted as an open job
(and can raise the done-but-open alert forever); an open one they lack is
left to the hourly full sweep.
"""

from __future__ import annotations

import pytest

from rules import status
from rules.status import Status, parse, spellings

#: The words the project's own data and tests use, by the status they mean.
WORDS = {
    Status.PENDING: ["Pending"],
    Status.IN_PROGRESS: ["InProgress", "running", "in_progress", "in-progress", "in progress"],
    Status.COMPLETED: ["Completed", "complete"],
    Status.FAILED: ["Failed"],
    Status.CANCELLED: ["Cancelled", "canceled"],
}


def casings(word: str) -> list[str]:
    return [word, word.lower(), word.upper(), word.capitalize(), word.title()]


@pytest.mark.parametrize("status", list(WORDS), ids=lambda status: status.value)
def test_every_usual_casing_of_every_word_is_listed_for_the_server(status: Status) -> None:
    listed = spellings(status)
    for word in WORDS[status]:
        for spelling in casings(word):
            assert parse(spelling) is status
            assert spelling in listed, f"{spelling!r} reads as {status.value} but is not listed for the server"


@pytest.mark.parametrize("status", list(WORDS), ids=lambda status: status.value)
def test_every_listed_spelling_reads_as_its_status(status: Status) -> None:
    for spelling in spellings(status):
        assert parse(spelling) is status


def test_the_server_side_lists_split_the_known_spellings_into_open_and_terminal() -> None:
    assert status.KNOWN_SPELLINGS == status.OPEN_SPELLINGS + status.TERMINAL_SPELLINGS
    assert {parse(spelling) for spelling in status.OPEN_SPELLINGS} == {Status.PENDING, Status.IN_PROGRESS}
    assert {parse(spelling) for spelling in status.TERMINAL_SPELLINGS} == status.TERMINAL
    assert "CANCELED" in status.TERMINAL_SPELLINGS and "Running" in status.OPEN_SPELLINGS
