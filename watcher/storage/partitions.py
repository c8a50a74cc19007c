"""Which jobs an instance looks after: partitions of the jobs by MongoDB's
hash of ``_id``.

Partition ``k`` of ``P`` holds the jobs whose hashed ``_id`` (the hashed
index key, ``$toHashedIndexKey``: the same 64-bit value a hashed index or a
hashed shard key stores) is ``k`` modulo ``P``. The one expression serves the
change stream (on ``$documentKey._id``), the sweep's queries and the census
(on ``$_id``), so the server decides, and every job falls in exactly one
partition. With one partition nothing is added to any query.

    Slice.of(3, 1).match("$_id")
    # {"$eq": [{"$abs": {"$mod": [{"$toHashedIndexKey": "$_id"}, 3]}}, 1]}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from watcher.storage import errors

#: The value MongoDB's documentation gives for ``{$toHashedIndexKey: "string to hash"}``:
#: a server whose operator answers otherwise would split jobs differently.
PROBE_VALUE = "string to hash"
PROBE_HASH = 763543691661428748


def partition_of(path: str, count: int) -> dict[str, Any]:
    """The expression for the partition a document falls in (0..count-1)."""
    return {"$abs": {"$mod": [{"$toHashedIndexKey": path}, count]}}


@dataclass(frozen=True)
class Slice:
    """Partitions ``indices`` of ``count``: the jobs one pipeline (or one
    instance's census) looks after."""

    count: int
    indices: frozenset[int]

    @classmethod
    def of(cls, count: int, *indices: int) -> Slice:
        return cls(count, frozenset(indices))

    @property
    def everything(self) -> bool:
        return self.count == 1 and 0 in self.indices or set(range(self.count)) <= self.indices

    @property
    def nothing(self) -> bool:
        return not self.indices

    def match(self, path: str) -> dict[str, Any] | None:
        """The ``$expr`` body selecting this slice's documents by the ``_id`` at
        ``path``; None when the slice is every job (nothing to add)."""
        if self.everything:
            return None
        which = partition_of(path, self.count)
        if len(self.indices) == 1:
            return {"$eq": [which, next(iter(self.indices))]}
        return {"$in": [which, sorted(self.indices)]}

    def __str__(self) -> str:
        if self.everything:
            return "all"
        return ",".join(str(k) for k in sorted(self.indices)) + f" of {self.count}"


#: Every job: one partition, the whole of it (and what ``--observe`` and one-shot sweeps read).
EVERYTHING = Slice.of(1, 0)


async def check_hashing(collections: Iterable[AsyncCollection[Any]], partitions: int) -> None:
    """Refuse to split jobs on a server without MongoDB's ``$toHashedIndexKey``
    (4.4.10+, 5.0+) or with other values than MongoDB's: a ``ConfigurationProblem``
    naming the fix. Evaluated on a document of the first collection that has one
    (MongoDB refuses an unknown operator even with none)."""
    probe: list[Mapping[str, Any]] = [
        {"$limit": 1},
        {"$project": {"_id": 0, "hash": {"$toHashedIndexKey": PROBE_VALUE}}},
    ]
    for collection in collections:
        try:
            with errors.translated("checking $toHashedIndexKey", "retry"):
                cursor = await collection.aggregate(probe)
                docs = await cursor.to_list()
        except errors.StoreUnavailable as exc:
            if errors.code(exc) != errors.INVALID_PIPELINE_OPERATOR:
                raise
            raise errors.ConfigurationProblem(
                f"partitions={partitions} splits jobs with $toHashedIndexKey, which this server does not know "
                "(MongoDB 4.4.10+ or 5.0+ has it): upgrade the server, or run with partitions=1"
            ) from None
        if docs:
            found = docs[0].get("hash")
            if found != PROBE_HASH:
                raise errors.ConfigurationProblem(
                    f"this server's $toHashedIndexKey gives {found!r} for {PROBE_VALUE!r} where MongoDB gives "
                    f"{PROBE_HASH}: partitions={partitions} would split jobs unlike MongoDB; run with partitions=1"
                )
            return
