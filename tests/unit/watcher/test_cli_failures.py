"""What a command that ended on an error tells the operator: the server's
trouble is never called a bug, however the task groups wrapped it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pymongo import AsyncMongoClient
from pymongo import errors as pe

from watcher.cli import commands, exits, simulate
from watcher.settings import Settings
from watcher.storage import errors


def test_consumers_that_lost_the_server_together_are_one_unreachable_server() -> None:
    group = ExceptionGroup(
        "consumers",
        [pe.AutoReconnect("reset"), pe.AutoReconnect("reset"), errors.StoreUnavailable("x", error="NetworkTimeout")],
    )
    code, message = commands.describe_failure(BaseExceptionGroup("outer", [group]))
    assert code == exits.UNREACHABLE and "a bug" not in message


def test_a_bug_among_server_errors_is_still_reported_as_a_bug() -> None:
    code, message = commands.describe_failure(
        ExceptionGroup("consumers", [pe.AutoReconnect("reset"), KeyError("stages")])
    )
    assert code == exits.FAILED and "a bug" in message and "KeyError" in message


def test_a_configuration_problem_inside_a_group_keeps_its_exit_code() -> None:
    code, _ = commands.describe_failure(ExceptionGroup("g", [errors.ConfigurationProblem("missing role")]))
    assert code == exits.USAGE


def test_simulate_against_a_dead_server_ends_as_store_unavailable() -> None:
    settings = Settings(database="sim", server_selection_timeout_ms=100)
    plan = simulate.Plan(
        jobs=2, stages=("a",), items=2, consumers=3, rate=0, legacy_fraction=0.5, lost_fraction=0, job_type="t"
    )

    async def scenario() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            "mongodb://127.0.0.1:9", serverSelectionTimeoutMS=100
        )
        try:
            await simulate.play(client[settings.database], settings, plan)
        finally:
            await client.close()

    with pytest.raises(errors.StoreUnavailable):
        anyio.run(scenario)
