"""Hypothesis strategies for hostile job documents. The MongoDB-faithful
model of applying an ``Evaluation`` to one lives in ``documents`` (one model
for every test); it is re-exported here for the suites that import it from
this module.

"Hostile" means what a real ``background_jobs`` collection can hold after
years of hand edits, old writers and bugs: every BSON type in every field
the rules read (and in ``_id``), counters that are huge, negative,
fractional, NaN or infinite, statuses that are regexes or ``$``-documents,
stage names with dots, ``$``, unicode or nothing at all, deep nesting.
Plausible values are mixed in on purpose, so that many documents get far
enough to complete or move progress: a generator that only produced
rejections would prove little.

Shared by the rules' property tests and by the sweep/stream suites (which
insert these documents into a backend): ``job_documents()`` gives
documents; ``storable_job_documents()`` only those a MongoDB server would
accept (BSON-encodable, ``_id`` not an array, regex or undefined);
``collection_documents()`` path A's collection documents, item arrays that
are not arrays included; ``collection_counts`` what the rules may be handed
as counts.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

import bson
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from hypothesis import strategies as st

from tests.support.documents import MISSING as MISSING
from tests.support.documents import apply as apply
from tests.support.documents import get_path as get_path
from tests.support.documents import guard_matches as guard_matches
from tests.support.documents import mongo_equal as mongo_equal

INT64_MAX = 2**63 - 1

KNOWN_STATUSES = [
    "Pending",
    "InProgress",
    "Completed",
    "Failed",
    "Cancelled",
    "pending",
    "inprogress",
    "IN_PROGRESS",
    "in-progress",
    "completed",
    "CANCELED",
    "Running",
    "Queued",
    "",
]
PLAIN_NAMES = ["scan", "thumbnail", "cache", "resize", "upload"]

# -- scalars of every BSON type ----------------------------------------------

huge_floats = st.sampled_from(
    [1e19, 9.223372036854775807e18, 1e30, -1e30, 1.7976931348623157e308, 2.0**63, -(2.0**63), 2.0**63 - 1024]
)
special_floats = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 131.5, 0.5, 1e-300])
decimal128s = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "-NaN",
            "Infinity",
            "-Infinity",
            "1E+40",
            "-1E+40",
            "9223372036854775807",
            "9223372036854775808",
            "131.5",
            "132",
            "-0",
            "1E-6143",
            "0.000",
        ]
    ).map(Decimal128),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-1000, max_value=1000).map(
        lambda d: Decimal128(str(d))
    ),
)
texts = st.one_of(
    st.sampled_from(
        ["132", " 132 ", "132.5", "1e3", "1_000", "nan", "inf", "-1", "0x10", "lots", "", "$gt", "a.b", "١٣٢", "9" * 30]
    ),
    st.text(max_size=12),
)
datetimes = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1))
scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31),
    st.integers(-INT64_MAX - 1, INT64_MAX),
    st.integers(-INT64_MAX - 1, INT64_MAX).map(Int64),
    st.floats(),
    huge_floats,
    special_floats,
    decimal128s,
    texts,
    st.builds(ObjectId),
    datetimes,
    st.sampled_from(
        [
            Regex("^P"),
            Regex(".*", "i"),
            Code("function () { return 1 }"),
            Code("132"),
            Binary(b"132"),
            Binary(b"\x00", 4),
            b"132",
            b"",
            MinKey(),
            MaxKey(),
            Timestamp(1, 1),
        ]
    ),
)


def _keys() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["$gt", "$ne", "$in", "$regex", "$where", "a.b", "", "status", "completedItems"]),
        st.text(max_size=6).filter(lambda k: "\x00" not in k),
    )


values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys(), inner, max_size=3)),
    max_leaves=8,
)


def deep(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = {"x": [value]}
    return value


deeply_nested = st.builds(deep, scalars, st.integers(20, 90))
operator_documents = st.sampled_from(
    [{"$gt": ""}, {"$ne": 1}, {"$in": ["Pending"]}, {"$exists": True}, {"$regex": "^P"}, {"$where": "1"}]
)

# -- the fields the rules read ----------------------------------------------

plausible_counters: st.SearchStrategy[Any] = st.one_of(
    st.integers(0, 300),
    st.integers(0, 300).map(float),
    st.integers(0, 300).map(str),
    st.integers(0, 300).map(Int64),
    st.integers(0, 300).map(lambda n: Decimal128(str(n))),
    st.floats(0, 300, allow_nan=False).map(lambda f: round(f, 1)),
    st.integers(-5, -1),
    st.none(),
)
hostile_counters: st.SearchStrategy[Any] = st.one_of(
    values, operator_documents, huge_floats, special_floats, decimal128s, texts
)
plausible_statuses: st.SearchStrategy[Any] = st.one_of(st.sampled_from(KNOWN_STATUSES), st.none())
hostile_statuses: st.SearchStrategy[Any] = st.one_of(values, operator_documents, deeply_nested)
plausible_names: st.SearchStrategy[Any] = st.sampled_from(PLAIN_NAMES)
hostile_names: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(["a.b", "$where", "$", "", "price$", "vignette-é", "缩略图", "stage name", "__proto__", "nul\x00"]),
    st.text(min_size=0, max_size=8),
)
counters = st.one_of(plausible_counters, hostile_counters)
statuses = st.one_of(plausible_statuses, hostile_statuses)
stage_names = st.one_of(plausible_names, hostile_names)
job_ids: st.SearchStrategy[Any] = st.one_of(
    st.builds(ObjectId),
    st.text(max_size=24),
    st.integers(-INT64_MAX - 1, INT64_MAX),
    st.sampled_from(
        [
            None,
            0,
            -0.0,
            math.nan,
            Int64(7),
            Decimal128("1.5"),
            True,
            Regex("^x"),
            Code("x"),
            Binary(b"id"),
            b"id",
            MinKey(),
            MaxKey(),
            Timestamp(5, 1),
            [1, 2],
            {"$gt": ""},
            {"a": {"b": 1}},
        ]
    ),
    datetimes,
)


class _Pick:
    """Draws each field plausible or hostile, at one rate per document: most
    documents have a few hostile fields, some none, some nothing but."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.percent = draw(st.sampled_from([0, 0, 1, 3, 10, 100]))

    def __call__(
        self, plausible: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], *, optional: bool = True
    ) -> Any:
        if optional and self.draw(st.integers(0, 9)) == 0:
            return MISSING
        if self.draw(st.integers(0, 99)) < self.percent:
            return self.draw(hostile)
        return self.draw(plausible)


def _stage(pick: _Pick) -> Any:
    if pick(st.just(False), st.just(True), optional=False):
        return pick.draw(st.one_of(values, deeply_nested))  # a stage that is not a document
    doc: dict[str, Any] = {}
    for field, plausible, hostile in (
        ("status", plausible_statuses, hostile_statuses),
        ("totalItems", plausible_counters, hostile_counters),
        ("completedItems", plausible_counters, hostile_counters),
        ("progress", st.integers(0, 100), hostile_counters),
    ):
        value = pick(plausible, hostile)
        if value is not MISSING:
            doc[field] = value
    if pick(st.just(False), st.just(True), optional=False):
        doc[pick.draw(_keys())] = pick.draw(st.one_of(values, deeply_nested))
    return doc


def _stages(pick: _Pick) -> Any:
    if pick(st.just(False), st.just(True), optional=False):
        return pick.draw(st.one_of(values, operator_documents))  # not a document of stages
    count = pick.draw(st.integers(0, 5))
    stages: dict[Any, Any] = {}
    for _ in range(count):
        stages[pick(plausible_names, hostile_names, optional=False)] = _stage(pick)
    return stages


@st.composite
def job_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A job document with hostile values anywhere the rules look."""
    pick = _Pick(draw)
    fields: dict[str, Any] = {
        "_id": pick(st.one_of(st.builds(ObjectId), st.text(min_size=1, max_size=24), st.integers(1, 10**6)), job_ids),
        "jobType": pick(st.sampled_from(["resume-collection", "collection-scan"]), values),
        "status": pick(plausible_statuses, hostile_statuses),
        "progress": pick(st.integers(0, 99), hostile_counters),
        "totalItems": pick(st.integers(0, 300), hostile_counters),
        "completedItems": pick(st.integers(0, 300), hostile_counters),
        "collectionId": pick(st.one_of(st.none(), st.builds(ObjectId)), values),
        "stages": MISSING if draw(st.integers(0, 19)) == 0 else _stages(pick),
    }
    doc = {field: value for field, value in fields.items() if value is not MISSING}
    if pick(st.just(False), st.just(True), optional=False):
        doc[draw(_keys())] = draw(st.one_of(values, deeply_nested))
    return doc


def storable(doc: Mapping[str, Any]) -> bool:
    """Whether a MongoDB server would store ``doc`` as it is."""
    job_id = doc.get("_id", MISSING)
    if isinstance(job_id, (list, Regex)):
        return False
    try:
        bson.encode(doc)
    except Exception:  # InvalidDocument, OverflowError, UnicodeEncodeError: the server never sees it
        return False
    return True


def storable_job_documents() -> st.SearchStrategy[dict[str, Any]]:
    return job_documents().filter(storable)


collection_counts: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.dictionaries(plausible_names, st.integers(0, 400), max_size=3),
    st.dictionaries(plausible_names, st.integers(0, 400), max_size=3),
    st.dictionaries(st.one_of(stage_names, st.integers()), counters, max_size=4),
    values,
)


@st.composite
def collection_documents(draw: st.DrawFn, arrays: tuple[str, ...] = ("thumbnails", "cacheImages")) -> dict[str, Any]:
    """A ``collections`` document for path A: each item array is a list (as it
    should be), missing, or any other BSON value (a string, a number, null, a
    document...), which the server's ``$size`` refuses (code 17124)."""
    pick = _Pick(draw)
    doc: dict[str, Any] = {
        "_id": draw(
            st.one_of(st.builds(ObjectId), job_ids.filter(lambda v: not isinstance(v, (list, Regex)) and v is not None))
        )
    }
    for field in arrays:
        value = pick(st.lists(st.one_of(st.builds(ObjectId), st.text(max_size=4)), max_size=20), values)
        if value is not MISSING:
            doc[field] = value
    return doc
