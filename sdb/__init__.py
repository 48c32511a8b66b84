"""sdb: the core of sdbctl — event schema, Parquet store, and (later) boundary, replay, diff and gate.

Nothing here imports ``cli``, ``patterns`` or ``recorders``. Heavy libraries (pyarrow, duckdb) are
imported by the submodules that need them, so that importing :mod:`sdb` stays cheap.
"""

from sdbctl.sdb.errors import SdbError

__version__ = "0.1.0"

__all__ = ["SdbError", "__version__"]
