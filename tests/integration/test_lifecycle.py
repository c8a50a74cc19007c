"""Start, stop and the races around them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio

from tests.support.backends import Backend
from tests.support.documents import seed_job
from tests.support.harness import running, settings_for, wait_until
from watcher import Watcher
from watcher.settings import Settings
from watcher.storage.lease import Grant
from watcher.storage.position import MongoPositionStore, Saved, Token


class SlowPositions:
    """A position store whose saves hang (a stalled primary), at the seam."""

    def __init__(self, mongo: Backend, settings: Settings, save_s: float) -> None:
        self._mongo = mongo
        self._settings = settings
        self._inner: MongoPositionStore | None = None
        self._save_s = save_s
        self.saves_started = 0
        self.saves_finished = 0

    def for_grant(self, grant: Grant) -> SlowPositions:
        """The seam: the watcher asks for a position store at each lease it takes."""
        positions = self._mongo.db[self._settings.positions_collection]
        self._inner = MongoPositionStore(positions, grant, lease_s=self._settings.lease_s)
        return self

    async def load(self) -> Saved | None:
        assert self._inner is not None
        return await self._inner.load()

    async def save(self, token: Token) -> None:
        assert self._inner is not None
        self.saves_started += 1
        await anyio.sleep(self._save_s)
        await self._inner.save(token)
        self.saves_finished += 1

    async def heartbeat(self, *, last_sweep: Mapping[str, Any] | None = None) -> None:
        assert self._inner is not None
        await self._inner.heartbeat(last_sweep=last_sweep)


async def test_stop_before_the_first_event_is_clean_and_idempotent(mongo: Backend) -> None:
    watcher = Watcher(mongo.client, settings_for(mongo), change_source=mongo.change_source())
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run)
        await watcher.wait_started()
        assert watcher.ready
        with anyio.fail_after(10):
            await watcher.stop()
            await watcher.stop()
    assert not watcher.ready and not watcher.streaming


async def test_stop_requested_during_start_up_still_stops(mongo: Backend) -> None:
    await mongo.db.background_jobs.insert_one(seed_job())
    watcher = Watcher(mongo.client, settings_for(mongo), change_source=mongo.change_source())
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run)
        watcher.request_stop()  # before the stream is even open
        with anyio.fail_after(10):
            await watcher.stop()
    # Stop is honoured at once, even before the start-up sweep: the next run has it.
    async with running(mongo):
        stored = await mongo.db.background_jobs.find_one({})
        assert stored is not None and stored["status"] == "Completed"


async def test_stop_is_honoured_while_the_stream_cannot_open(mongo: Backend) -> None:
    from pymongo import errors as pe

    from tests.support.scripted import ScriptedSource, Step, opened

    down = [Step(after=0, on_open=pe.AutoReconnect("connection refused")) for _ in range(10_000)]
    source = ScriptedSource(mongo.change_source(), down)
    watcher = Watcher(mongo.client, settings_for(mongo), change_source=source)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run)
        await wait_until(opened(source, 3), what="a few failed opens")
        assert not watcher.ready
        with anyio.fail_after(10):
            await watcher.stop()
    assert not watcher.ready


async def test_a_hanging_position_save_cannot_hold_shutdown_past_its_deadline(mongo: Backend) -> None:
    settings = settings_for(mongo, shutdown_deadline_s=1.0, position_save_interval_s=3600)
    positions = SlowPositions(mongo, settings, save_s=30)
    watcher = Watcher(mongo.client, settings, change_source=mongo.change_source(), position_store=positions.for_grant)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run)
        await watcher.wait_started()
        await mongo.db.background_jobs.insert_one(seed_job())
        await wait_until(lambda: _completed(mongo), what="the job to complete")
        started = time.monotonic()
        await watcher.stop()
        assert time.monotonic() - started < 5  # bounded by shutdown_deadline_s, not the 30 s save in flight
    assert positions.saves_started == 1 and positions.saves_finished == 0


async def test_cancelling_the_host_during_a_position_save_ends_the_watcher(mongo: Backend) -> None:
    settings = settings_for(mongo, position_save_interval_s=0.05)
    positions = SlowPositions(mongo, settings, save_s=30)
    watcher = Watcher(mongo.client, settings, change_source=mongo.change_source(), position_store=positions.for_grant)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run)
            await watcher.wait_started()
            await mongo.db.background_jobs.insert_one(seed_job())
            await wait_until(lambda: _save_started(positions), what="a position save to start")
            tg.cancel_scope.cancel()
    assert positions.saves_finished == 0


async def _completed(mongo: Backend) -> bool:
    return await mongo.db.background_jobs.count_documents({"status": "Completed"}) == 1


async def _save_started(positions: SlowPositions) -> bool:
    return positions.saves_started > 0
