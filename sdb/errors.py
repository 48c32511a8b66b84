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


class RunLocked(SdbError):
    """Another process is writing that run (:mod:`sdb.store._lock`)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) while a command wrote to a store: what it left there and what to do next, for the
    one line the CLI prints. Still a :class:`KeyboardInterrupt`, so the process ends as interrupted
    (status 130) and a caller of the API sees what it always saw."""

    def __init__(self, left: str, then: str = "", command: tuple[str, ...] = ()) -> None:
        super().__init__(left)
        self.left = left  #: what the store holds now ("run R is left partial (12/66 model calls)")
        self.then = then  #: what to do ("resume it with")
        self.command = command  #: the sdbctl arguments that do it, without the store's
