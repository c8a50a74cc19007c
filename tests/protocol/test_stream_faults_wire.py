"""Stream faults with MongoDB's exact replies, through the real PyMongo
driver (MockupDB) and jobwatch's stream reader: what reaches the supervisor
is always a ``StreamBroken`` with the right next step, never a driver error,
and a getMore that gets no reply at all is detected within the stall bound."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import pytest
from pymongo import AsyncMongoClient

from tests.support.mockup import CURSOR_ID, NS, WAIT_S, reader_for
from watcher.intake import stream
from watcher.storage import errors

pytestmark = pytest.mark.reliability


async def opened(server: Any, reader: stream.StreamReader) -> Any:
    result: dict[str, Any] = {}

    async def run() -> None:
        result["stream"] = await reader.open(None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        request = await anyio.to_thread.run_sync(lambda: server.receives(timeout=WAIT_S))
        request.reply(
            {"cursor": {"id": CURSOR_ID, "ns": NS, "firstBatch": [], "postBatchResumeToken": {"_data": "01"}}}
        )
    return result["stream"]


async def consume_with_reply(
    server: Any, reader: stream.StreamReader, reply: dict[str, Any] | None
) -> errors.StreamBroken:
    """Run the reader; answer its getMore with ``reply`` (None: never answer)."""
    live = await opened(server, reader)
    caught: dict[str, errors.StreamBroken] = {}

    async def consume() -> None:
        try:
            await reader.consume(live)
        except errors.StreamBroken as exc:
            caught["exc"] = exc

    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            request = await anyio.to_thread.run_sync(lambda: server.receives(timeout=WAIT_S))
            assert "getMore" in request.doc
            if reply is not None:
                request.reply(reply)
    # The cursor is broken either way: closing it may fail too.
    with anyio.CancelScope(shield=True), anyio.move_on_after(2), contextlib.suppress(Exception):
        await live.close()
    return caught["exc"]


@pytest.mark.parametrize(
    ("reply", "action"),
    [
        pytest.param(
            {
                "ok": 0,
                "code": 286,
                "codeName": "ChangeStreamHistoryLost",
                "errmsg": "lost",
                "errorLabels": ["NonResumableChangeStreamError"],
            },
            errors.Action.RESTART,
            id="history-lost",
        ),
        pytest.param(
            {"ok": 0, "code": 280, "codeName": "ChangeStreamFatalError", "errmsg": "fatal"},
            errors.Action.RESTART,
            id="change-stream-fatal",
        ),
        pytest.param(
            {"ok": 0, "code": 2, "codeName": "BadValue", "errmsg": "odd"},
            errors.Action.RESTART,
            id="unknown-non-resumable",
        ),
    ],
)
async def test_non_resumable_errors_arrive_as_a_restart(
    server: Any, client: AsyncMongoClient[Any], reply: dict[str, Any], action: errors.Action
) -> None:
    broken = await consume_with_reply(server, reader_for(client)[0], reply)
    assert broken.action is action


async def test_a_getmore_without_reply_is_a_stall_not_a_hang(server: Any, client: AsyncMongoClient[Any]) -> None:
    reader, _ = reader_for(client)
    broken = await consume_with_reply(server, reader, None)
    assert broken.error == "StreamStalled" and broken.action is errors.Action.RESUME
