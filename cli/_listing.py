"""The output formats every listing shares (``runs``, ``show``, ``query``), declared and written once.

A table for people (the default); for scripts ``--json`` (one document: an array of row objects),
``--csv`` (a header, then one line per row) or ``--jsonl`` (one object per line, for streams and
``jq -c``). A command declares the three flags with :data:`JsonFlag`, :data:`CsvFlag` and
:data:`JsonlFlag`, turns them into one :class:`Format` with :func:`pick_format`, and hands its rows to
:func:`emit`. rich is imported only when something is printed, so ``sdbctl --help`` stays fast.
"""

from __future__ import annotations

import csv
import enum
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.text import csv_text, visible

if TYPE_CHECKING:
    import pyarrow as pa


class Format(enum.StrEnum):
    """How a listing prints its rows."""

    table = "table"
    json = "json"
    csv = "csv"
    jsonl = "jsonl"


JsonFlag = Annotated[
    bool, typer.Option("--json", help="One JSON document for scripts: an array with one object per row.")
]
CsvFlag = Annotated[
    bool,
    typer.Option("--csv", help="CSV: a header of column names, then one line per row; lists and objects as JSON."),
]
JsonlFlag = Annotated[bool, typer.Option("--jsonl", help="JSON lines: one object per row, each on its own line.")]

Row = Mapping[str, Any] | Sequence[Any]
MORE: Final = "use --limit 0 to show all, or --json, --csv or --jsonl"


def pick_format(*, json: bool, csv: bool, jsonl: bool) -> Format:
    """The one format the flags ask for (a table when none); two at once is a one-line usage error."""
    given = [f for f, on in ((Format.json, json), (Format.csv, csv), (Format.jsonl, jsonl)) if on]
    if len(given) > 1:
        flags = [f"--{f}" for f in given]
        raise UsageError(f"give one output format, not {', '.join(flags[:-1])} and {flags[-1]}")
    return given[0] if given else Format.table


@dataclass(frozen=True)
class TableView:
    """How the default table shows the rows; the other formats always carry every column and row.

    ``columns`` picks and orders what the table shows (default: every column); ``headers``,
    ``widths``, ``styles`` and ``cells`` (a function making a value's table text) are keyed by column;
    ``limit`` cuts the table to its first rows (0: all) with a note naming ``noun``; ``empty`` is the
    note printed instead of an empty table; ``drop`` names the columns a terminal too narrow for all of
    them leaves out, the least useful first (see :func:`sdbctl.cli._render.print_table`)."""

    columns: Sequence[str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    title: str | None = None
    widths: Mapping[str, int] = field(default_factory=dict)
    styles: Mapping[str, str] = field(default_factory=dict)
    cells: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    limit: int = 0
    noun: str = "rows"
    empty: str | None = None
    drop: Sequence[str] = ()


def emit(
    rows: Iterable[Row] | pa.Table,
    columns: Sequence[str],
    fmt: Format,
    view: TableView | None = None,
    *,
    json_text: Collection[str] = (),
) -> None:
    """Print ``rows`` to standard output as ``fmt``.

    A row is a mapping keyed by the column names or a sequence in ``columns`` order; an Arrow table
    is read batch by batch. The JSON forms write an object per row with exactly ``columns``, in order;
    CSV writes the same values as text (None empty, booleans true/false, lists and objects as JSON),
    control and format characters shown as escapes as in the table (a terminal reads CSV too).
    The ``json_text`` columns hold JSON values of any type (a payload): CSV and the table write each
    as its JSON text."""
    records, total = _records(rows, columns)
    if fmt is Format.json:
        from sdbctl.cli._render import print_json_array

        print_json_array(records)
    elif fmt is Format.jsonl:
        from sdbctl.cli._render import json_bytes

        out = sys.stdout.buffer
        for record in records:
            out.write(json_bytes(record) + b"\n")
        out.flush()
    elif fmt is Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([csv_text(c) for c in columns])
        writer.writerows([_csv_cell(record[c], c in json_text) for c in columns] for record in records)
        sys.stdout.flush()
    else:
        _table(records, total, columns, view or TableView(), json_text)


def _records(rows: Iterable[Row] | pa.Table, columns: Sequence[str]) -> tuple[Iterator[dict[str, Any]], int | None]:
    """The rows as dicts of ``columns``, and their count when it is known without reading them all."""
    source: Iterable[Row]
    total: int | None
    if hasattr(rows, "to_batches"):  # a pyarrow Table, told apart without importing pyarrow
        table: Any = rows
        source, total = (r for batch in table.to_batches() for r in batch.to_pylist()), int(table.num_rows)
    else:
        assert isinstance(rows, Iterable)
        source, total = rows, len(rows) if isinstance(rows, Sized) else None
    records = (
        {c: row[c] for c in columns} if isinstance(row, Mapping) else dict(zip(columns, row, strict=True))
        for row in source
    )
    return records, total


def _json_text(value: Any) -> str:
    from sdbctl.cli._render import json_bytes

    return json_bytes(value).decode()


def _csv_cell(value: Any, as_json: bool = False) -> Any:
    """A value as CSV text: None empty, booleans as JSON writes them, lists and objects as JSON text;
    with ``as_json`` (a column of JSON values, such as a payload) every value as its JSON text, so
    that ``"1"``, ``1`` and ``null`` stay apart. Text shows control and format characters as the
    table does, and never starts a formula (:func:`sdb.text.csv_text`)."""
    if as_json or isinstance(value, list | tuple | dict):
        return visible(_json_text(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return csv_text(value) if isinstance(value, str) else value


def _table(
    records: Iterator[dict[str, Any]],
    total: int | None,
    columns: Sequence[str],
    view: TableView,
    json_text: Collection[str],
) -> None:
    """The rich table of the first ``view.limit`` rows, and a note on stderr of how many more there are."""
    from sdbctl.cli._render import note, print_table

    shown = list(records) if view.limit <= 0 else list(islice(records, view.limit))
    if total is None:
        total = len(shown) + sum(1 for _ in records)
    if total == 0 and view.empty is not None:
        note(view.empty)
        return
    keys = list(view.columns if view.columns is not None else columns)
    names = [view.headers.get(k, k) for k in keys]
    cells = [
        [view.cells[k](r[k]) if k in view.cells else _json_text(r[k]) if k in json_text else r[k] for k in keys]
        for r in shown
    ]
    print_table(
        names,
        cells,
        title=view.title,
        widths={view.headers.get(k, k): w for k, w in view.widths.items()},
        styles={view.headers.get(k, k): s for k, s in view.styles.items()},
        drop=[view.headers.get(k, k) for k in view.drop],
    )
    if len(shown) < total:
        note(f"{total - len(shown)} more {view.noun}; {MORE}")
