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


async def test_a_wait_on_changes_the_server_released_meanwhile_says_they_were_published() -> None:
    """The tap's task waits for changes beyond the offset it saw; a command's
    flush may read past it and release the engine's copies before the wait
    returns. The engine then answers "history no longer available" for that
    offset: that means changes were published, not that the tap failed (it
    stopped the server during the latency benchmark)."""
    import mongoeco

    client = mongoeco.AsyncMongoClient(change_stream_history_size=100)
    keeper = await client.db.keeper.watch(max_await_time_ms=0)  # as the server keeps one
    tap = await client.watch(max_await_time_ms=100)
    await client.db.jobs.insert_one({"_id": 0})
    assert await tap.try_next() is not None
    seen = hooks.read_offset(tap)  # what the tap's task waits beyond
    await client.db.jobs.insert_many([{"_id": i} for i in range(1, 4)])
    for _ in range(3):
        assert await tap.try_next() is not None  # a flush reads on
    hooks.release(client, tap, readers=2)  # and hands the engine's copies back
    assert await hooks.wait_published(client, seen, 1.0) is True
    keeper.close()
    tap.close()
