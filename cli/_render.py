"""Output for humans (rich tables, notes) and JSON for scripts. Formatting only; the listings' formats
(table, JSON, CSV, JSON lines) are chosen in :mod:`sdbctl.cli._listing`."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sdbctl.sdb.text import visible


def consoles() -> tuple[Console, Console]:
    """The console for output and the one for messages, as the process's streams and environment make
    them (a terminal or not, ``COLUMNS``, ``NO_COLOR``). Each writes to whatever ``sys.stdout`` /
    ``sys.stderr`` is when it prints; an in-process test run (tests/conftest.py) makes them again for
    each command line, so that what was decided at import does not outlive the environment."""
    out = Console(emoji=False)  # ":m:" in recorded text is text, not an emoji
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 160  # piped or captured output: don't squeeze tables into 80 columns
    return out, Console(stderr=True, emoji=False)


console, err_console = consoles()


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "__float__"):
        return float(value)
    return str(value)


def _json_key(key: Any) -> str:
    """A key as the text a JSON object needs: a string as it is, anything else as its JSON text
    (``1`` -> ``"1"``, ``True`` -> ``"true"``, a date as ISO-8601)."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)
    plain = _json_default(key)
    return plain if isinstance(plain, str) else json.dumps(plain)


def _plain(value: Any) -> Any:
    """``value`` with every object's keys as strings and NaN and infinities as None (as orjson writes
    them), for the standard library's writer; integers are left as they are, however big."""
    if isinstance(value, dict):
        return {_json_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_bytes(value: Any, *, indent: bool = False) -> bytes:
    """``value`` as JSON (datetimes as ISO-8601). What orjson cannot write as it is takes the standard
    library's writer instead: an integer beyond 64 bits (DuckDB's HUGEINT) is written as the JSON number
    it is, digit for digit, and an object whose keys are not strings (a DuckDB MAP) is an object keyed
    by each key's JSON text (``MAP {1: 'a'}`` is ``{"1": "a"}``)."""
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        return orjson.dumps(value, default=_json_default, option=option)
    except TypeError:  # orjson.JSONEncodeError is one
        text = json.dumps(
            _plain(value),
            default=_json_default,
            ensure_ascii=False,
            indent=2 if indent else None,
            separators=(",", ": ") if indent else (",", ":"),
        )
        return text.encode("utf-8", "backslashreplace")  # a lone surrogate as the JSON escape it reads as


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON to standard output (datetimes as ISO-8601; see :func:`json_bytes`)."""
    sys.stdout.buffer.write(json_bytes(value, indent=True) + b"\n")
    sys.stdout.flush()


def data(value: Any) -> str:
    """A recorded value for a rich markup string: control characters shown, markup escaped, so that a
    model's ``[/INST]`` or ``[link=...]`` prints as the literal text it is."""
    return escape(visible(str(value)))


def cell(value: Any, width: int | None = None) -> str:
    """A value as short table text: None as empty, lists joined, long text cut with an ellipsis."""
    if value is None:
        text = ""
    elif isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = json_bytes(value).decode()
    elif hasattr(value, "isoformat"):
        text = value.isoformat(sep=" ", timespec="seconds")
    else:
        text = str(value)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    widths: dict[str, int] | None = None,
    styles: dict[str, str] | None = None,
) -> None:
    """Render rows as a rich table on standard output."""
    widths = widths or {}
    styles = styles or {}
    table = Table(title=Text(visible(title)) if title else None, show_lines=False, header_style="bold")
    for name in columns:
        table.add_column(
            name,
            style=styles.get(name),
            overflow="fold",
            min_width=len(name) if name not in widths else min(len(name), 12),
            max_width=widths.get(name),
        )
    for row in rows:  # Text: cells are never read as markup
        table.add_row(*(Text(visible(cell(v, widths.get(c)))) for c, v in zip(columns, row, strict=True)))
    console.print(table)


def note(message: str) -> None:
    """A remark for the human reader, on stderr so it never mixes into piped output."""
    err_console.print(visible(message), style="dim", highlight=False, markup=False)
