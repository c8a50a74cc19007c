"""What the wire tests share: reading a driver's change stream with a deadline."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pymongo.errors import OperationFailure

#: Long enough for a loaded machine; a test waiting this long has failed.
DEADLINE_S = 20


async def next_event(stream: Any) -> dict[str, Any]:
    """The stream's next event, waiting at most ``DEADLINE_S``."""
    with anyio.fail_after(DEADLINE_S):
        while True:
            event = await stream.try_next()
            if event is not None:
                return dict(event)


async def fails(stream: Any) -> OperationFailure:
    """The error the stream's next reads end with, within ``DEADLINE_S``."""
    with pytest.raises(OperationFailure) as caught, anyio.fail_after(DEADLINE_S):
        while True:
            await stream.try_next()
    return caught.value
