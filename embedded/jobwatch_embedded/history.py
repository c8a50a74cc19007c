"""The server's change history: every change in order, bounded, optionally
journaled to disk so resume tokens survive the server's own restart.

MongoDB keeps changes in its oplog whether or not anyone watches; this is
that oplog for the embedded server. Each change gets a sequence number and a
cluster time (a BSON Timestamp: seconds, increment). A resume token names a
history (a random id, kept in the journal) and a sequence; the history can
serve it while every change after it is retained.

The journal is one file of BSON documents: a header ``{history, base,
baseTime}`` and then one document per change, appended and flushed as each
change is recorded. A half-written last document (the process was killed
mid-append) is ignored on load. When more than ``max_events`` are retained
the oldest are dropped and the file is rewritten.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

import jobwatch_embedded
from jobwatch_embedded import events

# Journal documents keep their nested documents as BSON: entries hold bytes.
_RAW = CodecOptions(document_class=RawBSONDocument)

JOURNAL_NAME = "changes.bson"
DEFAULT_MAX_EVENTS = jobwatch_embedded.DEFAULT_HISTORY_EVENTS


class HistoryLost(Exception):
    """The changes after a token, or after a cluster time, are not retained."""


#: MongoDB's words for it (ChangeStreamHistoryLost).
HISTORY_LOST_MESSAGE = "Resume of change stream was not possible, as the resume point may no longer be in the oplog."


class History:
    def __init__(self, *, journal_dir: Path | None = None, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self._max_events = max_events
        self._entries: list[events.Entry] = []
        self._path = journal_dir / JOURNAL_NAME if journal_dir is not None else None
        self._file: IO[bytes] | None = None
        self._changed = asyncio.Event()
        self.history_id = secrets.randbits(63)
        # Every change with sequence <= base is gone; resuming needs token >= base.
        self._base = 0
        self._base_time = _now_cluster_time()
        self._last_time = self._base_time
        if self._path is not None:
            self._load(self._path)
            self._rewrite()

    @property
    def head(self) -> int:
        return self._entries[-1].sequence if self._entries else self._base

    def record(
        self,
        operation: str,
        db: str,
        coll: str,
        *,
        document_key: bytes | None = None,
        full_document: bytes | None = None,
        update_description: bytes | None = None,
        rename_to: tuple[str, str] | None = None,
        collection_uuid: bytes | None = None,
        images: bool = False,
        pre_image: bytes | None = None,
        description: bytes | None = None,
        disambiguated_paths: bytes | None = None,
    ) -> events.Entry:
        entry = events.Entry(
            sequence=self.head + 1,
            cluster_time=self._next_cluster_time(),
            wall_time=datetime.datetime.now(datetime.UTC),
            operation=operation,
            db=db,
            coll=coll,
            document_key=document_key,
            full_document=full_document,
            update_description=update_description,
            rename_to=rename_to,
            collection_uuid=collection_uuid,
            images=images,
            pre_image=pre_image,
            description=description,
            disambiguated_paths=disambiguated_paths,
        )
        self._entries.append(entry)
        if self._file is not None:
            self._file.write(bson.encode(_entry_document(entry)))
            self._file.flush()
        if len(self._entries) > self._max_events + self._max_events // 4:
            self._prune()
        self._changed.set()
        self._changed = asyncio.Event()
        return entry

    @property
    def last_time(self) -> tuple[int, int]:
        """The cluster time of the last change (the start time before any)."""
        return self._last_time

    @property
    def base(self) -> int:
        """The last change no longer retained (0: none dropped yet)."""
        return self._base

    @property
    def base_time(self) -> tuple[int, int]:
        """The cluster time before which nothing is retained."""
        return self._base_time

    def check_resumable(self, position: events.Position) -> None:
        if position.history_id != self.history_id or not self._base <= position.sequence <= self.head:
            raise HistoryLost(HISTORY_LOST_MESSAGE)

    def time_of(self, sequence: int) -> tuple[int, int]:
        """The cluster time of the change ``sequence`` (of the oldest retained
        point when it is gone): what a token for that position carries."""
        if self._entries and sequence >= self._entries[0].sequence:
            return self._entries[min(sequence, self.head) - self._entries[0].sequence].cluster_time
        return self._base_time

    def sequence_at_time(self, cluster_time: tuple[int, int]) -> int:
        """The sequence to resume after so that the first change returned is at or after ``cluster_time``."""
        if cluster_time < self._base_time:
            raise HistoryLost(HISTORY_LOST_MESSAGE)
        for entry in self._entries:
            if entry.cluster_time >= cluster_time:
                return entry.sequence - 1
        return self.head

    def after(self, sequence: int) -> Iterator[events.Entry]:
        """Retained changes with a sequence greater than ``sequence``, in order;
        ``HistoryLost`` when some of them are no longer retained."""
        if sequence < self._base:
            raise HistoryLost(HISTORY_LOST_MESSAGE)
        if not self._entries or sequence >= self.head:
            return iter(())
        start = max(0, sequence - self._entries[0].sequence + 1)  # sequences are consecutive
        return iter(self._entries[start:])

    async def wait_beyond(self, sequence: int, timeout_s: float) -> None:
        """Return when a change after ``sequence`` exists, or after ``timeout_s``."""
        if self.head > sequence or timeout_s <= 0:
            return
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout_s)
        except TimeoutError:
            return

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _next_cluster_time(self) -> tuple[int, int]:
        seconds = max(int(time.time()), self._last_time[0])
        increment = self._last_time[1] + 1 if seconds == self._last_time[0] else 1
        self._last_time = (seconds, increment)
        return self._last_time

    def _prune(self) -> None:
        # Pruned in steps of a quarter of the bound, so appends stay O(1) on average.
        excess = len(self._entries) - self._max_events
        dropped = self._entries[excess - 1]
        self._base, self._base_time = dropped.sequence, dropped.cluster_time
        del self._entries[:excess]
        if self._path is not None:
            self._rewrite()

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        data = path.read_bytes()
        documents = list(_complete_documents(data))
        if not documents:
            return
        header, *entries = documents
        self.history_id = int(header["history"])
        self._base = int(header["base"])
        self._base_time = (int(header["baseTime"][0]), int(header["baseTime"][1]))
        self._entries.extend(_entry_from(doc) for doc in entries)
        self._last_time = max(self._base_time, self._entries[-1].cluster_time if self._entries else self._base_time)

    def _rewrite(self) -> None:
        """Write header and retained changes to a new file, then swap it in."""
        assert self._path is not None
        self.close()
        temporary = self._path.with_suffix(".tmp")
        with temporary.open("wb") as out:
            out.write(
                bson.encode(
                    {
                        "history": bson.Int64(self.history_id),
                        "base": bson.Int64(self._base),
                        "baseTime": list(self._base_time),
                    }
                )
            )
            for entry in self._entries:
                out.write(bson.encode(_entry_document(entry)))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self._path)
        self._file = self._path.open("ab")


def _now_cluster_time() -> tuple[int, int]:
    return (int(time.time()), 0)


def _complete_documents(data: bytes) -> Iterator[dict[str, Any]]:
    offset = 0
    while offset + 4 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "little")
        if size < 5 or offset + size > len(data):
            return  # a torn final append: the change it held was never acknowledged as journaled
        try:
            document = bson.decode(data[offset : offset + size], _RAW)
            yield {key: document[key] for key in document}  # every field read now: a bad one fails here
        except bson.errors.InvalidBSON:
            return
        offset += size


def _entry_document(entry: events.Entry) -> dict[str, Any]:
    return {
        "seq": bson.Int64(entry.sequence),
        "ct": bson.Timestamp(*entry.cluster_time),
        "wt": entry.wall_time,
        "op": entry.operation,
        "db": entry.db,
        "coll": entry.coll,
        "key": events.raw(entry.document_key),
        "doc": events.raw(entry.full_document),
        "desc": events.raw(entry.update_description),
        "to": list(entry.rename_to) if entry.rename_to else None,
        "uuid": bson.Binary(entry.collection_uuid) if entry.collection_uuid is not None else None,
        "img": entry.images,
        "pre": events.raw(entry.pre_image),
        "opd": events.raw(entry.description),
        "dis": events.raw(entry.disambiguated_paths),
    }


def _entry_from(document: dict[str, Any]) -> events.Entry:
    ct: bson.Timestamp = document["ct"]
    wall_time: datetime.datetime = document["wt"]
    rename_to = list(document["to"]) if document["to"] is not None else None
    return events.Entry(
        sequence=int(document["seq"]),
        cluster_time=(ct.time, ct.inc),
        wall_time=wall_time.replace(tzinfo=datetime.UTC) if wall_time.tzinfo is None else wall_time,
        operation=document["op"],
        db=document["db"],
        coll=document["coll"],
        document_key=_bytes(document["key"]),
        full_document=_bytes(document["doc"]),
        update_description=_bytes(document["desc"]),
        rename_to=(rename_to[0], rename_to[1]) if rename_to else None,
        # Journals written before these fields existed have none of them.
        collection_uuid=bytes(document["uuid"]) if document.get("uuid") is not None else None,
        images=bool(document.get("img", False)),
        pre_image=_bytes(document.get("pre")),
        description=_bytes(document.get("opd")),
        disambiguated_paths=_bytes(document.get("dis")),
    )


def _bytes(value: object) -> bytes | None:
    return bytes(value.raw) if isinstance(value, RawBSONDocument) else None
