"""Values from documents are data on every readable line: printable.value and
friends escape, cut and quote; nothing they return can split, colour or
reorder a line."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.printing import hostile_text, raw_controls
from watcher.ops import printable


@settings(max_examples=300, deadline=None)
@given(hostile_text)
def test_a_value_is_one_printable_line(value: str) -> None:
    shown = printable.value(value)
    assert not raw_controls(shown)
    assert shown.isprintable()
    shown.encode("utf-8")  # no lone surrogate left: every stream can write it
    assert len(shown) <= 10 * printable.VALUE_CHARS + 40


@settings(deadline=None)
@given(st.text(max_size=printable.VALUE_CHARS))
def test_short_printable_values_are_shown_as_they_are(value: str) -> None:
    if value.isprintable() and "\\" not in value:
        assert printable.value(value) == value


def test_escapes_read_as_repr_writes_them() -> None:
    assert printable.value("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert printable.value("\x1b[2J") == "\\x1b[2J"
    assert printable.value("\x85") == "\\x85"  # C1 (NEL) too
    assert printable.value("x\u202ey") == "x\\u202ey"
    assert printable.value("\ud800") == "\\ud800"
    assert printable.value("a\\nb") == "a\\\\nb"  # a literal backslash-n is not a newline
    assert printable.value("<module> {}") == "<module> {}"  # markup is text, never interpreted


def test_long_values_are_cut_with_a_marker() -> None:
    shown = printable.value("x" * 10_000)
    assert shown == "x" * printable.VALUE_CHARS + f"...[{10_000 - printable.VALUE_CHARS} more chars]"
    assert len(printable.text("y" * 10_000)) < 10_000
    assert len(printable.label("z" * 300)) < 100


def test_non_strings_are_shown_as_str() -> None:
    from bson import ObjectId

    oid = ObjectId("68ebf7fb500d92ef82221ec2")
    assert printable.value(oid) == "68ebf7fb500d92ef82221ec2"
    assert printable.value(None) == "None"
    assert printable.value({"a": "b\nc"}) == "{'a': 'b\\\\nc'}"


@settings(deadline=None)
@given(hostile_text)
def test_a_field_never_poses_as_other_fields(value: str) -> None:
    shown = printable.field(value)
    if shown.startswith('"'):
        inner = shown[1:-1]
        assert shown.endswith('"') and '"' not in inner.replace('\\"', "")
    else:
        assert shown and not any(c in shown for c in ' ="|')
