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
