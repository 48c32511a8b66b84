"""The store: a directory of runs, each a manifest plus Parquet parts; DuckDB views laid over them.

``layout`` and ``manifest`` are cheap to import; ``writer`` and ``views`` import pyarrow and duckdb.
``integrity`` checks a run's parts against its manifest before it is read; ``lock`` keeps one writer
per run.
"""

from sdbctl.sdb.store.layout import Store, resolve_store
from sdbctl.sdb.store.manifest import RunManifest

__all__ = ["RunManifest", "Store", "resolve_store"]
