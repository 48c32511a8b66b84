"""The store: a directory of runs, each a manifest plus Parquet parts; DuckDB views laid over them.

``layout`` (where things live), ``fs`` (a local directory or an S3 prefix) and ``manifest`` are
imported with the package; ``writer`` (one writer per run, holding its ``lock``), ``views`` and
``read`` (duckdb) are imported on first use of their names (:func:`sdb.lazy.lazy_exports`), so that
a command that only lists runs never loads duckdb. ``integrity`` checks a run's parts against its
manifest before they are read. :data:`sdb.store.lock.HEARTBEAT_SECONDS` is the one setting read
from a module: how often the holder of an S3 lock rewrites it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdbctl.sdb.lazy import lazy_exports
from sdbctl.sdb.store.fs import Location
from sdbctl.sdb.store.layout import Store, check_run_id, diff_key, resolve_store
from sdbctl.sdb.store.manifest import RunManifest, RunStatus

if TYPE_CHECKING:
    from sdbctl.sdb.store.lock import RunLocked
    from sdbctl.sdb.store.read import event_dicts, export_run, run_events
    from sdbctl.sdb.store.views import connect, query_arrow, run_query, spill_directory
    from sdbctl.sdb.store.writer import RunExists, RunWriter

__all__ = [
    "Location",
    "RunExists",
    "RunLocked",
    "RunManifest",
    "RunStatus",
    "RunWriter",
    "Store",
    "check_run_id",
    "connect",
    "diff_key",
    "event_dicts",
    "export_run",
    "query_arrow",
    "resolve_store",
    "run_events",
    "run_query",
    "spill_directory",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "RunLocked": "lock",
        "event_dicts": "read",
        "export_run": "read",
        "run_events": "read",
        "connect": "views",
        "query_arrow": "views",
        "run_query": "views",
        "spill_directory": "views",
        "RunExists": "writer",
        "RunWriter": "writer",
    },
)
