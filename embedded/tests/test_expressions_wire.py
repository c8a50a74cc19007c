"""Aggregation expressions mongoeco lacks, evaluated by the server as MongoDB
does, in update pipelines and ``$expr`` filters (a server process, PyMongo)."""

from __future__ import annotations

from typing import Any

from bson import Decimal128
from pymongo import MongoClient

#: ``$not`` of each value, as MongoDB answers it: false, null, missing and zero are false.
NOT_OF: list[tuple[Any, bool]] = [
    (False, True), (None, True), (0, True), (0.0, True), (Decimal128("0"), True),
    (True, False), (1, False), (-2.5, False), ("", False), ([], False), ({}, False), (Decimal128("0.1"), False),
]  # fmt: skip


def test_not_in_update_pipelines_and_expr_filters(serving: Any) -> None:
    with serving() as running, MongoClient[dict[str, Any]](running.uri) as mongo:
        values = mongo.db.values
        values.insert_many([{"_id": i, "v": value} for i, (value, _) in enumerate(NOT_OF)] + [{"_id": "missing"}])
        values.update_many({}, [{"$set": {"negated": {"$not": ["$v"]}, "bare": {"$not": "$v"}}}])
        got = {doc["_id"]: (doc["negated"], doc["bare"]) for doc in values.find()}
        expected: dict[int | str, tuple[bool, bool]] = {i: (n, n) for i, (_, n) in enumerate(NOT_OF)}
        assert got == {**expected, "missing": (True, True)}
        falsy = {doc["_id"] for doc in values.find({"$expr": {"$not": ["$v"]}})}
        assert falsy == {i for i, (_, n) in enumerate(NOT_OF) if n} | {"missing"}
