"""The README is the front door: its commands and its configuration table
must match what the code does."""

from __future__ import annotations

from pathlib import Path

from watcher.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "./dev test" in first_block and "./dev demo" in first_block


def test_every_setting_has_a_line_in_the_configuration_table() -> None:
    for name in Settings.model_fields:
        flag, env = f"`--{name.replace('_', '-')}`", f"`JOBWATCH_{name.upper()}`"
        assert f"| {flag} | {env} |" in README, f"README's configuration table lacks {name}"
