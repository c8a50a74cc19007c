"""What the operator's commands read about a watcher name: its partitions'
leases and positions, and its instances, every age judged on the server's
clock (the ages are computed by the server: this host's clock is never read).
Every field is read tolerantly: any program may have written any type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from watcher.storage import errors, lease
from watcher.storage.members import Member, MongoMembers, age_ms, number
from watcher.storage.position import Saved, Token, read_saved


@dataclass(frozen=True)
class PartitionView:
    doc_id: str
    partition: int
    partitions: int
    holder: str | None
    term: int | None
    #: Seconds until the lease runs out (negative: it ran out that long ago).
    expires_in_s: float | None
    saved: Saved
    position_age_s: float | None
    position_term: int | None
    heartbeat_age_s: float | None

    @property
    def held(self) -> bool:
        """A holder whose lease has not run out."""
        return self.holder is not None and self.expires_in_s is not None and self.expires_in_s > 0


def _seconds(ms: Any) -> float | None:
    value = number(ms)
    return None if value is None else round(value / 1000, 3)


def _whole(value: Any, default: int | None) -> int | None:
    found = number(value)
    return default if found is None else int(found)


async def partitions(collection: AsyncCollection[Any], watcher: str) -> list[PartitionView]:
    """Every lease-and-position document of ``watcher``, of any layout (a
    document from before partitions existed counts as partition 0 of 1)."""
    pipeline: list[Mapping[str, Any]] = [
        {"$match": lease.documents_of(watcher)},
        {
            "$addFields": {
                "expiresInMs": {
                    "$cond": [{"$eq": [{"$type": "$expiresAt"}, "date"]}, {"$subtract": ["$expiresAt", "$$NOW"]}, None]
                },
                "savedAgeMs": age_ms("$savedAt"),
                "heartbeatAgeMs": age_ms("$heartbeatAt"),
            }
        },
    ]
    with errors.translated("positions read", "retry"):
        cursor = await collection.aggregate(pipeline)
        docs = await cursor.to_list()
    views = []
    for doc in docs:
        holder = doc.get("holder")
        views.append(
            PartitionView(
                str(doc.get("_id")),
                _whole(doc.get("partition"), 0) or 0,
                max(_whole(doc.get("partitions"), 1) or 1, 1),
                holder if isinstance(holder, str) else None,
                _whole(doc.get("term"), None),
                _seconds(doc.get("expiresInMs")),
                read_saved(doc),
                _seconds(doc.get("savedAgeMs")),
                _whole(doc.get("tokenTerm"), None),
                _seconds(doc.get("heartbeatAgeMs")),
            )
        )
    return sorted(views, key=lambda v: (v.partitions, v.partition, v.doc_id))


async def instances(collection: AsyncCollection[Any], watcher: str) -> list[Member]:
    return await MongoMembers(collection, watcher=watcher, instance="").all()


async def forget_positions(collection: AsyncCollection[Any], watcher: str) -> int:
    """Unset the token of every partition of ``watcher`` (any layout); how many had one."""
    with errors.translated("position reset", "retry"):
        result = await collection.update_many(
            {
                **lease.documents_of(watcher),
                "token": {"$exists": True},
            },
            {"$unset": {"token": "", "savedAt": "", "tokenTerm": ""}},
        )
    return result.modified_count


async def set_positions(collection: AsyncCollection[Any], watcher: str, count: int, token: Token) -> None:
    """Save ``token`` as the position of each of ``count`` partitions (outside any lease: the operator's word)."""
    with errors.translated("position reset", "retry"):
        for partition in range(count):
            await collection.update_one(
                {"_id": lease.doc_id(watcher, partition, count)},
                {
                    "$set": {
                        "token": dict(token),
                        "kind": lease.PARTITION_KIND,
                        "watcher": watcher,
                        "partition": partition,
                        "partitions": count,
                    },
                    "$currentDate": {"savedAt": True},
                    "$unset": {"tokenTerm": ""},
                },
                upsert=True,
            )
