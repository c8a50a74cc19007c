"""Partition leases, kept in MongoDB beside the position, judged on the server's clock.

One document per (watcher name, partition) in the positions collection
holds the lease and the position together::

    {_id, kind: "partition", watcher, partition, partitions,
     holder, term, expiresAt, acquiredAt, renewedAt, releasedAt, lastHeldAt,
     token, tokenTerm, savedAt, heartbeatAt, state, lastSweep, saveIntervalS}

Every change is one conditional update whose times come from ``$$NOW`` (the
server's clock: the client's clock is never read, so clock skew between the
hosts running jobwatch does not matter):

- **take**: the lease is free (no holder, no expiry, or expired) or already
  ours without our knowing (a take whose reply was lost); ``term`` + 1 and
  ``expiresAt = $$NOW + lease``. Upserted: two instances racing to create
  the document end with one winner and a duplicate-key error (11000) for the
  other, which is the ordinary "someone else took it" outcome;
- **renew**: only by the holder of that term, only before ``expiresAt``: a
  lease that ran out is taken anew (a new term), never renewed;
- **release**: by the holder of that term: free at once.

The position is fenced the same way (``watcher.storage.position``): a save
conditional on ``{holder, term}`` that matches nothing means deposed.

With one partition the document's ``_id`` is the watcher name, as before
partitions existed, so an upgrade resumes from the position it had.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument, WriteConcern
from pymongo import errors as pymongo_errors
from pymongo.asynchronous.collection import AsyncCollection

from watcher.storage import errors
from watcher.storage.members import age_ms, number

#: Marks the documents of this module (and ``members``') in the positions collection.
PARTITION_KIND = "partition"


def doc_id(watcher: str, partition: int, partitions: int) -> str:
    """The ``_id`` of one partition's lease-and-position document."""
    return watcher if partitions == 1 else f"{watcher}:{partition}/{partitions}"


def fenced(collection: AsyncCollection[Any], *, lease_s: float) -> AsyncCollection[Any]:
    """The collection as lease and position writes use it: acknowledged by a
    majority, so an election cannot roll a lease back and hand it to two."""
    return collection.with_options(write_concern=WriteConcern(w="majority", wtimeout=max(int(lease_s * 1000), 1)))


#: A term as jobwatch writes it: a whole number in [0, 2^53). Anything else
#: another program wrote (a string, NaN, 2.5) starts again at 1.
_SANE_TERM = {
    "$and": [
        {"$isNumber": "$term"},
        {"$gte": ["$term", 0]},
        {"$lt": ["$term", 2**53]},
        {"$eq": ["$term", {"$trunc": ["$term"]}]},
    ]
}


@dataclass(frozen=True)
class Grant:
    """A lease this instance took: partition ``partition`` of ``partitions``, ``term``."""

    watcher: str
    partition: int
    partitions: int
    term: int
    holder: str
    #: How long the partition had no holder before this take, on the server's
    #: clock (since the last holder's last renewal or its release); None if never held.
    vacant_s: float | None = None
    previous_holder: str | None = None

    @property
    def doc_id(self) -> str:
        return doc_id(self.watcher, self.partition, self.partitions)


def fence(grant: Grant) -> dict[str, Any]:
    """The filter of ``grant``'s lease document that matches only while the
    grant still holds it (same holder, same term): every lease and position
    write is fenced by it."""
    return {"_id": grant.doc_id, "holder": {"$eq": grant.holder}, "term": {"$eq": grant.term}}


def documents_of(watcher: str) -> dict[str, Any]:
    """The filter of every lease-and-position document of a watcher name, of
    any layout (one partition's ``_id`` is the name itself)."""
    return {"$or": [{"_id": watcher}, {"kind": PARTITION_KIND, "watcher": {"$eq": watcher}}]}


class MongoLeases:
    """The leases of one watcher name's partitions, taken by one holder.

    Raises only ``errors.StoreUnavailable`` (retry) or ``ConfigurationProblem``
    (the server refuses jobwatch: missing privileges)."""

    def __init__(
        self, collection: AsyncCollection[Any], *, watcher: str, partitions: int, holder: str, lease_s: float
    ) -> None:
        self._coll = fenced(collection, lease_s=lease_s)
        self._watcher = watcher
        self._partitions = partitions
        self._holder = holder
        self._lease_ms = int(lease_s * 1000)

    async def take(self, partition: int) -> Grant | None:
        """The lease of ``partition`` if it is free (a new term), else None."""
        me = self._holder
        free = {
            "$or": [
                {"$eq": ["$holder", me]},
                {"$ne": [{"$type": "$holder"}, "string"]},
                {"$ne": [{"$type": "$expiresAt"}, "date"]},
                {"$lte": ["$expiresAt", "$$NOW"]},
            ]
        }
        update: list[Mapping[str, Any]] = [
            # Read the old holder's traces first: the next stage overwrites them.
            {
                "$set": {
                    "vacantMs": age_ms("$lastHeldAt"),
                    "previousHolder": {"$cond": [{"$eq": [{"$type": "$holder"}, "string"]}, "$holder", None]},
                }
            },
            {
                "$set": {
                    "kind": PARTITION_KIND,
                    "watcher": {"$literal": self._watcher},
                    "partition": partition,
                    "partitions": self._partitions,
                    "holder": {"$literal": me},
                    "term": {"$add": [{"$cond": [_SANE_TERM, "$term", 0]}, 1]},
                    "expiresAt": {"$add": ["$$NOW", self._lease_ms]},
                    "acquiredAt": "$$NOW",
                    "renewedAt": "$$NOW",
                    "lastHeldAt": "$$NOW",
                }
            },
        ]
        key = doc_id(self._watcher, partition, self._partitions)
        with errors.translated(f"taking the lease of partition {partition}", "retry"):
            try:
                doc = await self._coll.find_one_and_update(
                    {"_id": key, "$expr": free}, update, upsert=True, return_document=ReturnDocument.AFTER
                )
            except pymongo_errors.DuplicateKeyError:
                return None  # DuplicateKey (11000): the document exists and is held, so our upsert could only collide
        if not isinstance(doc, Mapping):
            return None
        vacant_ms = doc.get("vacantMs")
        previous = doc.get("previousHolder")
        return Grant(
            self._watcher,
            partition,
            self._partitions,
            _term(doc.get("term")),
            me,
            vacant_s=None if (vacant := number(vacant_ms)) is None else vacant / 1000,
            previous_holder=previous if isinstance(previous, str) and previous != me else None,
        )

    async def renew(self, grant: Grant) -> bool:
        """Push the lease's expiry to ``$$NOW + lease``. False: no longer ours
        (it ran out, or another instance holds it now)."""
        query = {**fence(grant), "$expr": {"$gt": ["$expiresAt", "$$NOW"]}}
        update = [
            {"$set": {"expiresAt": {"$add": ["$$NOW", self._lease_ms]}, "renewedAt": "$$NOW", "lastHeldAt": "$$NOW"}}
        ]
        with errors.translated(f"renewing the lease of partition {grant.partition}", "retry"):
            result = await self._coll.update_one(query, update)
        return result.matched_count == 1

    async def release(self, grant: Grant) -> bool:
        """Free the lease now (after the last position save). False: it was not ours any more."""
        with errors.translated(f"releasing the lease of partition {grant.partition}", "retry"):
            result = await self._coll.update_one(fence(grant), _RELEASE)
        return result.matched_count == 1

    async def release_all(self) -> int:
        """Free every lease this holder has, of any term (at exit, also one
        whose take was sent but never answered). How many were freed."""
        with errors.translated("releasing the leases", "retry"):
            result = await self._coll.update_many(
                {"kind": PARTITION_KIND, "watcher": {"$eq": self._watcher}, "holder": {"$eq": self._holder}}, _RELEASE
            )
        return result.modified_count


_RELEASE = [{"$set": {"holder": None, "expiresAt": "$$NOW", "releasedAt": "$$NOW", "lastHeldAt": "$$NOW"}}]


def _term(value: Any) -> int:
    found = number(value)
    return 0 if found is None else int(found)
