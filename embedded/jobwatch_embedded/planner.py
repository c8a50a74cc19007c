"""The embedded engine's index use, widened to the query shapes MongoDB
serves from an index and mongoeco 4.11's memory engine does not.

The memory engine keeps index buckets (index key tuple -> documents) but
reads them only for an equality on a single-field index; every other filter
examines the whole collection. MongoDB serves ``$in`` and ``$nin`` on the
leading field of any ordered index, single or compound, from index bounds.
So on the embedded engine the sweep's passes (``status $in`` open spellings,
``status $nin`` known spellings, over the ``(status, jobType)`` index) cost
the whole collection, where on MongoDB they cost the entries they return.
This engine closes that gap for those shapes; nothing in the product knows
about it.

The buckets give a superset of the matching documents and the engine still
applies the whole filter to each one, so a bucket taken needlessly costs
time, never a wrong answer. A bucket is left out only when its leading key
is a string that the condition rules out. That is exact for a top-level
field: a compound index keys a document by the field's value itself (an
array stays an array, a missing field is null), and a single-field index by
the value and each array element, so a document whose key is some other
string cannot match. Dotted paths, non-string operands, collations and
anything else fall back to the engine's own choice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobwatch_embedded import hooks

# The engine's query plans and index helpers (its internals: through hooks).
_plans = hooks.query_plans()
AndCondition, EqualsCondition, InCondition, NotInCondition = (
    _plans.AndCondition,
    _plans.EqualsCondition,
    _plans.InCondition,
    _plans.NotInCondition,
)

#: Ordered index directions; text, hashed and geo indexes key documents otherwise.
ORDERED = (1, -1)


def engine() -> Any:
    """A memory engine that serves the shapes above from its indexes (the
    engine's own index-candidate step, extended through ``hooks``)."""
    return hooks.indexed_memory_engine(candidates)


def candidates(indexes: list[Any], index_data: dict[str, Any], query_plan: Any, *, dialect: Any) -> set[Any] | None:
    """Storage keys of every document that may match ``query_plan``, read
    from one index's buckets; None when no index serves one of its clauses."""
    clauses = query_plan.clauses if isinstance(query_plan, AndCondition) else (query_plan,)
    for clause in clauses:
        served = _leading_key_test(clause)
        if served is None:
            continue
        field, test = served
        for index in indexes:
            keys = index["key"]
            if not keys or keys[0][0] != field or any(direction not in ORDERED for _, direction in keys):
                continue
            buckets = index_data.get(index["name"])
            if buckets is None or not _plans.query_can_use_index(index, query_plan, dialect=dialect, collation=None):
                continue
            found: set[Any] = set()
            for key in list(buckets.keys()):
                if test(key[0]):
                    found.update(buckets[key])
            return found
    return None


def _leading_key_test(clause: Any) -> tuple[str, Callable[[Any], bool]] | None:
    """For a condition this module serves, its field and a test of a bucket's
    leading key: False only when no document under that key can match."""
    served = isinstance(clause, EqualsCondition | InCondition | NotInCondition)
    if not served or clause.null_matches_undefined or "." in clause.field:
        return None
    values = (clause.value,) if isinstance(clause, EqualsCondition) else clause.values
    if not all(type(value) is str for value in values):
        return None
    named = {_plans.bson_equality_key(value) for value in values}

    def string_key(key: Any) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and key[0] == "str"

    if isinstance(clause, NotInCondition):
        return clause.field, lambda key: key not in named  # any other value, array or null may match
    return clause.field, lambda key: key in named or not string_key(key)  # arrays may hold a named string
