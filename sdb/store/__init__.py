"""The store: a directory of runs, each a manifest plus Parquet parts; DuckDB views laid over them.

This module is the package's whole interface; its modules are private. ``_layout`` (where things
live), ``_fs`` (a local directory or an S3 prefix) and ``_manifest`` are imported with the package;
``_writer`` (one writer per run, holding its ``_lock``), ``_views`` and ``_read`` (duckdb) are
imported on first use of their names (:func:`sdb.lazy.lazy_exports`), so that a command that only
lists runs never loads duckdb. ``_integrity`` checks a run's parts against its manifest before they
are read, and names the damage a failed read met (:func:`named_damage`). :data:`HEARTBEAT_SECONDS`
is the one setting, set on this package: how often the holder of an S3 lock rewrites it (read when a
lock is taken).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdbctl.sdb.errors import RunLocked
from sdbctl.sdb.lazy import lazy_exports
from sdbctl.sdb.store._fs import Location
from sdbctl.sdb.store._layout import CACHE_DIR_ENV, LATEST, RunEntry, Store, check_run_id, diff_key, resolve_store
from sdbctl.sdb.store._manifest import RunManifest, RunStatus

if TYPE_CHECKING:
    from sdbctl.sdb.store._integrity import named_damage, unreadable_runs
    from sdbctl.sdb.store._read import event_dicts, export_run, run_events, write_file
    from sdbctl.sdb.store._views import add_requests_view, connect, query_arrow, run_query, spill_directory
    from sdbctl.sdb.store._writer import RunExists, RunWriter

HEARTBEAT_SECONDS: float = 10.0  # how often the holder of an S3 lock rewrites it (read when a lock is taken)

__all__ = [
    "CACHE_DIR_ENV",
    "HEARTBEAT_SECONDS",
    "LATEST",
    "Location",
    "RunEntry",
    "RunExists",
    "RunLocked",
    "RunManifest",
    "RunStatus",
    "RunWriter",
    "Store",
    "add_requests_view",
    "check_run_id",
    "connect",
    "diff_key",
    "event_dicts",
    "export_run",
    "named_damage",
    "query_arrow",
    "resolve_store",
    "run_events",
    "run_query",
    "spill_directory",
    "unreadable_runs",
    "write_file",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "named_damage": "_integrity",
        "unreadable_runs": "_integrity",
        "event_dicts": "_read",
        "export_run": "_read",
        "run_events": "_read",
        "write_file": "_read",
        "add_requests_view": "_views",
        "connect": "_views",
        "query_arrow": "_views",
        "run_query": "_views",
        "spill_directory": "_views",
        "RunExists": "_writer",
        "RunWriter": "_writer",
    },
)
