"""Errors through the change-source seam, as PyMongo raises them (real
exception types, codes and labels), on top of real change events."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pymongo import errors as pe

from tests.support.backends import Backend
from tests.support.harness import complete_a_job, metric, running, wait_until
from tests.support.scripted import ScriptedSource, Step, failure, opened
from watcher.service import ConfigurationProblem

RESUMABLE = [
    pytest.param(failure(43, "CursorNotFound"), id="cursor-not-found"),
    pytest.param(
        pe.NotPrimaryError("not primary", {"ok": 0, "code": 10107, "errmsg": "not primary"}), id="not-primary"
    ),
    pytest.param(pe.NetworkTimeout("connection timed out"), id="network-timeout"),
    pytest.param(failure(91, "ShutdownInProgress", "ResumableChangeStreamError"), id="resumable-label"),
]


@pytest.mark.parametrize("error", RESUMABLE)
async def test_resumable_errors_resume_from_the_last_event(mongo: Backend, error: BaseException) -> None:
    source = ScriptedSource(mongo.change_source(), [Step(after=1, error=error)])
    async with running(mongo, source=source) as watcher:
        await complete_a_job(mongo)  # its insert is delivered, then the error strikes
        assert source.opened_with[0] is None
        assert source.opened_with[1] is not None  # resumed after the insert, not from now
        assert metric(watcher, "jobwatch_errors_total", error=_name(error), action="resume") == 1
        await complete_a_job(mongo)


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(
            Step(after=1, error=failure(286, "ChangeStreamHistoryLost", "NonResumableChangeStreamError")),
            id="history-lost",
        ),
        pytest.param(Step(after=1, inject={"operationType": "invalidate"}), id="invalidate"),
        pytest.param(Step(after=1, error=failure(260, "InvalidResumeToken")), id="invalid-token"),
    ],
)
async def test_unusable_stream_restarts_from_now_after_a_sweep(mongo: Backend, step: Step) -> None:
    source = ScriptedSource(mongo.change_source(), [step])
    async with running(mongo, source=source) as watcher:
        sweeps_before = metric(watcher, "jobwatch_sweep_findings_total", kind="scanned")
        await complete_a_job(mongo)
        await wait_until(opened(source, 2), what="a restarted stream")
        assert source.opened_with[1] is None  # from now: the old position is unusable
        await wait_until(lambda: _sweeps_ran(watcher, sweeps_before), what="the restart sweep")
        await complete_a_job(mongo)  # and it carries on


async def test_history_lost_at_open_means_sweep_then_stream(mongo: Backend) -> None:
    source = ScriptedSource(
        mongo.change_source(),
        [Step(after=0, on_open=failure(286, "ChangeStreamHistoryLost", "NonResumableChangeStreamError"))],
    )
    await mongo.db.jobwatch_positions.insert_one({"_id": "default", "token": {"_data": "old"}})
    async with running(mongo, source=source) as watcher:
        assert source.opened_with == [{"_data": "old"}, None]
        assert watcher.streaming
        await complete_a_job(mongo)


async def test_standalone_server_gets_a_clear_error(mongo: Backend) -> None:
    standalone = failure(40573, "Location40573")
    source = ScriptedSource(mongo.change_source(), [Step(after=0, on_open=standalone)])
    with pytest.raises(ConfigurationProblem, match="replica set") as caught:
        async with running(mongo, source=source):
            pass
    assert "--replSet" in str(caught.value)


async def test_standalone_server_degrades_only_when_allowed(mongo: Backend) -> None:
    standalone = failure(40573, "Location40573")
    source = ScriptedSource(mongo.change_source(), [Step(after=0, on_open=standalone)])
    async with running(mongo, source=source, allow_degraded=True, degraded_sweep_interval_s=0.1) as watcher:
        assert watcher.degraded and not watcher.streaming and watcher.ready
        jobs = mongo.db.background_jobs
        await jobs.insert_one(
            {"_id": "j", "status": "Pending", "stages": {"a": {"completedItems": 1, "totalItems": 1}}}
        )

        async def swept() -> bool:
            return await jobs.count_documents({"_id": "j", "status": "Completed"}) == 1

        await wait_until(swept, what="the degraded sweep to complete the job")


async def test_fatal_errors_stop_the_service(mongo: Backend) -> None:
    source = ScriptedSource(mongo.change_source(), [Step(after=0, error=failure(13, "Unauthorized"))])
    with pytest.raises(ConfigurationProblem, match="Unauthorized"):
        async with running(mongo, source=source):
            await anyio.sleep(30)  # run() fails at the first read and cancels this


async def _sweeps_ran(watcher: Any, before: float) -> bool:
    return (
        metric(watcher, "jobwatch_sweep_duration_seconds_sum") > 0
        and metric(watcher, "jobwatch_sweep_findings_total", kind="scanned") > before
    )


def _name(error: BaseException) -> str:
    from watcher.storage import errors

    return errors.name(error)
