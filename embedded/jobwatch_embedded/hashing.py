"""MongoDB's hashed index key: the value of ``$toHashedIndexKey``, of a hashed
index entry and of a hashed shard key, bit for bit.

MongoDB computes it in ``BSONElementHasher::hash64`` (src/mongo/db/hasher.cpp):
an MD5 over the seed (0, as a little-endian int32) and then, for the value,

- its canonical type (the sort-order class of its BSON type, hasher's
  ``canonicalType()``) as a little-endian int32;
- for a number of any type (int, long, double, decimal): the value as a
  little-endian int64, converted as ``safeNumberLongForHash`` does (doubles
  truncated toward zero, decimals rounded half to even, NaN as 0, values
  beyond the int64 range clamped, and the double 2^63 as -2^63): so 42,
  ``Int64(42)`` and 42.9 hash alike;
- for a document, an array or code with scope: each element in order, with
  its canonical type, its field name (with its NUL; arrays use "0", "1", ...)
  and its value, then an end marker (canonical type 0, no name); code with
  scope first adds its code string (with its NUL, without the length);
- for anything else: the value's BSON bytes as they are on the wire.

The result is the digest's first 8 bytes as a little-endian signed int64.
A missing value hashes as null. Strings and symbols hash alike, as do
undefined and the end marker. The values MongoDB's own unit tests and
documentation publish are checked in this package's tests.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any

import bson
from bson.code import Code
from bson.dbref import DBRef
from bson.decimal128 import Decimal128

SEED = 0
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
TWO_TO_63 = 2.0**63

# BSON type byte -> MongoDB's canonical type (bsontypes.h, canonicalizeBSONType).
CANONICAL_TYPE = {
    0x01: 10,  # double
    0x02: 15,  # string
    0x03: 20,  # document
    0x04: 25,  # array
    0x05: 30,  # binary
    0x06: 0,  # undefined
    0x07: 35,  # ObjectId
    0x08: 40,  # bool
    0x09: 45,  # date
    0x0A: 5,  # null
    0x0B: 50,  # regex
    0x0C: 55,  # DBPointer
    0x0D: 60,  # JavaScript code
    0x0E: 15,  # symbol
    0x0F: 65,  # code with scope
    0x10: 10,  # int32
    0x11: 47,  # timestamp
    0x12: 10,  # int64
    0x13: 10,  # decimal128
    0xFF: -1,  # MinKey
    0x7F: 127,  # MaxKey
}
NUMBER_TYPES = frozenset({0x01, 0x10, 0x12, 0x13})
END_OF_DOCUMENT = 0
UNDEFINED = 0


#: What an ``adapt`` function returns for BSON's deprecated undefined value
#: (which PyMongo decodes as None, and which hashes apart from null).
UNDEFINED_VALUE = object()

Adapt = Callable[[object], object]


def hashed_index_key(value: object, adapt: Adapt | None = None) -> int:
    """``{$toHashedIndexKey: value}`` as MongoDB computes it.

    ``value`` is a PyMongo (bson) value, or a value ``adapt`` turns into one
    scalar by scalar (documents and arrays are walked here), or into
    ``UNDEFINED_VALUE``.

    >>> hashed_index_key("string to hash")
    763543691661428748
    """
    digest = hashlib.md5(struct.pack("<i", SEED), usedforsecurity=False)
    _hash_into(digest, value, None, adapt or _same)
    return int.from_bytes(digest.digest()[:8], "little", signed=True)


def _same(value: object) -> object:
    return value


def _hash_into(digest: Any, value: object, name: bytes | None, adapt: Adapt) -> None:
    """Feed one element: ``name`` with its NUL, or None for the top value."""
    if not isinstance(value, Mapping | list | tuple):
        value = adapt(value)
    if value is UNDEFINED_VALUE:
        _start(digest, UNDEFINED, name)
        return
    if isinstance(value, DBRef):
        value = value.as_doc()  # a DBRef is stored as the document {$ref, $id[, $db]}
    if isinstance(value, Mapping):
        _start(digest, CANONICAL_TYPE[0x03], name)
        _elements(digest, value.items(), adapt)
        return
    if isinstance(value, list | tuple):
        _start(digest, CANONICAL_TYPE[0x04], name)
        _elements(digest, ((str(i), item) for i, item in enumerate(value)), adapt)
        return
    if isinstance(value, Code) and value.scope is not None:
        _start(digest, CANONICAL_TYPE[0x0F], name)
        digest.update(str(value).encode() + b"\x00")
        _elements(digest, value.scope.items(), adapt)
        return
    kind, payload = _leaf(value)
    _start(digest, CANONICAL_TYPE[kind], name)
    digest.update(struct.pack("<q", _number(kind, payload)) if kind in NUMBER_TYPES else payload)


def _start(digest: Any, canonical_type: int, name: bytes | None) -> None:
    digest.update(struct.pack("<i", canonical_type))
    if name is not None:
        digest.update(name)


def _elements(digest: Any, items: Any, adapt: Adapt) -> None:
    for key, item in items:
        _hash_into(digest, item, key.encode() + b"\x00", adapt)
    _start(digest, END_OF_DOCUMENT, b"")


def _leaf(value: object) -> tuple[int, bytes]:
    """The BSON type byte and value bytes of a scalar, as bson encodes it."""
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)  # naive datetimes are UTC in BSON
    data = bson.encode({"": value})  # int32 size, type, "" NUL, value, document NUL
    return data[4], data[6:-1]


def _number(kind: int, payload: bytes) -> int:
    if kind == 0x10:
        return int(struct.unpack("<i", payload)[0])
    if kind == 0x12:
        return int(struct.unpack("<q", payload)[0])
    if kind == 0x01:
        return _double_for_hash(struct.unpack("<d", payload)[0])
    return _decimal_for_hash(Decimal128.from_bid(payload).to_decimal())


def _double_for_hash(d: float) -> int:
    """``safeNumberLongForHash`` for a double."""
    if math.isnan(d):
        return 0
    if d == TWO_TO_63:
        return INT64_MIN  # kept from older servers, where the overflowing cast wrapped
    if not d < TWO_TO_63:
        return INT64_MAX
    if d < -TWO_TO_63:
        return INT64_MIN
    return int(d)  # toward zero


def _decimal_for_hash(d: decimal.Decimal) -> int:
    """``safeNumberLong`` for a decimal: NaN is 0, out of range is clamped,
    otherwise ``Decimal128::toLong()``, which rounds half to even."""
    if d.is_nan():
        return 0
    if d > INT64_MAX:
        return INT64_MAX
    if d < INT64_MIN:
        return INT64_MIN
    return int(d.to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
