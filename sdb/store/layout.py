"""Where things live in a store, and how a store is found.

A store is a directory (default ``.sdb/`` under the current directory; ``--store`` or ``SDB_STORE``
change it). Each run is ``runs/<run_id>/`` holding ``run.json`` and ``events-NNNNN.parquet`` parts.
Files being written carry a leading dot and a ``.tmp`` suffix, so no reader ever sees half a file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sdb.errors import RunNotFound, StoreNotFound, UsageError
from sdb.store.manifest import RunManifest, read_manifest

DEFAULT_STORE: Final = ".sdb"
STORE_ENV: Final = "SDB_STORE"
MANIFEST_NAME: Final = "run.json"
PART_GLOB: Final = "events-*.parquet"
LATEST: Final = "@latest"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def resolve_store(path: str | os.PathLike[str] | None = None) -> Path:
    """The store directory: ``path`` if given, else ``$SDB_STORE``, else ``.sdb`` here."""
    if path is not None and str(path) != "":
        return Path(path)
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def check_run_id(run_id: str) -> str:
    """Refuse a run id that would not be a safe directory name."""
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(f"run id {run_id!r} is not valid: use letters, digits, '.', '_' and '-' (at most 128)")
    return run_id


def part_name(index: int) -> str:
    """File name of the ``index``-th Parquet part of a run."""
    return f"events-{index:05d}.parquet"


@dataclass(frozen=True)
class Store:
    """A store directory. Reading methods never write; writing goes through :class:`RunWriter`."""

    root: Path

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, must_exist: bool = True) -> Store:
        """Open the store at ``path`` (see :func:`resolve_store`); missing is an error unless allowed."""
        root = resolve_store(path)
        if must_exist and not root.is_dir():
            where = "" if path else f" (set --store or {STORE_ENV})"
            raise StoreNotFound(f"store {root}: no such directory{where}; record a run first")
        return cls(root)

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / check_run_id(run_id)

    def run_ids(self) -> list[str]:
        """Ids of every run that has a manifest, sorted."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.runs_dir.glob(f"*/{MANIFEST_NAME}"))

    def resolve(self, ref: str) -> str:
        """A run id from a reference: the id itself, or ``@latest`` for the most recently created run."""
        if ref != LATEST:
            return check_run_id(ref)
        manifests = self.manifests()
        if not manifests:
            raise RunNotFound(f"store {self.root} has no runs, so {LATEST} names nothing")
        return manifests[-1].run_id

    def manifest(self, run_id: str) -> RunManifest:
        """The manifest of ``run_id`` (or ``@latest``); an unknown id is a :class:`RunNotFound`."""
        run_id = self.resolve(run_id)
        path = self.run_dir(run_id) / MANIFEST_NAME
        if not path.is_file():
            known = self.run_ids()
            hint = f"; known runs: {', '.join(known[-5:])}" if known else "; the store has no runs"
            raise RunNotFound(f"run {run_id!r} not found in store {self.root}{hint}")
        return read_manifest(path)

    def manifests(self) -> list[RunManifest]:
        """Every run's manifest, oldest first."""
        found = [read_manifest(self.runs_dir / rid / MANIFEST_NAME) for rid in self.run_ids()]
        return sorted(found, key=lambda m: (m.created, m.run_id))

    def part_paths(self, run_id: str | None = None) -> list[Path]:
        """The published Parquet parts of one run, or of all runs, in order."""
        if run_id is not None:
            run_id = self.manifest(run_id).run_id
            return sorted(self.run_dir(run_id).glob(PART_GLOB))
        if not self.runs_dir.is_dir():
            return []
        return sorted(self.runs_dir.glob(f"*/{PART_GLOB}"))
