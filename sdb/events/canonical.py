"""Canonical JSON and digests: the text two runs must agree on for an action to count as identical.

Canonical JSON is compact, UTF-8 (no ``\\u`` escapes), has sorted keys, and writes a number the same
way whatever its Python type: an integral float (``1.0``) is written as the integer (``1``), so that
``{"n": 1}`` and ``{"n": 1.0}`` give one text and one digest. NaN and infinities become ``null``.

The digest of an event is xxh3-64 of ``name``, a NUL byte, and the canonical JSON of the event's
deterministic part (an action's arguments). It is the equality fast path of the differ.
"""

from __future__ import annotations

import dataclasses
import decimal
import enum
import pathlib
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson
import xxhash

from sdb.errors import PayloadError
from sdb.native import native

ORJSON_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_INT64 = 2**63
_xxh3 = xxhash.xxh3_64_intdigest
_dumps = orjson.dumps


def json_default(value: Any) -> Any:
    """Turn the non-JSON types an agent commonly hands us into JSON values."""
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic v2 models
        return model_dump(mode="json")
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=lambda v: orjson.dumps(v, default=json_default, option=ORJSON_OPTIONS))
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
    """Replace integral floats by ints, recursively (the slow path, taken only when one may exist).

    Dispatches on the exact type first: the common JSON types cost one set lookup each.
    """
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is float or isinstance(value, float):
        if value.is_integer() and -_INT64 <= value < _INT64:
            return int(value)
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


def no_integral_float(out: bytes) -> bool:
    """True when orjson's text surely holds no integral float, so it is already canonical.

    orjson writes an integral float as ``1.0`` (always followed by ``,``, ``}``, ``]`` or the end)
    or in exponent form ``1e+16``. Plain substring finds rule both out: a one-byte find for the dot
    first (most payloads have none), then three three-byte finds. A match inside a string only
    sends the value down the slow (and correct) path.
    """
    if out.find(b"+") >= 0:
        return False
    if out.find(b".") < 0:
        return True
    return out.find(b".0,") < 0 and out.find(b".0}") < 0 and out.find(b".0]") < 0 and not out.endswith(b".0")


def _canonical_bytes(value: Any) -> bytes:
    """Canonical JSON of ``value`` as UTF-8 bytes. Raises :class:`PayloadError` if it is not JSON."""
    try:
        out = _dumps(value, json_default, ORJSON_OPTIONS)  # positional: keywords cost ~0.3 us here
        if type(value) is dict:  # the common flat dict: its value types decide, exactly and cheaply
            for item in value.values():
                kind = type(item)
                if kind is float:
                    if item.is_integer():
                        return _dumps(_normalise(value), json_default, ORJSON_OPTIONS)
                elif kind not in _ATOMS:
                    break  # nested: let the text decide
            else:
                return out
        if no_integral_float(out):
            return out
        return _dumps(_normalise(value), json_default, ORJSON_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise PayloadError(f"payload is not JSON-serialisable: {exc}") from None


if native is not None:
    # the same function in C: it reads orjson's text the same way, walks the value only when the text
    # shows a possible integral float, and hands what it does not know (and every error) to the
    # Python function above
    native.configure(_dumps, json_default, ORJSON_OPTIONS, _canonical_bytes)
    canonical_bytes: Callable[[Any], bytes] = native.canonical_bytes
else:
    canonical_bytes = _canonical_bytes


def canonical_json(value: Any) -> str:
    """Canonical JSON of ``value`` as text: sorted keys, compact, UTF-8, ``1.0`` written as ``1``."""
    return canonical_bytes(value).decode()


def _digest(name: str, body: bytes) -> int:
    """xxh3-64 of ``name``, a NUL byte and an already canonical JSON ``body``, as an unsigned int."""
    return _xxh3(name.encode() + b"\x00" + body)


digest: Callable[[str, bytes], int] = native.digest if native is not None else _digest


def action_digest(name: str, args: Any) -> int:
    """The digest of an action: its name plus its canonical arguments."""
    return digest(name, canonical_bytes(args))
