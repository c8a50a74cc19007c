"""The start-up self-check of the mongoeco hooks the server builds on."""

from __future__ import annotations

import pytest

from jobwatch_embedded import hooks


def test_every_hook_is_present_in_the_pinned_mongoeco() -> None:
    hooks.check()


def test_a_missing_hook_is_named_with_the_mongoeco_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "HOOKS", (*hooks.HOOKS, ("mongoeco.core.aggregation", "no_such_hook")))
    with pytest.raises(hooks.HookMissing) as caught:
        hooks.check()
    message = str(caught.value)
    assert "mongoeco.core.aggregation.no_such_hook" in message and hooks.version() in message and "4.11" in message
