"""Who is running: one heartbeat document per instance, beside the leases.

    {_id: "<watcher>@<instance>", kind: "instance", watcher, instance, host,
     pid, version, role, partitions, jobTypes, held, leaseS, renewS,
     startedAt, heartbeatAt, state}

Each instance rewrites its own document every ``renew_s`` (times from the
server's ``$$NOW``). The live instances, judged on the server's clock, give
each one its fair share of the partitions; ``jobwatch status`` lists them.
An instance removes its document when it stops; documents of instances
that died are pruned after ``PRUNE_AFTER_S``.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pymongo.asynchronous.collection import AsyncCollection

from watcher.storage import errors

INSTANCE_KIND = "instance"
#: The documents of instances not heard from for this long are deleted.
PRUNE_AFTER_S = 3600.0

Role = Literal["leader", "standby", "observe"]


def new_instance_id() -> str:
    """host:pid:random, unique per process start (a restarted process is a new instance)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Member:
    """One instance as its last heartbeat described it, its ages judged on the server's clock."""

    instance: str
    host: str | None = None
    pid: int | None = None
    version: str | None = None
    role: str | None = None
    partitions: int | None = None
    job_types: tuple[str, ...] | None = None
    held: tuple[int, ...] = ()
    lease_s: float | None = None
    renew_s: float | None = None
    heartbeat_age_s: float | None = None
    started_age_s: float | None = None
    state: Mapping[str, Any] = field(default_factory=dict)

    @property
    def observe(self) -> bool:
        return self.role == "observe"

    def alive(self, default_lease_s: float) -> bool:
        """Heard from within its own lease (an instance silent that long has lost its leases too)."""
        window_s = self.lease_s if self.lease_s is not None else default_lease_s
        return self.heartbeat_age_s is not None and self.heartbeat_age_s < window_s


def member_id(watcher: str, instance: str) -> str:
    return f"{watcher}@{instance}"


def age_ms(path: str) -> dict[str, Any]:
    """An expression: milliseconds from the date at ``path`` to the server's ``$$NOW`` (null when it is no date)."""
    return {"$cond": [{"$eq": [{"$type": path}, "date"]}, {"$subtract": ["$$NOW", path]}, None]}


class MongoMembers:
    """The instances of one watcher name. Raises only ``errors.StoreUnavailable``
    or ``ConfigurationProblem``."""

    def __init__(self, collection: AsyncCollection[Any], *, watcher: str, instance: str) -> None:
        self._coll = collection
        self._watcher = watcher
        self._instance = instance

    @property
    def instance(self) -> str:
        return self._instance

    async def beat(self, about: Mapping[str, Any]) -> None:
        """Rewrite this instance's document: ``about`` (literal values) and the server's time."""
        values = {key: {"$literal": value} for key, value in about.items()}
        update = [
            {
                "$set": {
                    **values,
                    "kind": INSTANCE_KIND,
                    "watcher": {"$literal": self._watcher},
                    "instance": {"$literal": self._instance},
                    "heartbeatAt": "$$NOW",
                    "startedAt": {"$ifNull": ["$startedAt", "$$NOW"]},
                }
            }
        ]
        with errors.translated("instance heartbeat", "retry"):
            await self._coll.update_one({"_id": member_id(self._watcher, self._instance)}, update, upsert=True)

    async def all(self) -> list[Member]:
        """Every instance document of this watcher name, with its heartbeat age."""
        pipeline: list[Mapping[str, Any]] = [
            {"$match": {"kind": INSTANCE_KIND, "watcher": {"$eq": self._watcher}}},
            {"$addFields": {"heartbeatAgeMs": age_ms("$heartbeatAt"), "startedAgeMs": age_ms("$startedAt")}},
        ]
        with errors.translated("instance list", "retry"):
            cursor = await self._coll.aggregate(pipeline)
            docs = await cursor.to_list()
        return [member for doc in docs if (member := read_member(doc)) is not None]

    async def leave(self) -> None:
        with errors.translated("instance goodbye", "retry"):
            await self._coll.delete_one({"_id": member_id(self._watcher, self._instance)})

    async def prune(self) -> int:
        """Delete the documents of instances not heard from for ``PRUNE_AFTER_S``."""
        stale = {
            "$or": [
                {"$ne": [{"$type": "$heartbeatAt"}, "date"]},
                {"$lt": ["$heartbeatAt", {"$subtract": ["$$NOW", int(PRUNE_AFTER_S * 1000)]}]},
            ]
        }
        with errors.translated("instance pruning", "retry"):
            result = await self._coll.delete_many(
                {"kind": INSTANCE_KIND, "watcher": {"$eq": self._watcher}, "$expr": stale}
            )
        return result.deleted_count


def read_member(doc: Mapping[str, Any]) -> Member | None:
    """A member from its document, read tolerantly (any field may hold any type)."""
    instance = doc.get("instance")
    if not isinstance(instance, str):
        return None
    held = doc.get("held")
    job_types = doc.get("jobTypes")
    state = doc.get("state")
    return Member(
        instance,
        host=_str(doc.get("host")),
        pid=_int(doc.get("pid")),
        version=_str(doc.get("version")),
        role=_str(doc.get("role")),
        partitions=_int(doc.get("partitions")),
        job_types=tuple(str(t) for t in job_types) if isinstance(job_types, list) else None,
        held=tuple(k for k in held if isinstance(k, int) and not isinstance(k, bool)) if isinstance(held, list) else (),
        lease_s=number(doc.get("leaseS")),
        renew_s=number(doc.get("renewS")),
        heartbeat_age_s=_seconds(doc.get("heartbeatAgeMs")),
        started_age_s=_seconds(doc.get("startedAgeMs")),
        state=state if isinstance(state, Mapping) else {},
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def number(value: Any) -> float | None:
    """A finite number another program wrote, as a float (None for anything else)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _int(value: Any) -> int | None:
    found = number(value)
    return None if found is None else int(found)


def _seconds(ms: Any) -> float | None:
    value = number(ms)
    return None if value is None else max(value / 1000, 0.0)
