"""Stream faults through the change-source seam: errors PyMongo raises (real
types, codes, labels) and a read that never answers. The supervisor reopens
or sweeps as specified and never dies; readiness is false while not reading."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from bson import errors as bson_errors
from pymongo import errors as pe

from tests.support.backends import Backend
from tests.support.faults import Faults, FaultyClient
from tests.support.harness import complete_a_job, metric, running, settings_for, wait_until
from tests.support.scripted import ScriptedSource, Step, failure, opened
from watcher import Watcher
from watcher.service import ConfigurationProblem

pytestmark = pytest.mark.reliability


def sweeps(watcher: Watcher) -> float:
    """How many sweeps finished."""
    return sum(
        sample.value
        for metric in watcher.metrics.sweep_duration.collect()
        for sample in metric.samples
        if sample.name.endswith("_count")
    )


@pytest.mark.parametrize(
    ("step", "sweeps_again"),
    [
        pytest.param(Step(after=1, error=bson_errors.InvalidBSON("bad utf-8")), True, id="invalid-bson"),
        pytest.param(
            Step(after=1, error=pe.InvalidOperation("cannot use a closed cursor")), False, id="invalid-operation"
        ),
        pytest.param(Step(after=1, error=failure(99999, "SomethingNew")), True, id="unknown-server-error"),
        pytest.param(Step(after=0, on_open=failure(99999, "SomethingNew")), False, id="unknown-error-while-opening"),
        pytest.param(Step(after=1, error=pe.AutoReconnect("reset")), False, id="network"),
    ],
)
async def test_the_stream_recovers(mongo: Backend, step: Step, sweeps_again: bool) -> None:
    source = ScriptedSource(mongo.change_source(), [step])
    async with running(mongo, source=source) as watcher:
        before = sweeps(watcher)
        await complete_a_job(mongo)
        await wait_until(opened(source, 2), what="a reopened stream")
        await complete_a_job(mongo)
        if sweeps_again:
            assert sweeps(watcher) > before  # from now, so a catch-up sweep covered the gap
        assert watcher.ready


async def test_a_resumable_error_before_the_first_token_sweeps_after_reopening(mongo: Backend) -> None:
    # The first stream breaks before it gave any token: resuming means "from
    # now" again, so what happened in between needs a catch-up sweep.
    source = ScriptedSource(mongo.change_source(), [Step(after=0, error=pe.AutoReconnect("reset"), tokenless=True)])
    async with running(mongo, source=source, max_await_ms=50) as watcher:
        await wait_until(opened(source, 2), what="a reopened stream")
        assert source.opened_with == [None, None]
        await wait_until(lambda: _at_least(lambda: sweeps(watcher), 2), what="a catch-up sweep after the reopen")


async def test_a_resumable_error_after_the_opening_token_resumes_from_it(mongo: Backend) -> None:
    # MongoDB (and the embedded server) give a resume token with the first,
    # empty batch: a break before any event resumes from there, no gap.
    source = ScriptedSource(mongo.change_source(), [Step(after=0, error=pe.AutoReconnect("reset"))])
    async with running(mongo, source=source, max_await_ms=50):
        await wait_until(opened(source, 2), what="a reopened stream")
        assert source.opened_with[0] is None and source.opened_with[1] is not None


async def test_a_failing_catch_up_sweep_is_retried_until_it_succeeds(mongo: Backend) -> None:
    faults = Faults()
    source = ScriptedSource(mongo.change_source(), [Step(after=1, error=failure(286, "ChangeStreamHistoryLost"))])
    settings = settings_for(mongo)
    watcher = Watcher(FaultyClient(mongo.client, faults), settings, change_source=source)
    async with watcher:
        faults.fail("background_jobs.find", pe.AutoReconnect("reset"), times=5)  # the catch-up sweep's reads
        job_id = await complete_a_job(mongo)
        await wait_until(opened(source, 2), what="the restarted stream")
        # A job whose events fell into the gap: only the catch-up sweep can see it.
        await wait_until(lambda: _equal(lambda: faults.pending("background_jobs.find"), 0), what="the failed sweeps")
        await wait_until(lambda: _at_least(lambda: sweeps(watcher), 2), what="the retried catch-up sweep")
        assert job_id is not None and watcher.ready


async def test_a_hung_read_is_detected_and_the_stream_reopened(mongo: Backend) -> None:
    # The reopen is held, so "not ready while not reading" is a state the test
    # can look at, not a moment between the stall and a quick reopen.
    reopen = anyio.Event()
    source = ScriptedSource(mongo.change_source(), [Step(after=1, hang=True), Step(after=0, hold=reopen)])
    async with running(mongo, source=source, max_await_ms=50) as watcher:
        jobs = mongo.db.background_jobs
        await jobs.insert_one(
            {"_id": "first", "status": "Pending", "stages": {"a": {"completedItems": 0, "totalItems": 1}}}
        )
        await wait_until(opened(source, 2), what="the stream reopened after the stall bound")
        assert not watcher.ready  # the hung stream was given up; the new one is not reading yet
        assert source.opened_with[1] is not None  # resumed after the event it had read
        reopen.set()
        await wait_until(lambda: _is(lambda: watcher.ready), what="readiness back")
        await complete_a_job(mongo)
        assert metric(watcher, "jobwatch_errors_total", error="StreamStalled", action="resume") == 1


async def test_a_standalone_server_mid_stream_degrades_when_allowed(mongo: Backend) -> None:
    standalone = failure(40573, "Location40573")
    source = ScriptedSource(mongo.change_source(), [Step(after=1, error=standalone)])
    async with running(
        mongo, source=source, allow_degraded=True, degraded_sweep_interval_s=0.1, max_backoff_s=0.3
    ) as watcher:
        jobs = mongo.db.background_jobs
        await jobs.insert_one(
            {"_id": "x", "status": "Pending", "stages": {"a": {"completedItems": 0, "totalItems": 1}}}
        )
        await wait_until(lambda: _is(lambda: watcher.degraded or len(source.opened_with) >= 2), what="degraded mode")
        await wait_until(opened(source, 2), what="a new attempt to stream")  # and the stream works again
        await complete_a_job(mongo)


async def test_a_standalone_server_mid_stream_is_fatal_without_degraded_mode(mongo: Backend) -> None:
    standalone = failure(40573, "Location40573")
    source = ScriptedSource(mongo.change_source(), [Step(after=1, error=standalone)])
    with pytest.raises(ConfigurationProblem, match="--replSet"), anyio.fail_after(20):
        async with running(mongo, source=source):
            await mongo.db.background_jobs.insert_one({"_id": "x", "status": "Pending"})
            await anyio.sleep(15)


async def _at_least(value: Any, n: float) -> bool:
    return bool(value() >= n)


async def _equal(value: Any, n: float) -> bool:
    return bool(value() == n)


async def _is(predicate: Any) -> bool:
    return bool(predicate())
