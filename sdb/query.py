"""What the reading commands list: the runs, a run's timeline, and a user's SQL over the store, read-only.

Reading commands never write. A query is parsed first and must be one ``SELECT`` (``WITH``, ``FROM``,
``DESCRIBE``, ``SUMMARIZE`` and ``SHOW`` are SELECTs to DuckDB) or ``EXPLAIN``; ``COPY``, ``ATTACH``,
``CREATE``, ``INSTALL``/``LOAD``, ``SET``, ``PRAGMA`` and the rest are refused before anything runs. It
then runs on a connection whose file access DuckDB itself limits to the store's directory (and its
spill directory): ``enable_external_access`` off, extensions neither installed nor loaded, and the
configuration locked, so a ``read_csv('/etc/passwd')`` inside a SELECT is refused too.

DuckDB and pyarrow are imported where a query runs, not with this module: ``sdbctl runs`` reads only
manifests and should not pay a quarter of a second for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sdbctl.sdb.errors import QueryError
from sdbctl.sdb.store import Store

if TYPE_CHECKING:
    import pyarrow as pa

RUN_COLUMNS: Final = ("run_id", "created", "source_run", "model", "prompts", "sessions", "events", "status")
TIMELINE: Final = ("seq", "kind", "actor", "pattern", "name", "status", "step", "payload")


def run_rows(store: Store) -> list[dict[str, Any]]:
    """One row per run, oldest first, keyed by :data:`RUN_COLUMNS` (the shape ``runs --json`` promises).

    A damaged run is a row too, its status ``damaged`` (and a warning on stderr naming what is wrong):
    its manifest's fields when the manifest itself is sound (a part is missing), else only its id."""
    rows = []
    for entry in store.entries(warn=True):
        row = {k: getattr(entry.manifest, k) if entry.manifest is not None else None for k in RUN_COLUMNS}
        rows.append({**row, "run_id": entry.run_id, "status": entry.status})
    return rows


@dataclass(frozen=True)
class Timeline:
    """A run's events (one session and one kind, when asked) ordered by session then seq.

    Iterating it yields each event as a dict with the payload parsed and ``ts`` as ISO-8601, and it
    knows its length, so a listing that prints the first N rows decodes only those."""

    run_id: str
    sessions: list[str]
    events: pa.Table
    whole: bool = False  #: llm payloads with their request whole (``show --full``)

    @property
    def columns(self) -> list[str]:
        """Every event column: what the JSON, CSV and JSON-lines forms carry."""
        return list(self.events.column_names)

    @property
    def brief(self) -> list[str]:
        """The columns a table shows: the session when there is more than one, then :data:`TIMELINE`."""
        return (["session_id"] if len(self.sessions) > 1 else []) + list(TIMELINE)

    def __len__(self) -> int:
        return int(self.events.num_rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from sdbctl.sdb.store import event_dicts

        return event_dicts(self.events, whole=self.whole)


def timeline(
    store: Store, ref: str, *, session: str | None = None, kind: str | None = None, whole: bool = False
) -> Timeline:
    """The timeline of run ``ref`` (an id or ``@latest``); an unknown kind or session is a one-line error."""
    from sdbctl.sdb.events import KINDS
    from sdbctl.sdb.names import check_choice
    from sdbctl.sdb.store import run_events

    if kind is not None:
        check_choice(kind, KINDS, "--kind")
    run_id = store.resolve(ref)  # @latest: the output names the run it is
    table = run_events(store, run_id, session=session, kind=kind)
    sessions = table.column("session_id").unique().to_pylist() if table.num_rows else []
    return Timeline(run_id, [str(s) for s in sessions], table, whole)


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT or EXPLAIN, with one line."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"query failed: {first}") from None
    if len(statements) != 1:
        raise QueryError(f"query: one statement at a time ({len(statements)} given)")
    kind = statements[0].type
    if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
        name = str(kind).rsplit(".", 1)[-1]
        raise QueryError(f"query: {name} statements are refused; sdbctl query only reads (SELECT or EXPLAIN)")


def read_only_query(store: Store, sql: str, run_id: str | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run the user's ``sql`` (see the module docstring); returns column names and rows. A run whose
    rows turn out damaged as they are read (a page that does not decode, a payload that is not JSON)
    is the error of a query of that run, and is left out, with a warning naming it, of a query of the
    whole store, which then runs again without it."""
    from sdbctl.sdb.store import named_damage, unreadable_runs

    check_read_only(sql)
    if run_id is not None:
        with named_damage(store, [run_id]):
            return _query(store, sql, run_id)
    try:
        return _query(store, sql)
    except Exception as exc:
        left_out = unreadable_runs(store, exc)
        if not left_out:
            raise
    return _query(store, sql, runs=[m.run_id for m in store.manifests() if m.run_id not in left_out])


def _query(
    store: Store, sql: str, run_id: str | None = None, *, runs: list[str] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    from sdbctl.sdb.store import add_requests_view, connect, run_query, spill_directory

    con = connect(store, run_id, runs=runs, divergences=True)
    if re.search(r"\brequests\b", sql, re.IGNORECASE):
        add_requests_view(con, store, run_id, runs=runs)
    allowed = [str(spill_directory())]
    if not store.loc.remote:
        allowed.append(str(Path(store.root).resolve()))
    quoted = ", ".join("'" + d.replace("'", "''") + "'" for d in allowed)
    con.execute(f"SET allowed_directories = [{quoted}]")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    columns, rows = run_query(con, sql)
    return _unique(columns), rows


def _unique(columns: list[str]) -> list[str]:
    """Column names made unique (``n``, ``n_2`` ...): a JSON object per row must not merge two columns."""
    seen: dict[str, int] = {}
    out = []
    for name in columns:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out
