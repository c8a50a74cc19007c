"""Prints the reliability suite's figures at the end of the session (docs/explanation/guarantees.md quotes them)."""

from __future__ import annotations

import pytest

from tests.support import backend_figures


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    line = backend_figures.summary()
    if line is not None:
        terminalreporter.write_sep("-", "reliability figures")
        terminalreporter.write_line(line)
