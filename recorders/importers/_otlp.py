"""OTLP/JSON trace files read into plain spans, every problem named ``FILE:LINE: what is wrong``.

Two layouts: the OpenTelemetry Collector's file exporter (one ``ExportTraceServiceRequest`` JSON
object per line) and a single OTLP/JSON object (pretty-printed or not). Field names are accepted in
the OTLP/JSON spelling (``resourceSpans``, ``traceId``) and in the protobuf one (``resource_spans``,
``trace_id``); ids as hex (the OTLP/JSON rule) or base64 (protobuf's default JSON mapping).

A document is JSON that canonical JSON keeps as it is (:func:`sdb.events.loads`: not nested
too deep, no NaN or infinity, no key twice, no integer outside 64 bits, no lone surrogate), and the
values in it are what OTLP says they are: an ``intValue`` is an int64, a ``doubleValue`` a finite
number (protobuf's JSON spells NaN and infinities as strings: refused, as canonical JSON would), a
time a count of nanoseconds in 64 bits.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbctl.recorders.importers._input import read_text
from sdbctl.sdb.errors import PayloadError, SdbError
from sdbctl.sdb.events import loads

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class BadSpan(ValueError):
    """A span or line that cannot be imported; ``where`` is its place in the document."""


@dataclass
class Span:
    file: str
    line: int
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status_code: int = 0
    status_message: str = ""
    order: int = 0  # position in the input, the tie-break of equal start times


def _shown(value: Any) -> str:
    """``repr(value)``, cut to a readable length (a value in an error message may be megabytes)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _get(obj: Mapping[str, Any], camel: str) -> Any:
    """``obj[camel]``, or its snake_case spelling."""
    if camel in obj:
        return obj[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(snake)


def any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value."""
    if not isinstance(value, Mapping):
        raise BadSpan(f"attribute value {_shown(value)} is not an OTLP AnyValue object")
    for key in ("stringValue", "string_value"):
        if key in value:
            return value[key]
    for key in ("boolValue", "bool_value"):
        if key in value:
            if not isinstance(value[key], bool):  # bool("false") would be True
                raise BadSpan(f"boolValue {_shown(value[key])} is not true or false")
            return value[key]
    for key in ("intValue", "int_value"):
        if key in value:
            try:
                number = int(value[key])
            except (TypeError, ValueError, OverflowError):
                raise BadSpan(f"intValue {_shown(value[key])} is not an integer") from None
            if not _INT64_MIN <= number <= _INT64_MAX:
                raise BadSpan(f"intValue {_shown(value[key])} is outside the 64-bit range of an OTLP int")
            return number
    for key in ("doubleValue", "double_value"):
        if key in value:
            try:
                double = float(value[key])
            except (TypeError, ValueError, OverflowError):
                raise BadSpan(f"doubleValue {_shown(value[key])} is not a number") from None
            if not math.isfinite(double):
                raise BadSpan(f"doubleValue {_shown(value[key])} is not a finite number (NaN and infinities refused)")
            return double
    array = _get(value, "arrayValue")
    if array is not None:
        values = array.get("values", []) if isinstance(array, Mapping) else None
        if not isinstance(values, list):
            raise BadSpan("arrayValue.values is not a list")
        return [any_value(v) for v in values]
    kvlist = _get(value, "kvlistValue")
    if kvlist is not None:
        values = kvlist.get("values", []) if isinstance(kvlist, Mapping) else None
        if not isinstance(values, list):
            raise BadSpan("kvlistValue.values is not a list")
        return attributes(values)
    raw = _get(value, "bytesValue")
    if raw is not None:
        return raw
    return None  # an empty AnyValue


def attributes(items: Any) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise BadSpan(f"attributes must be a list of key/value objects, not {type(items).__name__}")
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise BadSpan(f"attribute {_shown(item)} has no string key")
        out[item["key"]] = any_value(item.get("value", {}))
    return out


def _span_id(value: Any, what: str, size: int) -> str:
    """A trace or span id as lowercase hex: hex as given, or base64 of ``size`` bytes."""
    if not isinstance(value, str) or not value:
        raise BadSpan(f"no {what}")
    text = value.strip()
    if len(text) == size * 2:
        try:
            int(text, 16)
            return text.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == size:
        return raw.hex()
    raise BadSpan(f"{what} {_shown(value)} is neither {size * 2} hex digits nor base64 of {size} bytes")


def _nanos(value: Any, what: str) -> int:
    try:
        nanos = int(value)
    except (TypeError, ValueError, OverflowError):
        raise BadSpan(f"{what} {_shown(value)} is not an integer count of nanoseconds") from None
    if not 0 <= nanos <= _INT64_MAX:
        raise BadSpan(f"{what} {_shown(value)} is not a count of nanoseconds since 1970 in 64 bits")
    return nanos


def _list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = _get(obj, key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadSpan(f"{where}.{key} must be a list, not {type(value).__name__}")
    return value


def spans_of(doc: Any, file: str, line: int) -> Iterator[Span | BadSpan]:
    """The spans of one ``ExportTraceServiceRequest``; a bad span is yielded as its error."""
    if not isinstance(doc, Mapping):
        raise BadSpan(f"expected an OTLP trace export object, got {type(doc).__name__}")
    if _get(doc, "resourceSpans") is None:
        raise BadSpan("not an OTLP trace export (no resourceSpans)")
    for r, resource in enumerate(_list(doc, "resourceSpans", "")):
        if not isinstance(resource, Mapping):
            raise BadSpan(f"resourceSpans[{r}] is not an object")
        scopes = _list(resource, "scopeSpans", f"resourceSpans[{r}]") or _list(
            resource, "instrumentationLibrarySpans", f"resourceSpans[{r}]"
        )
        for s, scope in enumerate(scopes):
            if not isinstance(scope, Mapping):
                raise BadSpan(f"resourceSpans[{r}].scopeSpans[{s}] is not an object")
            for n, raw in enumerate(_list(scope, "spans", f"resourceSpans[{r}].scopeSpans[{s}]")):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]"
                try:
                    yield _span(raw, file, line)
                except BadSpan as exc:
                    label = f" ({_shown(raw.get('name'))})" if isinstance(raw, Mapping) and raw.get("name") else ""
                    yield BadSpan(f"{where}{label}: {exc}")


def _span(raw: Any, file: str, line: int) -> Span:
    if not isinstance(raw, Mapping):
        raise BadSpan(f"a span must be an object, not {type(raw).__name__}")
    name = raw.get("name", "")
    if not isinstance(name, str):
        raise BadSpan(f"name must be a string, not {type(name).__name__}")
    parent = _get(raw, "parentSpanId")
    status = raw.get("status") or {}
    if not isinstance(status, Mapping):
        raise BadSpan("status must be an object")
    code = status.get("code", 0)
    if not isinstance(code, int | str) or isinstance(code, bool):
        raise BadSpan(f"status.code {_shown(code)} is not a status code")
    events = []
    for e, event in enumerate(_list(raw, "events", "span")):
        if not isinstance(event, Mapping) or not isinstance(event.get("name"), str):
            raise BadSpan(f"events[{e}] has no name")
        events.append((event["name"], attributes(event.get("attributes"))))
    start = _nanos(_get(raw, "startTimeUnixNano"), "startTimeUnixNano")
    return Span(
        file=file,
        line=line,
        trace_id=_span_id(_get(raw, "traceId"), "traceId", 16),
        span_id=_span_id(_get(raw, "spanId"), "spanId", 8),
        parent_id=_span_id(parent, "parentSpanId", 8) if parent else None,
        name=name,
        start_ns=start,
        end_ns=_nanos(_get(raw, "endTimeUnixNano") or start, "endTimeUnixNano"),
        attributes=attributes(raw.get("attributes")),
        events=events,
        status_code=_status_code(code),
        status_message=str(status.get("message") or ""),
    )


def _status_code(code: int | str) -> int:
    """0 unset, 1 ok, 2 error; OTLP/JSON may spell it as the enum name."""
    if isinstance(code, int):
        return code
    names = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
    if code in names:
        return names[code]
    if code.isdigit() and len(code) <= 9:
        return int(code)
    raise BadSpan(f"status.code {_shown(code)} is not a status code")


def _documents(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, parsed object) of each document in ``path``; a bad line raises ``FILE:LINE``."""
    text = read_text(path, BadSpan)
    stripped = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not stripped:
        return
    pretty = stripped[0][1].strip() in ("{", "[")
    try:
        whole = loads(text)
    except json.JSONDecodeError as exc:
        if pretty:  # one pretty-printed object: its own parse error says where
            raise BadSpan(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except PayloadError as exc:  # JSON, but not as it can be kept: one document says where it starts
        if pretty or len(stripped) == 1:
            raise BadSpan(f"{path}:{stripped[0][0]}: {exc}") from None
    else:
        if isinstance(whole, list):  # a JSON array of export objects
            for item in whole:
                yield stripped[0][0], item
        else:
            yield stripped[0][0], whole
        return
    for number, line in stripped:
        try:
            yield number, loads(line)
        except json.JSONDecodeError as exc:
            yield number, BadSpan(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})")
        except PayloadError as exc:
            yield number, BadSpan(f"{path}:{number}: {exc}")


def read_spans(paths: list[Path], *, skip_bad: bool) -> tuple[list[Span], int]:
    """Every span of ``paths``, all files read before anything is returned; the first problem raises
    (``skip_bad``: counted and skipped)."""
    spans: list[Span] = []
    bad = 0
    for path in paths:
        try:
            for number, doc in _documents(path):
                problems: list[BadSpan] = []
                if isinstance(doc, BadSpan):
                    problems.append(doc)
                else:
                    try:
                        for found in spans_of(doc, str(path), number):
                            if isinstance(found, BadSpan):
                                problems.append(BadSpan(f"{path}:{number}: {found}"))
                            else:
                                found.order = len(spans)
                                spans.append(found)
                    except BadSpan as exc:
                        problems.append(BadSpan(f"{path}:{number}: {exc}"))
                if problems and not skip_bad:
                    raise SdbError(str(problems[0]))
                bad += len(problems)
        except BadSpan as exc:  # the whole file (binary, broken pretty JSON)
            if not skip_bad:
                raise SdbError(str(exc)) from None
            bad += 1
    return spans, bad
