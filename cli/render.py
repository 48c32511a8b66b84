"""Output for humans (rich tables) and for scripts (JSON, CSV, NDJSON). Formatting only."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console()
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = 160  # piped or captured output: don't squeeze tables into 80 columns
err_console = Console(stderr=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "__float__"):
        return float(value)
    return str(value)


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON to standard output (datetimes as ISO-8601)."""
    sys.stdout.buffer.write(
        orjson.dumps(value, default=_json_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
    )
    sys.stdout.flush()


def print_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a header and rows as CSV to standard output; nested values as JSON text."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell_csv(v) for v in row])


def _cell_csv(value: Any) -> Any:
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=_json_default).decode()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


# C0 and C1 control characters (and DEL): a recorded text may carry terminal escape sequences
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROL.update({0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"})


def visible(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\n``): recorded text is
    data, and must not move the cursor, retitle the terminal or hide what follows."""
    return text.translate(_CONTROL)


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
        text = orjson.dumps(value, default=_json_default).decode()
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
