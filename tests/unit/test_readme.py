"""The README is the front door: it opens with its two commands, stays short
and points into docs/ (tests/unit/test_docs.py checks its links)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
#: Everything else lives in docs/; the README holds the hook, the quick start and the commands.
MAX_LINES = 200


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "./dev test" in first_block and "./dev demo" in first_block


def test_readme_stays_short() -> None:
    assert len(README.splitlines()) <= MAX_LINES, "move the new text into a docs/ page and link it"


def test_the_takeover_figures_come_from_the_results_file() -> None:
    """docs/how-to/run-several.md's table is bench/takeover.py's rendering of
    bench/results/takeover.json, never typed by hand."""
    import json

    from bench import takeover

    page = (ROOT / "docs" / "how-to" / "run-several.md").read_text()
    results = ROOT / "bench" / "results" / "takeover.json"
    assert takeover.START in page and takeover.END in page
    assert results.exists(), "run ./dev bench takeover"
    assert takeover.markdown(json.loads(results.read_text())) in page


def test_the_readme_takeover_line_comes_from_the_results_file() -> None:
    """The README's takeover figures are bench/takeover.py's line from
    bench/results/takeover.json (``./dev bench takeover`` prints it)."""
    import json

    from bench import takeover

    results = json.loads((ROOT / "bench" / "results" / "takeover.json").read_text())
    assert takeover.headline(results) in README, takeover.headline(results)
