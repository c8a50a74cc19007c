"""Where the watcher's position (resume token) and heartbeat are kept: one
document per watcher name in a collection of jobwatch's own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pymongo.asynchronous.database import AsyncDatabase

from watcher.storage import errors

#: A change stream's resume token, opaque: saved as the server gave it.
Token = Mapping[str, Any]


@dataclass(frozen=True)
class Saved:
    token: Token | None
    saved_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    last_sweep: Mapping[str, Any] | None
    #: The interval the watcher saves at, so a reader judges its heartbeat by it.
    save_interval_s: float | None = None
    #: What the watcher last reported about itself (backlog, last event/sweep times).
    state: Mapping[str, Any] = field(default_factory=dict)


class PositionStore(Protocol):
    """Raises only ``errors.StoreUnavailable`` (or a fatal outcome)."""

    async def load(self) -> Saved | None: ...

    async def save(self, token: Token) -> None: ...

    async def heartbeat(self, *, last_sweep: Mapping[str, Any] | None = None) -> None: ...


class MongoPositionStore:
    """``{_id: <watcher name>, token, savedAt, heartbeatAt, lastSweep,
    saveIntervalS, state}``; times come from the server's clock
    (``$currentDate``). ``state`` is called at each save for the watcher's
    own report of itself (what ``jobwatch status`` shows)."""

    def __init__(
        self,
        db: AsyncDatabase[Any],
        collection: str,
        name: str,
        *,
        save_interval_s: float | None = None,
        state: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._coll = db[collection]
        self._name = name
        self._save_interval_s = save_interval_s
        self._state = state

    async def load(self) -> Saved | None:
        with errors.translated("position load", "retry"):
            doc = await self._coll.find_one({"_id": self._name})
        if doc is None:
            return None
        interval = doc.get("saveIntervalS")
        state = doc.get("state")
        token = doc.get("token")
        last_sweep = doc.get("lastSweep")
        return Saved(
            token if isinstance(token, Mapping) else None,
            doc.get("savedAt"),
            doc.get("heartbeatAt"),
            last_sweep if isinstance(last_sweep, Mapping) else None,
            float(interval) if isinstance(interval, int | float) and not isinstance(interval, bool) else None,
            state if isinstance(state, Mapping) else {},
        )

    async def save(self, token: Token) -> None:
        await self._upsert({"$set": {"token": dict(token)}, "$currentDate": {"savedAt": True, "heartbeatAt": True}})

    async def heartbeat(self, *, last_sweep: Mapping[str, Any] | None = None) -> None:
        update: dict[str, Any] = {"$currentDate": {"heartbeatAt": True}}
        if last_sweep is not None:
            update["$set"] = {"lastSweep": dict(last_sweep)}
        await self._upsert(update)

    async def _upsert(self, update: Mapping[str, Any]) -> None:
        own: dict[str, Any] = {}
        if self._save_interval_s is not None:
            own["saveIntervalS"] = self._save_interval_s
        if self._state is not None:
            own["state"] = dict(self._state())
        if own:
            update = {**update, "$set": {**update.get("$set", {}), **own}}
        # "retry": whatever goes wrong with our own document, the answer is to
        # try again at the next save; nothing here is one job's fault.
        with errors.translated("position save", "retry"):
            await self._coll.update_one({"_id": self._name}, update, upsert=True)
