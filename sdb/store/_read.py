"""Reading one run back: its events in timeline order, and exports to a single file.

Filtering and ordering happen in DuckDB over the Parquet parts; pyarrow writes the exported file with
the event schema and its version, so an exported Parquet file is itself a readable event file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from sdbctl.sdb.errors import SdbError, UsageError
from sdbctl.sdb.events import EVENT_SCHEMA, canonical_json, session_requests, whole_payload
from sdbctl.sdb.store._integrity import bad_payload, named_damage
from sdbctl.sdb.store._layout import Store
from sdbctl.sdb.store._views import connect, query_arrow

ExportFormat = Literal["jsonl", "parquet"]
T = TypeVar("T")


def run_events(store: Store, run_id: str, *, session: str | None = None, kind: str | None = None) -> pa.Table:
    """Events of ``run_id`` (optionally one session and one kind), ordered by session then seq."""
    run_id = store.resolve(run_id)
    with named_damage(store, [run_id]):  # a damaged page: the run's one line, naming the part
        return _run_events(store, run_id, session, kind)


def _run_events(store: Store, run_id: str, session: str | None, kind: str | None) -> pa.Table:
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


def event_dicts(table: pa.Table, *, whole: bool = False) -> Iterator[dict[str, Any]]:
    """Rows as dicts with ``payload`` parsed back into JSON values and ``ts`` as ISO-8601 text; a
    payload that is not JSON is its run's one-line :class:`DamagedRun` naming the event.

    ``whole``: each llm payload with its request whole, as it was asked (a request may be stored as
    what is new since an earlier call, :mod:`sdb.events._linear`); ``table`` must then be ordered by
    run, session and seq and hold every llm event of its sessions. One session is held at a time."""
    session: list[dict[str, Any]] = []
    for batch in table.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            try:
                row["payload"] = orjson.loads(row["payload"])
            except (orjson.JSONDecodeError, TypeError):
                found = bad_payload(row["run_id"], row["session_id"], row["seq"], row["payload"])
                assert found is not None  # it did not parse
                raise found from None
            row["ts"] = row["ts"].isoformat()
            if not whole:
                yield row
                continue
            if session and (row["session_id"], row["run_id"]) != (session[0]["session_id"], session[0]["run_id"]):
                yield from _whole(session)
                session = []
            session.append(row)
    if session:
        yield from _whole(session)


def _whole(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One session's rows, each llm payload with its request whole."""
    llm = [row for row in rows if row["kind"] == "llm"]
    if llm:
        at = f"run {rows[0]['run_id']} session {rows[0]['session_id']}"
        requests = session_requests(((row["seq"], row["payload"]) for row in llm), at)
        for row, (_, request) in zip(llm, requests, strict=True):
            row["payload"] = whole_payload(row["payload"], request)
    return rows


def write_jsonl(table: pa.Table, out: IO[bytes]) -> int:
    """Write ``table`` as newline-delimited JSON, one event per line; returns the line count."""
    n = 0
    for row in event_dicts(table, whole=True):
        out.write(orjson.dumps(row) + b"\n")
        n += 1
    return n


def export_run(store: Store, run_id: str, fmt: ExportFormat, out: Path | IO[bytes]) -> int:
    """Export every event of ``run_id`` to ``out`` as JSONL or one Parquet file; returns the count."""
    if not isinstance(out, Path):
        if fmt == "parquet":
            raise UsageError("--format parquet needs --out PATH (Parquet cannot go to standard output)")
        return write_jsonl(run_events(store, run_id), out)
    check_output(out)  # before the run is read: a wrong path is said at once
    table = run_events(store, run_id)
    if fmt == "parquet":
        write_file(out, lambda fh: _write_whole(table, fh))
        return table.num_rows
    return write_file(out, lambda fh: write_jsonl(table, fh))


def _write_whole(table: pa.Table, fh: IO[bytes], batch: int = 2_000) -> None:
    """``table`` as one Parquet file, each llm payload's request whole (an export is read by other
    tools), written ``batch`` events at a time: a long conversation's requests are never all held."""
    kinds = table.column("kind").cast(pa.string()).to_pylist()
    texts = table.column("payload").to_pylist()
    rows = event_dicts(table, whole=True)
    index = table.schema.get_field_index("payload")
    with pq.ParquetWriter(fh, EVENT_SCHEMA, compression="zstd") as writer:
        for start in range(0, table.num_rows, batch):
            part = table.slice(start, batch)
            payloads = []
            for i in range(start, start + part.num_rows):
                row = next(rows)
                payloads.append(canonical_json(row["payload"]) if kinds[i] == "llm" else texts[i])
            part = part.set_column(index, "payload", pa.array(payloads, pa.string()))
            writer.write_table(part.cast(EVENT_SCHEMA))


def check_output(out: Path) -> None:
    """Refuse an output path that cannot be a file, naming it as the user gave it: a directory, or a
    file in a folder that does not exist."""
    if out.is_dir():
        raise UsageError(f"{out}: is a directory; give a file name (e.g. {out / 'events.jsonl'})")
    folder = out.parent
    if not folder.exists():
        raise UsageError(f"{out}: no such directory {folder}")
    if not folder.is_dir():
        raise UsageError(f"{out}: {folder} is not a directory")


def write_file(out: Path, write: Callable[[IO[bytes]], T]) -> T:
    """Write the file ``out`` the user named, whole or not at all: ``write`` fills a hidden temporary
    file of a name no other file has, beside it, which is renamed over ``out`` once complete. Any
    failure (a bad path, a full disk, a read error, Ctrl-C) removes it, so nothing is left behind, and
    an OS error of the file's is one line naming ``out``, never the temporary name."""
    check_output(out)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    created = False
    try:
        with open(tmp, "xb") as fh:  # exclusive: never a file that was there already
            created = True
            result = write(fh)
        os.replace(tmp, out)
    except BaseException as exc:
        if created:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):  # not a store file's, which it names
            raise SdbError(f"{out}: cannot write ({exc.strerror or exc})") from None
        raise
    return result


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
