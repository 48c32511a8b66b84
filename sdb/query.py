"""``sdbctl query``: a user's SQL over the store, read-only.

Reading commands never write. A query is parsed first and must be one ``SELECT`` (``WITH``, ``FROM``,
``DESCRIBE``, ``SUMMARIZE`` and ``SHOW`` are SELECTs to DuckDB) or ``EXPLAIN``; ``COPY``, ``ATTACH``,
``CREATE``, ``INSTALL``/``LOAD``, ``SET``, ``PRAGMA`` and the rest are refused before anything runs. It
then runs on a connection whose file access DuckDB itself limits to the store's directory (and its
spill directory): ``enable_external_access`` off, extensions neither installed nor loaded, and the
configuration locked, so a ``read_csv('/etc/passwd')`` inside a SELECT is refused too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from sdbctl.sdb.errors import QueryError
from sdbctl.sdb.store.layout import Store
from sdbctl.sdb.store.views import connect, run_query, spill_directory

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT or EXPLAIN, with one line."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"query failed: {first}") from None
    if len(statements) != 1:
        raise QueryError(f"query: one statement at a time ({len(statements)} given)")
    kind = statements[0].type
    if kind not in _ALLOWED:
        name = str(kind).rsplit(".", 1)[-1]
        raise QueryError(f"query: {name} statements are refused; sdbctl query only reads (SELECT or EXPLAIN)")


def read_only_query(store: Store, sql: str, run_id: str | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run the user's ``sql`` (see the module docstring); returns column names and rows."""
    check_read_only(sql)
    con = connect(store, run_id)
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
