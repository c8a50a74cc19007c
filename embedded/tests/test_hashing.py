"""``$toHashedIndexKey``'s function against the values MongoDB publishes:
its unit tests (src/mongo/db/hasher_test.cpp, test vectors "determined
experimentally" on the server, which every release must keep: hashed
indexes and shard keys on disk depend on them) and its documentation's
example."""

from __future__ import annotations

import datetime
import struct

import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS

from jobwatch_embedded import hashing

DOUBLE_MAX = 1.7976931348623157e308

# (value, hash64 with seed 0), from hasher_test.cpp unless noted.
PUBLISHED = [
    (42, -944302157085130861),
    (42.123, -944302157085130861),
    (Int64(42), -944302157085130861),
    (0, 4854801880128277513),
    (0.456, 4854801880128277513),
    (Int64(0), 4854801880128277513),
    (float("nan"), 4854801880128277513),  # NaN hashes as 0
    (1, 5902408780260971510),
    (1.987, 5902408780260971510),
    (-1, 1140205862565771219),
    (-1.789, 1140205862565771219),
    (Int64(-1), 1140205862565771219),
    (-(2**31), 6165898260261354870),
    (float(-(2**31)), 6165898260261354870),
    (2**31 - 1, 1143184177162245883),
    (float(2**31 - 1), 1143184177162245883),
    (DOUBLE_MAX, 921523596458303250),  # clamped to the int64 maximum
    (Int64(2**63 - 1), 921523596458303250),
    (-DOUBLE_MAX, 4532067210535695462),
    (Int64(-(2**63)), 4532067210535695462),
    (MinKey(), 7961148599568647290),
    (MaxKey(), 5504842513779440750),
    (hashing.UNDEFINED_VALUE, 40158834000849533),
    (None, 2338878944348059895),
    ("abc", 8478485326885698097),
    ("", 2049396243249673340),
    ({"a": "abc", "b": Int64(123)}, 4771603801758380216),
    ({}, 7980500913326740417),
    (["bar", "baz", "qux"], -2938911267422831539),
    ([], 8849948234993459283),
    (Binary(bytes([0, 1, 2, 3, 4, 6]), 0), 7252465090394235301),
    (Binary(bytes([0, 1, 2, 3, 4, 6]), 128), 5736670452907618262),
    (Binary(bytes(range(16)), 4), 6084661258071355978),
    (ObjectId("010203040506070809101112"), -5588663249627035708),
    (ObjectId("000000000000000000000000"), -4293118519463489418),
    (True, 6405873908747105701),
    (False, 6289544573401934092),
    (DatetimeMS(0x5566778811223344), 4476222765095560467),
    (datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC), -1178696894582842035),
    (Timestamp(0x55667788, 0x11223344), 4873046866288452390),
    (Timestamp(0, 0), -7867208682377458672),
    (Regex("mongodb"), -7275792090268217043),
    (Regex(".*", "i"), 7095855029187981886),
    (Code("func f() { return 1; }"), 6861638109178014270),
    (Code("func f() { return 1; }", {"c": True}), 501342939894575968),
    ("string to hash", 763543691661428748),  # the $toHashedIndexKey documentation's example
]


def _id(value: object) -> str:
    # The same on every run (test ids must agree across pytest-xdist workers): no address in it.
    return "undefined" if value is hashing.UNDEFINED_VALUE else repr(value)[:40]


@pytest.mark.parametrize(("value", "expected"), PUBLISHED, ids=[_id(v) for v, _ in PUBLISHED])
def test_published_values(value: object, expected: int) -> None:
    assert hashing.hashed_index_key(value) == expected


def test_numbers_hash_as_their_int64_whatever_their_type() -> None:
    """Decimals convert as MongoDB's Decimal128::toLong (half to even), doubles truncate."""
    assert hashing.hashed_index_key(Decimal128("42")) == hashing.hashed_index_key(42)
    assert hashing.hashed_index_key(Decimal128("2.5")) == hashing.hashed_index_key(2)
    assert hashing.hashed_index_key(Decimal128("3.5")) == hashing.hashed_index_key(4)
    assert hashing.hashed_index_key(2.9) == hashing.hashed_index_key(2)
    assert hashing.hashed_index_key(Decimal128("NaN")) == hashing.hashed_index_key(0)
    assert hashing.hashed_index_key(Decimal128("1E+30")) == hashing.hashed_index_key(Int64(2**63 - 1))
    # The double 2^63 keeps older servers' wrapped cast: it hashes as -2^63.
    assert hashing.hashed_index_key(2.0**63) == hashing.hashed_index_key(Int64(-(2**63)))
    assert hashing.hashed_index_key(float("inf")) == hashing.hashed_index_key(Int64(2**63 - 1))


def test_documents_hash_recursively_with_numbers_squashed() -> None:
    """hasher_test.cpp's RecursiveSquashingIntsAndDoubles, and the differences it keeps."""
    assert hashing.hashed_index_key({"a": 3, "b": [3.1, {"c": 3}]}) == hashing.hashed_index_key(
        {"a": 3.1, "b": [3, {"c": 3.0}]}
    )
    assert hashing.hashed_index_key({"0": 0, "1": 1}) != hashing.hashed_index_key([0, 1])
    assert hashing.hashed_index_key({"a": {}, "b": 1}) != hashing.hashed_index_key({"a": {"b": 1}})
    assert hashing.hashed_index_key(3) != hashing.hashed_index_key("3")


def test_the_result_is_the_digest_prefix_as_a_little_endian_int64() -> None:
    import hashlib

    # null: seed 0, canonical type 5, no value bytes.
    digest = hashlib.md5(struct.pack("<ii", 0, 5), usedforsecurity=False).digest()
    assert hashing.hashed_index_key(None) == struct.unpack("<q", digest[:8])[0]
