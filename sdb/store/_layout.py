"""Where things live in a store, and how a store is found.

A store is a directory (default ``.sdb/`` under the current directory; ``--store`` or ``SDB_STORE``
change it) or an S3 prefix (``s3://bucket/prefix``, see :mod:`sdb.store._fs`). Each run is
``runs/<run_id>/`` holding ``run.json``, ``events-*.parquet`` parts and, locally, ``.writer.lock``
(:mod:`sdb.store._lock`); a saved diff is ``diffs/<base>..<candidate>/`` (:func:`diff_key`). Every file
is published atomically (a local file under a hidden temporary name first), so no reader ever sees
half a file.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import xxhash

from sdbctl.sdb.errors import RunNotFound, SchemaError, SdbError, UsageError
from sdbctl.sdb.names import did_you_mean
from sdbctl.sdb.store._fs import Location
from sdbctl.sdb.store._manifest import RunManifest, parse_manifest

DEFAULT_STORE: Final = ".sdb"
STORE_ENV: Final = "SDB_STORE"
MANIFEST_NAME: Final = "run.json"
PART_GLOB: Final = "events-*.parquet"
LATEST: Final = "@latest"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_log = logging.getLogger(__name__)
_skipped: set[str] = set()  # manifests already warned about in this process


def resolve_store(path: str | os.PathLike[str] | None = None) -> str:
    """The store: ``path`` if given, else ``$SDB_STORE``, else ``.sdb`` here (a directory or s3://...)."""
    if path is not None and str(path) != "":
        return str(path)
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


def check_run_id(run_id: str) -> str:
    """Refuse a run id that would not be a safe directory name."""
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(f"run id {run_id!r} is not valid: use letters, digits, '.', '_' and '-' (at most 128)")
    return run_id


def diff_key(base: str, candidate: str) -> str:
    """The name of the folder of a saved diff: ``<base>..<candidate>``, unambiguous for every pair.

    A run id may hold ``..`` itself (``a..b`` is a valid id), so ``a`` vs ``b..c`` and ``a..b`` vs ``c``
    would both be ``a..b..c``. So inside each id a ``.`` followed by another ``.`` is written ``.~``
    (``~`` is never in a run id): ``a`` vs ``b..c`` is ``a..b.~.c``, ``a..b`` vs ``c`` is ``a.~.b..c``.
    An id with no ``..`` is written as it is, so the folders of such pairs are the ones earlier
    versions wrote. Once no id holds ``..``, the name splits one way only: a longer first id would
    have to hold the ``..`` that follows the shorter one, or make the second start with ``.``, which
    no run id does."""
    return f"{_escape_dots(check_run_id(base))}..{_escape_dots(check_run_id(candidate))}"


def _escape_dots(run_id: str) -> str:
    return re.sub(r"\.(?=\.)", ".~", run_id)


def part_name(index: int) -> str:
    """File name of the ``index``-th Parquet part of a run."""
    return f"events-{index:05d}.parquet"


@dataclass(frozen=True)
class Store:
    """A store: a local directory or an S3 prefix. Reading methods never write; writing goes through
    :class:`RunWriter`."""

    loc: Location

    @classmethod
    def open(cls, path: str | os.PathLike[str] | Store | None = None, *, must_exist: bool = True) -> Store:
        """Open the store at ``path`` (see :func:`resolve_store`); missing is an error unless allowed."""
        if isinstance(path, Store):
            return path
        loc = Location.parse(resolve_store(path))
        if must_exist:
            loc.check_exists("" if path else f" (set --store or {STORE_ENV})")
        return cls(loc)

    @property
    def uri(self) -> str:
        """The store as the user named it: a path, or ``s3://bucket/prefix``."""
        return self.loc.uri

    @property
    def root(self) -> Path:
        """The directory of a local store (what ``uri`` names); a remote store has none."""
        if self.loc.remote:
            raise UsageError(f"store {self.uri}: this needs a local store directory")
        return Path(self.loc.base)

    def local_dir(self, *parts: str) -> Path:
        """A local directory for what cannot live on an object store (the response cache, reports):
        inside a local store, else under ``$XDG_CACHE_HOME/sdbctl/`` keyed by the store's URI."""
        if not self.loc.remote:
            return Path(self.loc.base).joinpath(*parts)
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        key = xxhash.xxh3_64_hexdigest(self.uri.encode())
        return cache.joinpath("sdbctl", key, *parts)

    @property
    def runs_dir(self) -> str:
        return self.loc.path("runs")

    def run_dir(self, run_id: str) -> str:
        return self.loc.path("runs", check_run_id(run_id))

    def run_ids(self) -> list[str]:
        """Ids of every run that has a manifest, sorted."""
        suffix = "/" + MANIFEST_NAME
        found = self.loc.files(self.runs_dir, recursive=True)
        prefix = self.runs_dir + "/"
        return sorted(
            p[len(prefix) : -len(suffix)]
            for p in found
            if p.endswith(suffix) and "/" not in p[len(prefix) : -len(suffix)]
        )

    def resolve(self, ref: str) -> str:
        """A run id from a reference: the id itself, or ``@latest`` for the most recently created run."""
        if ref != LATEST:
            return check_run_id(ref)
        manifests = self.manifests()
        if not manifests:
            raise RunNotFound(f"store {self.uri} has no runs, so {LATEST} names nothing")
        return manifests[-1].run_id

    def _read_manifest(self, run_id: str) -> RunManifest:
        path = self.loc.path("runs", run_id, MANIFEST_NAME)
        try:
            data = self.loc.read_bytes(path)
        except (OSError, SdbError) as exc:
            raise SchemaError(f"{path}: cannot read run manifest ({exc})") from None
        return parse_manifest(data, path)

    def manifest(self, run_id: str) -> RunManifest:
        """The manifest of ``run_id`` (or ``@latest``); an unknown id is a :class:`RunNotFound`."""
        run_id = self.resolve(run_id)
        if not self.loc.is_file(self.loc.path("runs", run_id, MANIFEST_NAME)):
            known = self.run_ids()
            more = f" and {len(known) - 5} more (sdbctl runs lists them)" if len(known) > 5 else ""
            hint = f"; known runs: {', '.join(known[-5:])}{more}" if known else "; the store has no runs"
            hint = did_you_mean(run_id, known) + hint
            raise RunNotFound(f"run {run_id!r} not found in store {self.uri}{hint}")
        return self._read_manifest(run_id)

    def manifests(self) -> list[RunManifest]:
        """Every run's manifest, oldest first.

        A run whose manifest cannot be read or is not a manifest (a truncated or garbage ``run.json``)
        is left out, with a one-line warning on stderr naming the file (once per process, through
        :mod:`logging`), so that one broken run does not stop the listing, the views or a diff of
        the others. Asking for that run by id (:meth:`manifest`) is still the error naming the file.
        """
        found = []
        for rid in self.run_ids():
            try:
                found.append(self._read_manifest(rid))
            except SchemaError as exc:
                problem = " ".join(str(exc).split())  # one line, whatever the file held
                if problem not in _skipped:
                    _skipped.add(problem)
                    _log.warning("sdbctl: warning: %s; run %r left out", problem, rid)
        return sorted(found, key=lambda m: (m.created, m.run_id))

    def part_paths(self, run_id: str | None = None) -> list[str]:
        """The published Parquet parts of one run, or of all runs, in order (hidden temporaries left out)."""
        if run_id is not None:
            run_id = self.manifest(run_id).run_id
            files = self.loc.files(self.run_dir(run_id))
        else:
            files = self.loc.files(self.runs_dir, recursive=True)
        return sorted(p for p in files if fnmatch.fnmatch(p.rsplit("/", 1)[-1], PART_GLOB))

    def diff_dir(self, base: str, candidate: str) -> str:
        """The folder of the saved diff of ``base`` against ``candidate``: ``diffs/<base>..<candidate>``,
        with each id's ``..`` written ``.~.`` (see :func:`diff_key`)."""
        return self.loc.path("diffs", diff_key(base, candidate))

    def divergence_paths(self) -> list[str]:
        """Every saved diff's ``divergences.parquet``."""
        return [p for p in self.loc.files(self.loc.path("diffs"), recursive=True) if p.endswith("/divergences.parquet")]

    def delete_run(self, run_id: str) -> None:
        """Remove a run this process created and must not leave behind (an import that failed)."""
        self.loc.delete_dir(self.run_dir(run_id))
