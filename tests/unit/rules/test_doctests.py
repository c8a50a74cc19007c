"""The examples in the rules' docstrings run and still say what the code does."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["rules.status", "rules.model", "rules.evaluate", "rules.decision", "rules.explain", "rules.memo"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
