"""An in-memory job store: the ``JobStore`` seam without a database.

The dispatcher and the sweep are tested against it the way procrastinate's
worker is tested against its in-memory connector: every branch of the write
path (the guard holding or not, a server that is away, a write refused)
without a MongoDB. It understands exactly the filters and updates
``watcher.decide.updates`` builds (``$eq``/``$gte`` guards, the stage-set
``$expr``; ``$set``/``$max``/``$currentDate``), comparing values as
``tests.support.documents`` does, and fails loudly on anything else, so a
new shape in the product cannot pass here by accident.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.support import documents
from watcher.storage import errors, store
from watcher.storage.store import job_key


@dataclass
class Write:
    job_id: Any
    query: Mapping[str, Any]
    update: Mapping[str, Any]
    matched: bool


@dataclass
class MemoryJobStore:
    """Jobs by ``_id``; collections' item counts by collection id."""

    jobs: dict[Any, dict[str, Any]] = field(default_factory=dict)
    counts: dict[Any, dict[str, int]] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    #: Outcomes the next ``apply`` calls raise, in order (then normal service).
    failures: list[errors.StorageProblem] = field(default_factory=list)
    batch_size: int = 500

    def add(self, *docs: Mapping[str, Any]) -> None:
        for doc in docs:
            self.jobs[job_key(doc["_id"])] = copy.deepcopy(dict(doc))

    def get(self, job_id: Any) -> dict[str, Any]:
        return self.jobs[job_key(job_id)]

    def fail_next(self, outcome: errors.StorageProblem, times: int = 1) -> None:
        self.failures.extend([outcome] * times)

    @property
    def applied(self) -> list[Write]:
        return [w for w in self.writes if w.matched]

    async def apply(self, job_id: Any, query: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
        if self.failures:
            raise self.failures.pop(0)
        doc = self.jobs.get(job_key(job_id))
        matched = doc is not None and _matches(doc, query)
        if matched:
            assert doc is not None
            _update(doc, update)
        self.writes.append(Write(job_id, query, update, matched))
        return matched

    async def open_jobs(
        self, *, full: bool, job_types: Iterable[str] = (), fields: Iterable[str] = ()
    ) -> AsyncIterator[list[dict[str, Any]]]:
        types = set(job_types)
        batch: list[dict[str, Any]] = []
        for doc in list(self.jobs.values()):
            # The server's two passes: an open spelling; with ``full``, no known spelling at all.
            stored = doc.get("status")
            is_open = isinstance(stored, str) and stored in store.OPEN_SPELLINGS
            unknown = not (isinstance(stored, str) and stored in store.KNOWN_SPELLINGS)
            if not (is_open or (full and unknown)) or (types and doc.get("jobType") not in types):
                continue
            batch.append(copy.deepcopy(doc))
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def collection_counts(self, collection_ids: Iterable[Any]) -> dict[Any, dict[str, int]]:
        return {job_key(c): dict(self.counts[job_key(c)]) for c in collection_ids if job_key(c) in self.counts}


def _matches(doc: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    for path, condition in query.items():
        if path == "$expr":
            if not _stage_names(doc, condition):
                return False
            continue
        stored = documents.get_path(doc, path)
        ((operator, wanted),) = condition.items()
        if operator == "$eq":
            ok = documents.mongo_equal(stored, wanted)
        elif operator == "$gte":
            ok = documents.at_least(stored, wanted)
        else:
            raise AssertionError(f"the in-memory store does not know {operator} (in {query})")
        if not ok:
            return False
    return True


def _stage_names(doc: Mapping[str, Any], expr: Mapping[str, Any]) -> bool:
    """The stage-set guard of ``updates._stage_names_are``: the field is a
    document whose keys are exactly the names."""
    cond = expr["$cond"]
    path = cond["if"]["$eq"][0]["$type"].removeprefix("$")
    names = cond["then"]["$setEquals"][1]["$literal"]
    value = documents.get_path(doc, path)
    if not isinstance(value, Mapping):
        return bool(cond["else"])
    return set(value) == set(names)


def _update(doc: dict[str, Any], update: Mapping[str, Any]) -> None:
    for operator, fields in update.items():
        for path, value in fields.items():
            if operator == "$set":
                documents.set_path(doc, path, copy.deepcopy(value))
            elif operator == "$max":
                if documents.raises(documents.get_path(doc, path), value):
                    documents.set_path(doc, path, value)
            elif operator == "$currentDate":
                documents.set_path(doc, path, dt.datetime.now(dt.UTC))
            else:
                raise AssertionError(f"the in-memory store does not know {operator}")
