"""``sdbctl query``: DuckDB SQL over the store's views, read-only."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from sdbctl.cli._listing import CsvFlag, Format, JsonFlag, JsonlFlag, TableView, emit, pick_format
from sdbctl.cli._options import StoreOption


def query(
    sql: Annotated[str, typer.Argument(metavar="SQL", help="A DuckDB SQL query over the views.")],
    run_id: Annotated[str | None, typer.Option("--run", "-r", help="Lay `events` over this run only (faster).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows to print in the table; 0 for all.")] = 1000,
    store: StoreOption = None,
    json: JsonFlag = False,
    csv: CsvFlag = False,
    jsonl: JsonlFlag = False,
) -> None:
    """Run SQL with DuckDB over the views `events` (one row per event), `runs` (one per run) and
    `divergences`. Read-only: one SELECT (or EXPLAIN); COPY, ATTACH, CREATE, INSTALL, SET ... are
    refused, and files outside the store cannot be read.

    Output: a table of the first --limit rows; --json one array with one object per row keyed by
    column name (a repeated name gets _2, _3 ...), --csv a header and one line per row, --jsonl one
    object per line; these three carry every row.

    Example: sdbctl query "SELECT run_id, kind, count(*) AS n FROM events GROUP BY ALL ORDER BY n DESC" --csv
    """
    fmt = pick_format(json=json, csv=csv, jsonl=jsonl)
    from sdbctl.sdb.query import read_only_query
    from sdbctl.sdb.store import Store

    columns, rows = read_only_query(Store.open(store), sql, run_id)
    if fmt in (Format.json, Format.jsonl):
        rows = [tuple(_json_float(v) for v in row) for row in rows]
    emit(rows, columns, fmt, TableView(widths={c: 80 for c in columns}, limit=limit))


def _json_float(value: Any) -> Any:
    """NaN and ±inf as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (which JavaScript's
    ``Number()`` and Python's ``float()`` read back), not as null, which would read as a missing value;
    at any depth."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, list | tuple):
        return [_json_float(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_float(v) for k, v in value.items()}
    return value
