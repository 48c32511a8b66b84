"""Output for humans (rich tables, notes) and JSON for scripts. Formatting only; the listings' formats
(table, JSON, CSV, JSON lines) are chosen in :mod:`sdbctl.cli._listing`."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson
from rich.cells import cell_len
from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sdbctl.sdb.text import visible

FOLD_AFTER: Final = 20
"""A word of JSON text (holding a quote or a brace: a payload) longer than this may be folded in a table
too narrow for it; no other word (an id, a path, a status) is ever broken."""
_JSON_WORD: Final = re.compile(r'["{}]')


class WholeWords(Console):
    """A console that never breaks a word: text wraps at spaces, and a line holding a word longer than
    the terminal is wide (a path, a long run id) is left for the terminal to wrap (rich's soft wrap),
    so that rich never folds or cuts that word: it stays one line to copy."""

    def print(self, *objects: Any, soft_wrap: bool | None = None, **kw: Any) -> None:
        if soft_wrap is None and any(self._too_long(o, kw.get("markup")) for o in objects):
            soft_wrap = True
        super().print(*objects, soft_wrap=soft_wrap, **kw)

    def _too_long(self, text: object, markup: bool | None) -> bool:
        """Whether ``text`` (a string to print, read as markup unless ``markup`` is False) holds a word
        wider than the console."""
        if not isinstance(text, str):
            return False  # a table lays itself out (print_table)
        if markup is not False:
            with contextlib.suppress(MarkupError):  # rich's print says what is wrong with it
                text = Text.from_markup(text).plain
        return _longest_word(text) > self.width


def consoles() -> tuple[Console, Console]:
    """The console for output and the one for messages, as the process's streams and environment make
    them (a terminal or not, ``COLUMNS``, ``NO_COLOR``), each one that never breaks a word
    (:class:`WholeWords`). Each writes to whatever ``sys.stdout`` / ``sys.stderr`` is when it prints; an
    in-process test run (tests/conftest.py) makes them again for each command line, so that what was
    decided at import does not outlive the environment."""
    out = WholeWords(emoji=False)  # ":m:" in recorded text is text, not an emoji
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 160  # piped or captured output: don't squeeze tables into 80 columns
    return out, WholeWords(stderr=True, emoji=False)


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


def print_json_array(values: Iterable[Any]) -> None:
    """Write ``values`` as :func:`print_json` writes their list, one at a time: a long run's events
    (``show --full --json``) are never all held. Each value is written as :func:`json_bytes` writes it
    (one that needs the standard library's writer, a HUGEINT, no longer has every other value written
    by that writer too). A read that fails partway (a run found damaged) leaves the array unclosed
    on standard output, and its one-line error on standard error with exit 2, as ``--jsonl`` does."""
    out = sys.stdout.buffer
    first = True
    for value in values:
        out.write((b"[\n  " if first else b",\n  ") + json_bytes(value, indent=True).replace(b"\n", b"\n  "))
        first = False
    out.write(b"[]\n" if first else b"\n]\n")
    out.flush()


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
    drop: Sequence[str] = (),
) -> None:
    """Render rows as a rich table on standard output, as wide as the terminal allows.

    No id, path, status or word is broken across lines: a cell wraps at its spaces only, so a column
    is never narrower than its longest word (but for JSON text: :data:`FOLD_AFTER`). When the columns
    do not fit, those named in ``drop`` (the least useful first) are left out, as few as needed, with a
    note on stderr; when even the rest do not fit, the table is printed wider than the terminal, which
    wraps its lines, with a note."""
    widths = widths or {}
    styles = styles or {}
    names = [visible(c) for c in columns]
    texts = [[visible(cell(v, widths.get(c))) for c, v in zip(columns, row, strict=True)] for row in rows]
    shown, sizes = _layout(names, texts, console.width, [columns.index(c) for c in drop if c in columns])
    table = Table(title=Text(visible(title)) if title else None, show_lines=False, header_style="bold")
    for i, size in zip(shown, sizes, strict=True):  # Text: names and cells are never read as markup
        table.add_column(Text(names[i]), style=styles.get(columns[i]), overflow="fold", width=size)
    for row in texts:
        table.add_row(*(Text(row[i]) for i in shown))
    width = sum(sizes) + _RULES * len(sizes) + 1
    if width > console.width:  # rich would squeeze the columns and break words: the terminal wraps instead
        table.width = width
    console.print(table, crop=width <= console.width)
    left_out = [names[i] for i in range(len(columns)) if i not in shown]
    if left_out:
        note(f"left out to fit {console.width} columns: {', '.join(left_out)} (a wider terminal shows them)")
    if width > console.width:
        note(f"the table needs {width} columns to keep its words whole; the terminal has {console.width}")


_RULES: Final = 3  # a table's own width per column: a space either side and a rule (and one more rule)


def _longest_word(text: str) -> int:
    return max((cell_len(w) for w in text.split()), default=0)


def _least(text: str) -> int:
    """The narrowest a cell of ``text`` can be without breaking a word (a JSON word: at most FOLD_AFTER)."""
    return max((min(cell_len(w), FOLD_AFTER) if _JSON_WORD.search(w) else cell_len(w) for w in text.split()), default=0)


def _layout(
    names: Sequence[str], texts: Sequence[Sequence[str]], width: int, drop: Sequence[int]
) -> tuple[list[int], list[int]]:
    """The columns a table of ``texts`` shows within ``width`` and the width of each (without padding).

    Each column's least width is its widest word (:func:`_least`; the header's too). The ``drop``
    columns go, in order, until the least widths fit; then each goes back, the most useful first, if
    it fits after all. What is left over goes first to whole JSON words, then to each column up to its
    widest cell, the smallest needs first."""
    columns = [[names[i], *(row[i] for row in texts)] for i in range(len(names))]
    natural = [max(cell_len(t) for t in col) for col in columns]
    longest = [max(1, max(_longest_word(t) for t in col)) for col in columns]
    least = [max(1, max(_least(t) for t in col)) for col in columns]

    def need(shown: Iterable[int]) -> int:
        return sum(least[i] + _RULES for i in shown) + 1

    shown = list(range(len(names)))
    dropped: list[int] = []
    for i in drop:
        if need(shown) <= width:
            break
        shown.remove(i)
        dropped.append(i)
    for i in reversed(dropped):
        if need([*shown, i]) <= width:
            shown = sorted([*shown, i])
    sizes = {i: least[i] for i in shown}
    spare = width - need(shown)
    for i in sorted((i for i in shown if longest[i] > sizes[i]), key=lambda i: longest[i] - sizes[i]):
        if longest[i] - sizes[i] <= spare:
            spare -= longest[i] - sizes[i]
            sizes[i] = longest[i]
    wanting = sorted((i for i in shown if natural[i] > sizes[i]), key=lambda i: natural[i] - sizes[i])
    for k, i in enumerate(wanting):
        more = min(natural[i] - sizes[i], max(spare, 0) // (len(wanting) - k))
        sizes[i] += more
        spare -= more
    return shown, [sizes[i] for i in shown]


def note(message: str) -> None:
    """A remark for the human reader, on stderr so it never mixes into piped output."""
    err_console.print(visible(message), style="dim", highlight=False, markup=False)
