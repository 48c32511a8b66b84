"""Errors a user can cause. Each is one line that names the thing and the problem.

The CLI turns any :class:`SdbError` into that line on stderr and exit code 2; everything else is a bug
and keeps its traceback (shown with ``SDB_DEBUG=1``).
"""

from __future__ import annotations


class SdbError(Exception):
    """Base class of every error a user can cause (bad input, missing store, unknown run)."""


class StoreNotFound(SdbError):
    """The store directory does not exist."""


class RunNotFound(SdbError):
    """No run with that id in the store."""


class SchemaError(SdbError):
    """A Parquet file that is corrupt, foreign, or of a schema version this sdbctl cannot read."""


class PayloadError(SdbError):
    """A payload that cannot be written as canonical JSON."""


class QueryError(SdbError):
    """An SQL query DuckDB refused."""


class UsageError(SdbError):
    """Arguments that do not make sense together."""
