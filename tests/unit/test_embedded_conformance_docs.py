"""The embedded server's page shows the figures of the last conformance run
(``./dev conformance PATH`` writes embedded/conformance.json and the page's
section together): never figures typed by hand, never stale ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "explanation" / "embedded-server.md"
FIGURES = ROOT / "embedded" / "conformance.json"


def test_the_page_shows_the_last_runs_figures() -> None:
    conformance = pytest.importorskip("jobwatch_embedded.conformance")
    results = conformance.from_json(json.loads(FIGURES.read_text()))
    text = PAGE.read_text()
    start, end = text.index(conformance.MARK_START), text.index(conformance.MARK_END) + len(conformance.MARK_END)
    assert text[start:end] == conformance.markdown(results), "run ./dev conformance PATH (it rewrites the section)"
