"""The README is the front door: it opens with its two commands; the
settings reference must match what the code does."""

from __future__ import annotations

from pathlib import Path

from watcher.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SETTINGS_PAGE = (ROOT / "docs" / "reference" / "settings.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "./dev test" in first_block and "./dev demo" in first_block


def test_every_setting_has_a_line_in_the_configuration_table() -> None:
    for name in Settings.model_fields:
        flag, env = f"`--{name.replace('_', '-')}`", f"`JOBWATCH_{name.upper()}`"
        assert f"| {flag} | {env} |" in SETTINGS_PAGE, f"the settings reference lacks {name}"


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
