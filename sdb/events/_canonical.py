"""Canonical JSON and digests: the text two runs must agree on for an action to count as identical.

Canonical JSON is compact, UTF-8 (no ``\\u`` escapes), has sorted keys, and writes a number the same
way whatever its Python type: an integral float (``1.0``) is written as the integer (``1``), so that
``{"n": 1}`` and ``{"n": 1.0}`` give one text and one digest.

Nothing is changed silently: what JSON cannot hold as it is raises :class:`PayloadError` rather than
being written as something else. That is NaN and the infinities (orjson writes them as ``null``, with
the digest of ``null``), two keys of one object that are one text once written (``{1: "a", "1": "b"}``
would be an object with a duplicate key), an integer outside 64 bits, a lone surrogate, and nesting
deeper than orjson writes. :func:`loads` reads JSON text (what the importers read) by the same rule.

The digest of an event is xxh3-64 of ``name``, a NUL byte, and the canonical JSON of the event's
deterministic part (an action's arguments). It is the equality fast path of the differ.
"""

from __future__ import annotations

import dataclasses
import decimal
import enum
import json
import math
import operator
import pathlib
from collections.abc import Mapping
from typing import Any, Final

import orjson
import xxhash

from sdbctl.sdb.errors import PayloadError

# string keys only: a dict with any other key fails this first write and takes the slow path, which
# checks that no two keys become one text before writing them with OPT_NON_STR_KEYS
ORJSON_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
_ANY_KEYS: Final = ORJSON_OPTIONS | orjson.OPT_NON_STR_KEYS
_INT64 = 2**63
_xxh3 = xxhash.xxh3_64_intdigest
_dumps = orjson.dumps
_isfinite = math.isfinite
_NOT_JSON: Final = "payload is not JSON-serialisable: "
# orjson's words for what it refuses, in ours
_REASONS: Final = {
    "Integer exceeds 64-bit range": "an integer outside the 64-bit range",
    "str is not valid UTF-8: surrogates not allowed": "a string holds a lone surrogate (not UTF-8)",
    "Recursion limit reached": "nested too deep",
}


def json_default(value: Any) -> Any:
    """Turn the non-JSON types an agent commonly hands us into JSON values."""
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic v2 models
        return model_dump(mode="json")
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=lambda v: orjson.dumps(v, default=json_default, option=_ANY_KEYS))
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


_ATOMS: Final = frozenset({str, int, bool, type(None)})


def _normalise(value: Any) -> Any:
    """Replace integral floats by ints, recursively, and refuse NaN and the infinities (the slow path,
    taken only when one of them may be there).

    Dispatches on the exact type first: the common JSON types cost one set lookup each.
    """
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is float or isinstance(value, float):
        if value.is_integer() and -_INT64 <= value < _INT64:
            return int(value)
        if not _isfinite(value):
            raise PayloadError(f"{_NOT_JSON}{float(value)!r} is not a JSON number (NaN and infinities are refused)")
        return float(value)
    if kind is dict or isinstance(value, Mapping):
        atoms = _ATOMS
        return {k: v if type(v) in atoms else _normalise(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        atoms = _ATOMS
        return [v if type(v) in atoms else _normalise(v) for v in value]
    if isinstance(value, str | int):  # subclasses (str enums, IntEnum) as orjson writes them
        return value
    try:
        return _normalise(json_default(value))
    except TypeError:
        return value  # orjson will name the type in its error


def _key_clash(value: Any) -> str | None:
    """Two keys of one dict that are written as the same text (``1`` and ``"1"``), anywhere in a value
    :func:`_normalise` returned, said in words; None when there are none."""
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            texts: dict[str, Any] = {}
            for key in value:
                try:
                    text = key if type(key) is str else next(iter(orjson.loads(_dumps({key: 0}, None, _ANY_KEYS))))
                except TypeError:
                    return None  # a key orjson cannot write at all: its own error says so
                if text in texts:
                    return f"keys {texts[text]!r} and {key!r} are both written as {text!r}"
                texts[text] = key
        items: Any = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return None
    for item in items:
        clash = _key_clash(item)
        if clash is not None:
            return clash
    return None


def plain_json(value: Any) -> bytes | None:
    """orjson's text of ``value`` with sorted keys, not checked: canonical JSON exactly when ``value``
    holds no integral float, NaN or infinity (a value read back from canonical JSON, for one); None
    when orjson cannot write it."""
    try:
        return _dumps(value, json_default, ORJSON_OPTIONS)
    except TypeError:
        return None


def same_json(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are one JSON value as canonical JSON tells them apart (``True`` is not
    ``1``): the same object, or equal values that orjson writes alike."""
    if a is b:
        return True
    try:
        if a != b:
            return False
    except (ValueError, TypeError):  # a comparison with no truth value (a numpy array): the texts decide
        pass
    text = plain_json(a)
    return text is not None and text == plain_json(b)


def shared_prefix(before: list[Any], items: list[Any]) -> int:
    """How many leading items of ``items`` are those of ``before``, as canonical JSON tells values
    apart (``True`` is not ``1``)."""
    if len(before) <= len(items) and all(map(operator.is_, before, items)):  # the same objects: a log's history
        return len(before)
    n, limit = 0, min(len(before), len(items))
    while n < limit and same_json(before[n], items[n]):
        n += 1
    return n


def no_integral_float(out: bytes) -> bool:
    """True when orjson's text surely holds no integral float, so it is already canonical.

    orjson writes an integral float as ``1.0`` (always followed by ``,``, ``}``, ``]`` or the end)
    or in exponent form ``1e+16``. Two finds rule both out (a find of ``+``, then of ``.0``: most
    payloads have neither), and each ``.0`` found is looked at. A match inside a string only sends
    the value down the slow (and correct) path.
    """
    find = out.find
    if find(b"+") >= 0:
        return False
    end = len(out) - 2
    at = find(b".0")
    while at >= 0:
        if at == end or out[at + 2] in _AFTER_NUMBER:
            return False
        at = find(b".0", at + 1)
    return True


_AFTER_NUMBER: Final = frozenset(b",}]")


def canonical_bytes(value: Any) -> bytes:
    """Canonical JSON of ``value`` as UTF-8 bytes. Raises :class:`PayloadError` if it is not JSON, or
    not JSON as it is (see the module docstring)."""
    if value is None:  # a gate's reason, mostly: its "null" would send it down the slow path below
        return b"null"
    if type(value) is str:  # a gate's decision, mostly: text is canonical as orjson writes it
        try:
            return _dumps(value)
        except TypeError:  # a lone surrogate
            return _slow(value, keys=False)
    try:
        out = _dumps(value, json_default, ORJSON_OPTIONS)  # positional: keywords cost ~0.3 us here
    except TypeError:  # orjson.JSONEncodeError is one: a key that is not a string, or not JSON at all
        return _slow(value, keys=True)
    if type(value) is dict:  # the common flat dict: its value types decide, exactly and cheaply
        for item in value.values():
            kind = type(item)
            if kind is float:
                if not _plain_floats(item):  # the one rule of a float written as it is
                    return _slow(value, keys=False)
            elif kind not in _ATOMS:
                break  # nested: let the text decide
        else:
            return out
    # orjson writes NaN and the infinities as null: a "null" anywhere (also inside a string) is looked at
    if no_integral_float(out) and out.find(b"null") < 0:
        return out
    if _plain_floats(value):  # a model's answer with "content": null, mostly: its floats were fine
        return out
    return _slow(value, keys=False)


def written_as_is(value: Any) -> bytes | None:
    """orjson's text of ``value`` (:func:`plain_json`), or None where it is not the value's own:
    orjson writes NaN and the infinities as ``null`` (a ``null`` in the text sends the value through a
    walk of its floats; anything the walk cannot tell, such as a numpy value, gives None). Not
    canonical JSON: an integral float stays ``1.0``."""
    text = plain_json(value)
    if text is not None and text.find(b"null") >= 0 and not _plain_floats(value, integral=True):
        return None
    return text


def check_json(value: Any) -> None:
    """Raise :class:`PayloadError` where :func:`canonical_bytes` would, without writing the canonical
    text: a whole log's object is checked before its parts are written, and an integral float in it
    (a ``"reward": 1.0``), which canonical JSON only rewrites, no longer costs a copy of it all."""
    if written_as_is(value) is None:
        canonical_bytes(value)  # says what is wrong (or writes a value whose keys are not strings)


def _plain_floats(value: Any, integral: bool = False) -> bool:
    """True when ``value`` is made of the plain JSON types only and none of its floats is integral
    (unless ``integral``), NaN or infinite, so orjson's text is already canonical (or, ``integral``,
    canonical JSON would keep it). Only looks (the slow path rebuilds the value); any other type
    sends the value down the slow path."""
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind is float:
        return (integral or not value.is_integer()) and _isfinite(value)
    else:
        return kind in _ATOMS
    atoms = _ATOMS
    for item in items:  # noqa: SIM110 - a loop: all() over a generator costs more per item
        if type(item) not in atoms and not _plain_floats(item, integral):
            return False
    return True


def _slow(value: Any, *, keys: bool) -> bytes:
    """The walk of the value: integral floats written as ints, NaN and infinities refused, and (with
    ``keys``: some key is not a string) keys that would be written as one text refused."""
    try:
        if keys:  # not JSON at all, or too deep to walk: orjson's own error says why
            _dumps(value, json_default, _ANY_KEYS)
        normal = _normalise(value)
        clash = _key_clash(normal) if keys else None
        if clash is not None:
            raise PayloadError(_NOT_JSON + clash)
        return _dumps(normal, json_default, _ANY_KEYS)
    except TypeError as exc:
        raise PayloadError(_NOT_JSON + _REASONS.get(str(exc), str(exc))) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refused when a key is in it twice (a dict would keep the last)."""
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise PayloadError(f"JSON object has the key {key!r} twice")
            seen.add(key)
    return out


_DECODER: Final = json.JSONDecoder(object_pairs_hook=_unique_keys)


_DIGITS: Final = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))  # every digit a 0, the rest spaces
_LONG_NUMBER: Final = b"0" * 19


def _parse(text: str | bytes) -> Any:
    """``json.loads(text, object_pairs_hook=_unique_keys)``, about four times faster.

    orjson reads the text first, when nothing in it can read otherwise: no ``\\u`` escape (a lone
    surrogate, or a colon written as one) and no run of 19 digits (an integer beyond 64 bits, which
    orjson reads as a float). Then a key given twice is the one thing orjson reads silently (it
    keeps the last), and it shows in the colons: each member of an object has one, and a string's
    colons are its own, so the value orjson writes back holds as many colons as the text exactly when
    no member was dropped. Anything else (not UTF-8, NaN, too deep, a BOM, a key twice) is read by
    the standard library's parser, whose errors say what is wrong."""
    raw = text.encode(errors="surrogatepass") if isinstance(text, str) else text
    if b"\\u" not in raw and raw.translate(_DIGITS).find(_LONG_NUMBER) < 0:
        try:
            value = orjson.loads(raw)
            if _dumps(value).count(b":") == raw.count(b":"):
                return value
        except (orjson.JSONDecodeError, TypeError):
            pass
    if isinstance(text, str):
        if text.startswith("\ufeff"):  # json.loads's own error for it
            return json.loads(text, object_pairs_hook=_unique_keys)
        return _DECODER.decode(text)
    return _DECODER.decode(text.decode(json.detect_encoding(text), "surrogatepass"))


def loads(text: str | bytes, *, check: bool = True) -> Any:
    """JSON text read into a value that canonical JSON writes back as it is: what importers read.

    Raises :class:`json.JSONDecodeError` for text that is not JSON, and :class:`PayloadError` for JSON
    that cannot be kept as it is: nesting too deep to read, an object with a key twice (the parser
    keeps the last), an integer of more than 4,300 digits; and, unless ``check`` is False (the caller
    checks the parts it keeps with :func:`canonical_bytes`), NaN or an infinity (Python's parser takes
    ``NaN``, ``Infinity`` and ``1e400``), an integer outside 64 bits, a lone surrogate (``"\\ud800"``).
    """
    try:
        value = _parse(text)
    except RecursionError:
        raise PayloadError("JSON nested too deep") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # int(): more digits than Python converts
        raise PayloadError(f"JSON holds a number too long to read ({str(exc).split(':', 1)[0]})") from None
    if not check:
        return value
    try:
        canonical_bytes(value)
    except PayloadError as exc:
        raise PayloadError(f"JSON cannot be kept as it is: {str(exc).removeprefix(_NOT_JSON)}") from None
    return value


def json_or_text(value: Any) -> Any:
    """A value held as JSON text, parsed when :func:`loads` keeps it; other text (not JSON, or JSON that
    cannot be kept as it is, such as a tool's ``{"mean": NaN}``) and every other value as they are, so
    nothing is changed on the way in."""
    if isinstance(value, str):
        try:
            return loads(value)
        except (ValueError, PayloadError):  # json.JSONDecodeError is a ValueError
            return value
    return value


def canonical_json(value: Any) -> str:
    """Canonical JSON of ``value`` as text: sorted keys, compact, UTF-8, ``1.0`` written as ``1``."""
    return canonical_bytes(value).decode()


def digest(name: str, body: bytes) -> int:
    """xxh3-64 of ``name``, a NUL byte and an already canonical JSON ``body``, as an unsigned int."""
    return _xxh3(name.encode() + b"\x00" + body)


def action_digest(name: str, args: Any) -> int:
    """The digest of an action: its name plus its canonical arguments."""
    return digest(name, canonical_bytes(args))
