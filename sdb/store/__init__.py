"""The store: a directory of runs, each a manifest plus Parquet parts; DuckDB views laid over them.

``layout`` and ``manifest`` are cheap to import; ``writer`` and ``views`` import pyarrow and duckdb.
"""

from sdb.store.layout import Store, resolve_store
from sdb.store.manifest import RunManifest

__all__ = ["RunManifest", "Store", "resolve_store"]
