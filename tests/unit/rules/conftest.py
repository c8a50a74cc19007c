"""Prints the hostile-document figures at the end of the session (docs/explanation/rules.md quotes them)."""

from __future__ import annotations

import pytest

from tests.unit.rules import figures


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    line = figures.summary()
    if line is not None:
        terminalreporter.write_sep("-", "rules figures")
        terminalreporter.write_line(line)
