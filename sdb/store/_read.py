"""Reading one run back: its events in timeline order, and exports to a single file.

Filtering and ordering happen in DuckDB over the Parquet parts; pyarrow writes the exported file with
the event schema and its version, so an exported Parquet file is itself a readable event file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.events import EVENT_SCHEMA
from sdbctl.sdb.store._layout import Store
from sdbctl.sdb.store._views import connect, query_arrow

ExportFormat = Literal["jsonl", "parquet"]


def run_events(store: Store, run_id: str, *, session: str | None = None, kind: str | None = None) -> pa.Table:
    """Events of ``run_id`` (optionally one session and one kind), ordered by session then seq."""
    run_id = store.resolve(run_id)
    con = connect(store, run_id)
    where = []
    if session is not None:
        where.append("session_id = " + _quote(session))
    if kind is not None:
        where.append("kind = " + _quote(kind))
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    table = query_arrow(con, f"SELECT * FROM events{clause} ORDER BY session_id, seq")
    if session is not None and table.num_rows == 0:
        known = query_arrow(con, "SELECT DISTINCT session_id FROM events ORDER BY 1 LIMIT 5")
        names = ", ".join(str(n) for n in known.column(0).to_pylist())
        raise UsageError(f"run {run_id!r} has no session {session!r}" + (f" (sessions: {names}, ...)" if names else ""))
    return table


def event_dicts(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Rows as dicts with ``payload`` parsed back into JSON values and ``ts`` as ISO-8601 text."""
    for batch in table.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            row["payload"] = orjson.loads(row["payload"])
            row["ts"] = row["ts"].isoformat()
            yield row


def write_jsonl(table: pa.Table, out: IO[bytes]) -> int:
    """Write ``table`` as newline-delimited JSON, one event per line; returns the line count."""
    n = 0
    for row in event_dicts(table):
        out.write(orjson.dumps(row) + b"\n")
        n += 1
    return n


def export_run(store: Store, run_id: str, fmt: ExportFormat, out: Path | IO[bytes]) -> int:
    """Export every event of ``run_id`` to ``out`` as JSONL or one Parquet file; returns the count."""
    table = run_events(store, run_id)
    if fmt == "parquet":
        if not isinstance(out, Path):
            raise UsageError("--format parquet needs --out PATH (Parquet cannot go to standard output)")
        table = table.cast(EVENT_SCHEMA)
        tmp = out.with_name(f".{out.name}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(out)
        return table.num_rows
    if isinstance(out, Path):
        tmp = out.with_name(f".{out.name}.tmp")
        with open(tmp, "wb") as fh:
            n = write_jsonl(table, fh)
        tmp.replace(out)
        return n
    return write_jsonl(table, out)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
