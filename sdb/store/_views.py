"""DuckDB over the store: views ``events``, ``runs`` and ``divergences`` laid over the files on demand
(and ``requests``, the llm requests whole, for a query that names it).

``events`` reads the Parquet parts directly (``read_parquet`` locally, an Arrow dataset through
pyarrow's S3 filesystem for an object store), after each run's parts have been checked against its
manifest and each part's footer against the event schema; ``runs`` is the manifests as an Arrow
table; ``divergences`` the saved diffs whose footers are divergences files'. No second copy of the
events is made: the Parquet files are the truth.

A read of the whole store (``sdbctl query`` without ``--run``, ``diagnose``) skips a damaged run or
saved diff with a warning naming it; a read of named runs (``show``, ``diff``, ``replay``, ``query
--run``) is the named run's error. Only what asks for ``divergences`` reads the saved diffs: a diff or
a replay of two runs never opens the store's other files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa

from sdbctl.sdb.errors import QueryError
from sdbctl.sdb.events import DIVERGENCE_SCHEMA, EVENT_SCHEMA, canonical_json, version_columns, with_requests
from sdbctl.sdb.store._integrity import readable_divergences, verified_paths
from sdbctl.sdb.store._layout import Store

RUNS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("created", pa.string()),
        ("source_run", pa.string()),
        ("model", pa.string()),
        ("prompts", pa.list_(pa.string())),
        ("mode", pa.string()),
        ("agent", pa.string()),
        ("sdbctl_version", pa.string()),
        ("git_commit", pa.string()),
        ("sessions", pa.int64()),
        ("events", pa.int64()),
        ("parts", pa.int64()),
        ("status", pa.string()),
        ("finished", pa.string()),
        ("recorder", pa.string()),
    ]
)


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


# The column ``replay`` of a part written before schema version 3, which has none: the mark its
# writer put into the payload (``$.replay``) of an llm, action or error event, which is what a version 3
# writer puts into the column. Read only for such parts (a version 3 part's column is read as it is: the
# diff never decompresses its payloads for the marks). The prefix test and the LIKE spare parsing a
# payload that cannot hold the key (a replay's canonical llm payload starts with it): a filter only.
_DERIVED: Final = {
    "replay": """CASE WHEN kind IN ('llm', 'action', 'error')
        AND (starts_with(payload, '{"replay":') OR payload LIKE '%"replay":%')
        THEN CAST(json_extract(payload, '$.replay') AS VARCHAR) END"""
}


def _event_groups(parts: dict[str, str]) -> list[tuple[list[str], str]]:
    """The event parts by schema version (``parts``: path to version), each group with the SELECT list
    that gives its files the current columns: a column its version lacks is derived (:data:`_DERIVED`)."""
    by_version: dict[str, list[str]] = {}
    for path, version in parts.items():
        by_version.setdefault(version, []).append(path)
    groups = []
    for version, paths in sorted(by_version.items(), reverse=True):
        has = version_columns(version)
        columns = ", ".join(n if n in has else f"{_DERIVED[n]} AS {n}" for n in EVENT_SCHEMA.names)
        groups.append((paths, columns))
    return groups


def _view(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    name: str,
    groups: Sequence[tuple[list[str], str]],
    schema: pa.Schema,
) -> None:
    """``name`` over the Parquet files of ``groups`` (each: files, and the SELECT list that gives them
    ``schema``'s columns), one after the other (UNION ALL): DuckDB's own reader for a local store; an
    Arrow dataset through pyarrow's filesystem for an object store, so no DuckDB extension is fetched
    (a column the files lack is null in the dataset; the SELECT list derives it)."""
    sources = []
    for i, (paths, columns) in enumerate(g for g in groups if g[0]):
        if not store.loc.remote:
            sources.append(f"SELECT {columns} FROM read_parquet({_sql_list(paths)})")
            continue
        import pyarrow.dataset as ds

        dataset = ds.dataset(paths, schema=schema, format="parquet", filesystem=store.loc.fs)
        con.register(f"_{name}_dataset_{i}", dataset)
        sources.append(f"SELECT {columns} FROM _{name}_dataset_{i}")
    if not sources:
        con.register(f"_empty_{name}", schema.empty_table())
        sources.append(f"SELECT * FROM _empty_{name}")
    con.execute(f"CREATE VIEW {name} AS " + " UNION ALL ".join(sources))


MEMORY_ENV = "SDB_DUCKDB_MEMORY"


def spill_directory() -> Path:
    """Where DuckDB spills a join or sort that does not fit its memory limit."""
    return Path(tempfile.gettempdir()) / f"sdbctl-duckdb-{os.getuid() if hasattr(os, 'getuid') else 0}"


def _duckdb_config() -> dict[str, str | bool | int | float | list[str]]:
    """DuckDB's memory is capped (``SDB_DUCKDB_MEMORY``, default 1GB): a join or sort over a big run
    spills to a temporary directory instead of growing with the run."""
    return {"memory_limit": os.environ.get(MEMORY_ENV) or "1GB", "temp_directory": str(spill_directory())}


def connect(
    store: Store, run_id: str | None = None, *, runs: Sequence[str] | None = None, divergences: bool | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with ``events``, ``runs`` and ``divergences`` views over ``store``.

    With ``run_id``, ``events`` holds that run only; with ``runs``, those runs only (a diff of two
    runs needs no other, and then neither reads nor checks the rest of the store). Every run in
    ``events`` is first checked against its manifest (:mod:`sdb.store._integrity`): a missing, extra
    or damaged part of a run asked for is a one-line error naming the run and the part, before any
    row is read; with neither, a damaged run is left out with a warning (see the module docstring).
    ``divergences`` holds the saved diffs when asked for, by default only for the whole store.
    """
    whole = run_id is None and runs is None
    if run_id is not None:
        manifests = [store.manifest(run_id)]
    elif runs is not None:
        manifests = [store.manifest(r) for r in dict.fromkeys(runs)]
    else:
        manifests = store.manifests()
    # listed after the manifests were read: see checked_parts
    manifests, parts = verified_paths(store, manifests, skip_damaged=whole)
    con = duckdb.connect(":memory:", config=_duckdb_config())
    _view(con, store, "events", _event_groups(parts), EVENT_SCHEMA)
    saved = readable_divergences(store) if (whole if divergences is None else divergences) else []
    _view(con, store, "divergences", [(saved, ", ".join(DIVERGENCE_SCHEMA.names))], DIVERGENCE_SCHEMA)
    rows = [m.model_dump(include=set(RUNS_SCHEMA.names)) for m in manifests]
    con.register("_runs", pa.Table.from_pylist(rows, schema=RUNS_SCHEMA))
    con.execute("CREATE VIEW runs AS SELECT * FROM _runs")
    return con


_REQUEST_FIELDS: list[pa.Field[Any]] = [
    pa.field("run_id", pa.string()),
    pa.field("session_id", pa.string()),
    pa.field("seq", pa.int64()),
    pa.field("request", pa.string()),
]
REQUESTS_SCHEMA = pa.schema(_REQUEST_FIELDS)
_LLM_ROWS = "SELECT run_id, session_id, seq, payload FROM events WHERE kind = 'llm' ORDER BY run_id, session_id, seq"


def add_requests_view(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    run_id: str | None = None,
    *,
    runs: Sequence[str] | None = None,
    batch: int = 500,
) -> None:
    """The view ``requests`` on ``con``: every llm event's request whole, as canonical JSON text
    (``run_id, session_id, seq, request``), of ``run_id`` (or ``runs``, or the store), rebuilt from
    what the events store (:mod:`sdb.events._linear`). It is a stream, read from a connection of its
    own as the query asks for rows, ``batch`` requests at a time: its text grows with the square of a
    conversation's length, its memory does not. A stream is read once: a query reads it once."""
    source = connect(store, run_id, runs=runs, divergences=False)
    reader = source.sql(_LLM_ROWS).to_arrow_reader(batch)

    def batches() -> Iterator[pa.RecordBatch]:
        rows = (row for record_batch in reader for row in record_batch.to_pylist())
        columns: dict[str, list[Any]] = {name: [] for name in REQUESTS_SCHEMA.names}
        for row, _, request in with_requests(rows, "events"):
            columns["run_id"].append(row["run_id"])
            columns["session_id"].append(row["session_id"])
            columns["seq"].append(row["seq"])
            columns["request"].append(None if request is None else canonical_json(request))
            if len(columns["seq"]) >= batch:
                yield pa.RecordBatch.from_pydict(columns, schema=REQUESTS_SCHEMA)
                columns = {name: [] for name in REQUESTS_SCHEMA.names}
        if columns["seq"]:
            yield pa.RecordBatch.from_pydict(columns, schema=REQUESTS_SCHEMA)

    con.register("_requests", pa.RecordBatchReader.from_batches(REQUESTS_SCHEMA, batches()))
    con.execute("CREATE VIEW requests AS SELECT * FROM _requests")


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql``; return column names and rows. DuckDB's refusal becomes a one-line QueryError."""
    try:
        rel = con.execute(sql)
        columns = [d[0] for d in rel.description] if rel.description else []
        rows = rel.fetchall() if rel.description else []
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"query failed: {first}") from None
    return columns, rows


def query_arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run ``sql`` and return an Arrow table (for JSON/CSV output and export)."""
    try:
        rel = con.sql(sql)
        result = rel.to_arrow_table() if rel is not None else pa.table({})
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"query failed: {first}") from None
    assert isinstance(result, pa.Table)
    return result
