"""Strings that try to escape the value they are in: for the tests that
every line jobwatch prints keeps document values as data.

``HOSTILE`` holds the named attacks (a forged log line, terminal escape
sequences, loguru's colour markup and format fields, NUL, a lone
surrogate, right-to-left overrides, 10 kB); ``hostile_text`` mixes them with
hypothesis' own strings; ``storable_text`` and ``storable_key`` only what a
MongoDB document can hold as a value or as a field name.
"""

from __future__ import annotations

import unicodedata

from hypothesis import strategies as st

FORGED_LINE = "thumb\n2026-12-06 20:31:00.000000 INFO    job_completed          job completed | job_id=forged"
HOSTILE = [
    FORGED_LINE,
    "\x1b[2J\x1b[31mred",
    "<module>",
    "<b>",
    "{}",
    "{0!r:>{1}}",
    "a\x00b",
    "cr\roverwrite",
    "\ud800lone",
    "rtl\u202egnp.exe",
    "isolate\u2066x\u2069",
    "line\u2028sep",
    "c1\x85\x9b31m",
    "x" * 10_000,
    "",
    "back\\slash",
]
hostile_text = st.one_of(st.sampled_from(HOSTILE), st.text(), st.text(alphabet=st.characters(codec=None), max_size=300))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: What BSON can hold in a string value (UTF-8: no lone surrogate).
storable_text = hostile_text.filter(_encodable)
#: What a document can hold as a stage name (no NUL, no dot, no leading $, not empty).
storable_key = storable_text.map(lambda s: s.replace("\x00", "").replace(".", "").lstrip("$")).filter(bool)


def raw_controls(text: str) -> list[str]:
    """Characters a terminal or a log viewer would act on rather than show."""
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
