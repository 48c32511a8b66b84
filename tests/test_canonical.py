"""Canonical JSON and digests: the equality the differ relies on."""

from __future__ import annotations

import decimal
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdbctl.sdb.errors import PayloadError
from sdbctl.sdb.events import action_digest, canonical_bytes, canonical_json, check_json, loads
from sdbctl.sdb.events._canonical import _unique_keys

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


def test_integral_float_is_written_as_the_integer() -> None:
    assert canonical_json({"n": 1.0}) == canonical_json({"n": 1}) == '{"n":1}'
    assert canonical_json([2.5, -0.0, 1e16]) == "[2.5,0,10000000000000000]"


def test_keys_sorted_compact_and_utf8() -> None:
    assert canonical_json({"b": [1, 2], "a": "é"}) == '{"a":"é","b":[1,2]}'


def test_decimal_and_set_are_normalised() -> None:
    assert canonical_json({"d": decimal.Decimal("3.0"), "s": {3, 1}}) == '{"d":3,"s":[1,3]}'


def test_string_that_looks_like_a_float_is_left_alone() -> None:
    assert canonical_json({"text": "1.0, then 2e+5"}) == '{"text":"1.0, then 2e+5"}'


def test_action_digest_ignores_key_order_and_int_float_spelling() -> None:
    assert action_digest("offer", {"a": 1, "b": 2.0}) == action_digest("offer", {"b": 2, "a": 1.0})
    assert action_digest("offer", {"a": 1}) != action_digest("offer", {"a": 2})
    assert action_digest("offer", {"a": 1}) != action_digest("offer2", {"a": 1})


def test_unserialisable_payload_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="not JSON-serialisable"):
        canonical_json({"x": object()})


@given(json_values)
def test_canonical_json_is_a_fixed_point(value: Any) -> None:
    text = canonical_json(value)
    assert canonical_json(json.loads(text)) == text


@given(json_values)
def test_canonical_json_preserves_the_value(value: Any) -> None:
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, float) and not isinstance(a, bool):
            return bool(a == b)  # NaN and infinities are refused (tests/test_hostile_inputs.py)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return bool(a == b)

    assert same(value, json.loads(canonical_json(value)))


@given(st.integers(-(2**53), 2**53))
def test_int_and_float_of_same_number_share_a_digest(n: int) -> None:
    assert action_digest("a", {"n": n}) == action_digest("a", {"n": float(n)})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ([1.0], "[1]"),
        ({"a": {"b": 3.0}}, '{"a":{"b":3}}'),
        (4.0, "4"),
        ({"price": "$20.05, then 7.0}", "n": 7.5}, '{"n":7.5,"price":"$20.05, then 7.0}"}'),
        ({"phone": "+1 555", "big": 1e16}, '{"big":10000000000000000,"phone":"+1 555"}'),
    ],
)
def test_integral_floats_anywhere_are_normalised_and_strings_untouched(value: Any, text: str) -> None:
    assert canonical_json(value) == text


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats()
    | st.text(max_size=3)
    | st.sampled_from(["\ud800", 1.0, -0.0]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=8,
)


@given(_ANY)
def test_check_json_refuses_exactly_what_canonical_json_refuses(value: Any) -> None:
    """The check a whole log's object gets before it is written refuses what writing it would, with
    the same words (NaN, infinities, integers past 64 bits, lone surrogates), and nothing else."""
    try:
        canonical_bytes(value)
    except PayloadError as exc:
        with pytest.raises(PayloadError) as checked:
            check_json(value)
        assert str(checked.value) == str(exc)
    else:
        check_json(value)


def _render(node: Any, space: str) -> str:
    """JSON text of a tree whose objects are lists of (key, value) pairs (so a key may come twice)."""
    if isinstance(node, tuple):
        return "{" + f",{space}".join(f"{json.dumps(k)}:{space}{_render(v, space)}" for k, v in node) + "}"
    if isinstance(node, list):
        return "[" + f",{space}".join(_render(v, space) for v in node) + "]"
    return json.dumps(node, ensure_ascii=False)


_KEYS = st.sampled_from(["a", "b", "a:b", "é", "x\\y", '"q"', "\u2028"])
_PAIRS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(alphabet='a:"\\é\n\x01', max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(_KEYS, inner), max_size=3).map(tuple),
    max_leaves=10,
)


@given(_PAIRS, st.sampled_from(["", " ", "\n  "]), st.booleans())
def test_loads_reads_as_the_checking_parser_reads(tree: Any, space: str, as_bytes: bool) -> None:
    """The fast reading (orjson, then the colons counted) gives what the standard library's parser
    with its duplicate-key check gives, value for value and error for error: a key twice, a colon in
    a key or a text, integers beyond 64 bits, escapes, any spacing."""
    text = _render(tree, space)
    given_text: str | bytes = text.encode() if as_bytes else text
    try:
        expected: Any = json.loads(text, object_pairs_hook=_unique_keys)
    except PayloadError as exc:
        with pytest.raises(PayloadError, match=re.escape(str(exc))):
            loads(given_text, check=False)
        return
    got = loads(given_text, check=False)
    assert got == expected and json.dumps(got) == json.dumps(expected)  # 1 and 1.0, True and 1 told apart
