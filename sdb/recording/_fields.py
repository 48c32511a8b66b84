"""The checks of an event's fields, made when the event is recorded (never at flush, where a bad value
would lose the whole part), and the small conversions the recording methods share."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

from sdbctl.sdb.errors import PayloadError

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def wrong_field(name: Any, step: Any, parent: Any, actor: Any, pattern: Any) -> str:
    """Which event field has the wrong type, in words (``Session._put`` tests the common case in one
    expression and calls this only when that fails)."""
    for label, value, want in (
        ("name", name, "a string"),
        ("step", step, "a string or None"),
        ("parent", parent, "an int seq or None"),
        ("actor", actor, "a string or None"),
        ("pattern", pattern, "a string or None"),
    ):
        if label == "name" and type(value) is not str:
            return f"{label} must be {want}, not {type(value).__name__}"
        if label == "parent" and value is not None and type(value) is not int:
            return f"{label} must be {want}, not {type(value).__name__}"
        if label == "parent" and value is not None and not INT64_MIN <= value <= INT64_MAX:
            return f"parent {value} is out of the range of a seq"
        if label not in ("name", "parent") and value is not None and type(value) is not str:
            return f"{label} must be {want}, not {type(value).__name__}"
        if label != "parent" and not utf8(value):
            return f"{label} {value!r} cannot be written as UTF-8 (a lone surrogate)"
    return "an event field has the wrong type"


def utf8(*texts: str | None) -> bool:
    """True when every text can be written as UTF-8 (none holds a lone surrogate). ASCII, the common
    case, is known without encoding."""
    for text in texts:
        if text is not None and not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                return False
    return True


def int_clock(clock: Callable[[], Any]) -> Callable[[], int]:
    """A clock of any integer type (numpy's too, from importers) as one that returns a plain int."""

    def now() -> int:
        return operator.index(clock())

    return now


def int64(value: Any) -> int | None:
    """An int that fits the int64 columns (tokens), else None."""
    return value if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX else None


def check_count(label: str, value: Any) -> None:
    """A token count: None, or an int in the int64 range."""
    if value is not None and (type(value) is bool or not isinstance(value, int)):
        raise PayloadError(f"{label} must be an integer, not {type(value).__name__}")
    if value is not None and int64(value) is None:
        raise PayloadError(f"{label} {value} is out of range")


def check_latency(latency_ms: Any) -> float:
    """A latency in ms given (not None): a number, taken as a float."""
    if type(latency_ms) is bool or not isinstance(latency_ms, int | float):
        raise PayloadError(f"latency_ms must be a number, not {type(latency_ms).__name__}")
    try:
        return float(latency_ms)
    except OverflowError:
        raise PayloadError(f"latency_ms {latency_ms} is too large") from None


def usage(response: Any) -> tuple[int | None, int | None]:
    """Token counts from an OpenAI (``prompt_tokens``) or Anthropic (``input_tokens``) usage block."""
    if not isinstance(response, Mapping):
        return None, None
    block = response.get("usage")
    if not isinstance(block, Mapping):
        return None, None
    tin = block.get("prompt_tokens", block.get("input_tokens"))
    tout = block.get("completion_tokens", block.get("output_tokens"))
    return int64(tin), int64(tout)
