"""Where a partition's position (resume token) and heartbeat are kept: its
lease document in a collection of jobwatch's own (``watcher.storage.lease``).

Every save and heartbeat is conditional on the lease: ``{holder, term}``. A
holder that lost its lease (paused past it, cut off, slow) matches nothing
and learns it is deposed (``errors.Deposed``); it can never write a stale
token over its successor's. A new holder reads the token after taking the
lease, so it resumes from the last token any holder saved; tokens only come
from the stream it opened from there, so the saved token never goes back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pymongo.asynchronous.collection import AsyncCollection

from watcher.ops import logs
from watcher.storage import errors, lease, members

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


def read_saved(doc: Mapping[str, Any]) -> Saved:
    """A position document read tolerantly: any field may hold any type."""
    interval = doc.get("saveIntervalS")
    state = doc.get("state")
    token = doc.get("token")
    last_sweep = doc.get("lastSweep")
    saved_at, heartbeat_at = doc.get("savedAt"), doc.get("heartbeatAt")
    return Saved(
        token if isinstance(token, Mapping) else None,
        saved_at if isinstance(saved_at, dt.datetime) else None,
        heartbeat_at if isinstance(heartbeat_at, dt.datetime) else None,
        last_sweep if isinstance(last_sweep, Mapping) else None,
        members.number(interval),
        state if isinstance(state, Mapping) else {},
    )


class PositionStore(Protocol):
    """Raises only ``errors.StoreUnavailable``, ``errors.Deposed`` (save and
    heartbeat) or a fatal outcome."""

    async def load(self) -> Saved | None: ...

    async def save(self, token: Token) -> None: ...

    async def heartbeat(self, *, last_sweep: Mapping[str, Any] | None = None) -> None: ...


class MongoPositionStore:
    """One partition's position in its lease document, fenced by ``grant``.

    ``state`` is called at each write for the watcher's own report of itself
    (what ``jobwatch status`` shows); times come from the server's clock."""

    def __init__(
        self,
        collection: AsyncCollection[Any],
        grant: lease.Grant,
        *,
        lease_s: float,
        save_interval_s: float | None = None,
        state: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._coll = lease.fenced(collection, lease_s=lease_s)
        self._grant = grant
        self._save_interval_s = save_interval_s
        self._state = state

    async def load(self) -> Saved | None:
        """This partition's saved position; when it has none and the number of
        partitions changed, the oldest token of the previous layout (every
        job of every old partition was handled up to it)."""
        with errors.translated("position load", "retry"):
            doc = await self._coll.find_one({"_id": self._grant.doc_id})
        saved = read_saved(doc) if doc is not None else None
        if saved is not None and saved.token is not None:
            return saved
        seed = await self._previous_layout_token()
        if seed is None:
            return saved
        return Saved(seed, None, None, None)

    async def _previous_layout_token(self) -> Token | None:
        grant, watcher = self._grant, self._grant.watcher
        query = {
            **lease.documents_of(watcher),
            "_id": {"$ne": grant.doc_id},
            "partitions": {"$ne": grant.partitions},
        }
        with errors.translated("previous positions load", "retry"):
            docs = [doc async for doc in self._coll.find(query)]
        token = oldest_complete_layout_token(docs)
        if token is not None:
            logs.event(
                "position_seeded",
                "INFO",
                "no position for this partition: resuming from the oldest token of the previous partitioning",
                partition=grant.partition,
                partitions=grant.partitions,
            )
        return token

    async def save(self, token: Token) -> None:
        await self._fenced(
            "position save",
            {
                "$set": {"token": dict(token), "tokenTerm": self._grant.term},
                "$currentDate": {"savedAt": True, "heartbeatAt": True},
            },
        )

    async def heartbeat(self, *, last_sweep: Mapping[str, Any] | None = None) -> None:
        update: dict[str, Any] = {"$currentDate": {"heartbeatAt": True}}
        if last_sweep is not None:
            update["$set"] = {"lastSweep": dict(last_sweep)}
        await self._fenced("position heartbeat", update)

    async def _fenced(self, what: str, update: Mapping[str, Any]) -> None:
        own: dict[str, Any] = {}
        if self._save_interval_s is not None:
            own["saveIntervalS"] = self._save_interval_s
        if self._state is not None:
            own["state"] = dict(self._state())
        if own:
            update = {**update, "$set": {**update.get("$set", {}), **own}}
        grant = self._grant
        # "retry": whatever goes wrong with our own document, the answer is to
        # try again at the next save; nothing here is one job's fault.
        with errors.translated(what, "retry"):
            result = await self._coll.update_one(lease.fence(grant), update)
        if result.matched_count == 0:
            raise errors.Deposed(
                f"{what} of partition {grant.partition} matched nothing: term {grant.term} is over",
                partition=grant.partition,
                term=grant.term,
            )


def oldest_complete_layout_token(docs: list[Mapping[str, Any]]) -> Token | None:
    """The oldest token of the most recently saved earlier partitioning, if
    every one of its partitions saved one (else None: a partition with no
    position left jobs that only a full sweep covers)."""
    layouts: dict[int, list[Saved]] = {}
    covered: dict[int, set[int]] = {}
    for doc in docs:
        count, index = doc.get("partitions", 1), doc.get("partition", 0)
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or count < 1
            or not isinstance(index, int)
            or isinstance(index, bool)
        ):
            continue
        saved = read_saved(doc)
        if saved.token is None or saved.saved_at is None:
            continue
        layouts.setdefault(count, []).append(saved)
        covered.setdefault(count, set()).add(index)
    if not layouts:
        return None
    latest = max(layouts, key=lambda count: max(_aware(s.saved_at) for s in layouts[count]))
    if covered[latest] != set(range(latest)):
        return None
    return min(layouts[latest], key=lambda s: _aware(s.saved_at)).token


def _aware(when: dt.datetime | None) -> dt.datetime:
    if when is None:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
