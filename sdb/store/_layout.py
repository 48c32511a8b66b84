"""Where things live in a store, and how a store is found.

A store is a directory (default ``.sdb/`` under the current directory; ``--store`` or ``SDB_STORE``
change it) or an S3 prefix (``s3://bucket/prefix``, see :mod:`sdb.store._fs`). Each run is
``runs/<run_id>/`` holding ``run.json``, ``events-*.parquet`` parts and, locally, ``.writer.lock``
(:mod:`sdb.store._lock`); a saved diff is ``diffs/<base>..<candidate>/`` (:func:`diff_key`). Every file
is published atomically (a local file under a hidden temporary name first), so no reader ever sees
half a file.

**A run's id is its folder's name.** The ``run_id`` inside ``run.json`` is a copy: a manifest whose
copy names another run is damaged (a planted ``runs/junk/run.json`` saying ``"run_id": "base"`` must
never make ``sdbctl rm junk`` touch ``runs/base``). A damaged run (:class:`RunEntry`: a manifest that
cannot be read, is not a valid manifest, names another run, or whose parts on disk are not those it
lists) is its one-line error for a command that names it, and is skipped with a warning naming it by
what reads the store as a whole; ``sdbctl rm`` removes it all the same.

**The order of runs** (``runs``, ``rm --keep-last`` / ``--older-than``, and ``@latest`` of a store this
machine never wrote) is their creation time, but a time is only believed up to now: a ``created``
after now (a clock ahead, or a planted ``9999-...``) is replaced by the time the store received the
manifest (its file's modification time), and when that is in the future too, the run sorts first.
A damaged run is placed by its file's time.

**@latest** is the newest run THIS MACHINE wrote to the store: a date just ahead of now is believed
once that time has passed, so the store's own dates cannot be what chooses it. Each run this machine
creates is appended to a log in :meth:`Store.machine_dir` (outside the store) with this machine's
clock and the ``created`` its manifest got, and ``@latest`` is the newest of those that still exist
with that same ``created`` (another store moved to the same path may hold a run of the same id).
A damaged manifest cannot show it, so counts as not written here. For a store this machine never wrote,
it is the last run in the order above, and a line on stderr says so; either way the run it names is
said on stderr. When that run is damaged, ``@latest`` is its error, never an older run in its place.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import xxhash

from sdbctl.sdb.errors import RunNotFound, SchemaError, SdbError, UsageError
from sdbctl.sdb.names import did_you_mean
from sdbctl.sdb.store._fs import Location
from sdbctl.sdb.store._listing import PART_GLOB, check_listing
from sdbctl.sdb.store._manifest import RUN_ID_PATTERN, RunManifest, parse_manifest
from sdbctl.sdb.text import visible

if TYPE_CHECKING:
    import pyarrow.fs as pafs

DEFAULT_STORE: Final = ".sdb"
STORE_ENV: Final = "SDB_STORE"
MANIFEST_NAME: Final = "run.json"
LOCK_NAME: Final = ".writer.lock"  # a run's writer lock (sdb.store._lock): a local file, or an S3 object
LATEST: Final = "@latest"
_RUN_ID = re.compile(RUN_ID_PATTERN)
_EPOCH: Final = dt.datetime.min.replace(tzinfo=dt.UTC)  # where a run with no believable time sorts
_log = logging.getLogger(__name__)
_skipped: set[str] = set()  # damaged runs and diffs warned about, and @latest said, in this process

CACHE_DIR_ENV = "SDB_CACHE_DIR"  #: where this machine's directories for stores live (default: the user's cache dir)
CREATED_LOG: Final = "created-runs.log"  #: in a store's machine_dir: the runs this machine created (@latest)


def one_line(exc: BaseException) -> str:
    """An error's text on one line, whatever the file it quotes held."""
    return " ".join(str(exc).split()) or type(exc).__name__


def warn_skipped(problem: str) -> None:
    """Say once per process, on stderr, that a damaged run or diff was skipped (``problem`` names it)."""
    if problem not in _skipped:
        _skipped.add(problem)
        _log.warning("sdbctl: warning: %s", visible(problem))  # a folder's name may hold escapes: shown as such


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
class RunEntry:
    """One folder of ``runs/`` holding a ``run.json``: its manifest, or why the run is damaged."""

    run_id: str  #: the folder's name: a run's id
    manifest: RunManifest | None  #: None when the manifest itself is damaged
    problem: str | None  #: one line naming the file and what is wrong; None for a sound run
    when: dt.datetime  #: the time the run is ordered by (see the module docstring)

    @property
    def status(self) -> str:
        """``complete`` or ``partial`` as the manifest says, or ``damaged``."""
        return "damaged" if self.problem is not None or self.manifest is None else self.manifest.status


def damaged_warning(run_id: str, problem: str) -> str:
    """The one line said when the damaged run ``run_id`` is listed or skipped (``problem``: its error).
    A folder whose name is not a run id cannot be named to ``sdbctl rm``: it is to be removed by hand."""
    remove = f"sdbctl rm {run_id} removes it" if _RUN_ID.fullmatch(run_id) else "not a run id: remove its folder"
    if problem.startswith(f"run {run_id!r}"):
        return f"{problem}; not read ({remove})"
    return f"run {run_id!r} is damaged, not read ({remove}): {problem}"


def _believed(claimed: list[dt.datetime | None], now: dt.datetime) -> dt.datetime:
    """The first of the ``claimed`` times that is not after ``now``, else :data:`_EPOCH`."""
    return next((t for t in claimed if t is not None and t <= now), _EPOCH)


def _parse_time(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text)  # checked by the manifest's model
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _file_time(info: pafs.FileInfo) -> dt.datetime | None:
    ns = info.mtime_ns
    return None if ns is None else dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)


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
        """A local directory for what cannot live on an object store (reports): inside a local store,
        else :meth:`machine_dir`."""
        if not self.loc.remote:
            return Path(self.loc.base).joinpath(*parts)
        return self.machine_dir(*parts)

    def machine_dir(self, *parts: str) -> Path:
        """This machine's directory for this store, never inside it (what must not travel with a store,
        such as the response cache): ``$SDB_CACHE_DIR`` (else ``$XDG_CACHE_HOME/sdbctl``, default
        ``~/.cache/sdbctl``), then a digest of the store's location (an ``s3://`` URI, or the local
        directory resolved, so that two names of one folder share it)."""
        root = os.environ.get(CACHE_DIR_ENV)
        base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sdbctl"
        where = self.uri if self.loc.remote else str(Path(self.loc.base).resolve())
        return base.absolute().joinpath(xxhash.xxh3_64_hexdigest(where.encode()), *parts)

    @property
    def runs_dir(self) -> str:
        return self.loc.path("runs")

    def run_dir(self, run_id: str) -> str:
        return self.loc.path("runs", check_run_id(run_id))

    def _run_files(self) -> dict[str, dict[str, pafs.FileInfo]]:
        """Per folder of ``runs/`` holding a ``run.json``, its own files by name (one listing)."""
        prefix = self.runs_dir + "/"
        found: dict[str, dict[str, pafs.FileInfo]] = {}
        for info in self.loc.file_infos(self.runs_dir, recursive=True):
            run, _, name = info.path[len(prefix) :].partition("/")
            if name and "/" not in name:  # a run's own files, not what may sit in folders below it
                found.setdefault(run, {})[name] = info
        return {run: files for run, files in sorted(found.items()) if MANIFEST_NAME in files}

    def run_ids(self) -> list[str]:
        """Names of every folder of ``runs/`` that holds a manifest (sound or damaged), sorted."""
        return list(self._run_files())

    def entries(self, *, warn: bool = False) -> list[RunEntry]:
        """Every run, sound or damaged, in the order of the module docstring (oldest first).

        A run is checked as far as its manifest and the list of its files go (one listing of the
        store, no part read): a part its manifest lists that is missing, or of another size, makes it
        damaged here already (:mod:`_listing`); a part's bytes are checked when the run is read
        (:mod:`_integrity`). With ``warn``, each damaged run is a warning on stderr (:func:`warn_skipped`)."""
        now = dt.datetime.now(dt.UTC)
        entries = []
        for run_id, files in self._run_files().items():
            manifest: RunManifest | None = None
            problem = None
            try:
                manifest = self._read_manifest(run_id)
                try:
                    check_listing(manifest, files.values())
                except SchemaError:  # listed before the manifest was read: look again, in that order
                    check_listing(manifest, self.loc.file_infos(self.run_dir(run_id)))
            except SchemaError as exc:
                problem = one_line(exc)
            claimed = [_parse_time(manifest.created)] if manifest is not None and problem is None else []
            when = _believed([*claimed, _file_time(files[MANIFEST_NAME])], now)
            entries.append(RunEntry(run_id, manifest, problem, when))
        entries.sort(key=lambda e: (e.when, e.run_id))
        if warn:
            for entry in entries:
                if entry.problem is not None:
                    warn_skipped(damaged_warning(entry.run_id, entry.problem))
        return entries

    def resolve(self, ref: str) -> str:
        """A run id from a reference: the id itself, or ``@latest`` (:meth:`latest`; never an older run
        in the place of a damaged one)."""
        if ref != LATEST:
            return check_run_id(ref)
        newest = self.latest()
        if newest.problem is not None:
            raise SchemaError(f"{LATEST} is run {newest.run_id!r}, which is damaged: {newest.problem}")
        return newest.run_id

    def note_created(self, run_id: str, created: str) -> None:
        """Append ``run_id`` and its manifest's ``created`` to this machine's log of the runs it created
        in this store, with this machine's clock (:meth:`latest` prefers them). Best effort: a log that
        cannot be written loses that preference only, never the run."""
        try:
            path = self.machine_dir(CREATED_LOG)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as log:  # one short line: one append
                log.write(f"{dt.datetime.now(dt.UTC).isoformat()} {run_id} {created}\n")
        except (OSError, RuntimeError):  # RuntimeError: no home directory to hold it
            pass

    def _created_here(self) -> list[tuple[str, str]]:
        """The runs this machine's log says it created in this store, as (id, the manifest's
        ``created``), oldest first by its clock; a line of an older log (no ``created``) is skipped."""
        try:
            text = self.machine_dir(CREATED_LOG).read_text(encoding="utf-8", errors="replace")
        except (OSError, RuntimeError):
            return []
        rows = []
        for i, line in enumerate(text.splitlines()):
            when, _, rest = line.partition(" ")
            run_id, _, created = rest.partition(" ")
            if not created:  # an older log's line, or a torn one: it cannot show which run was written
                continue
            try:
                rows.append((_parse_time(when), i, check_run_id(run_id), created))
            except (ValueError, UsageError):  # a torn line: skipped
                continue
        return [(run_id, created) for _, _, run_id, created in sorted(rows)]

    def latest(self) -> RunEntry:
        """The run ``@latest`` names (see the module docstring), sound or damaged: the newest run this
        machine created in this store that still exists, else (a store it never wrote) the last in the
        store's own order. Which one, and by which rule, is said once on stderr for a sound run."""
        entries = self.entries()
        if not entries:
            raise RunNotFound(f"store {self.uri} has no runs, so {LATEST} names nothing")
        by_id = {e.run_id: e for e in entries}
        mine = [  # only the run this machine wrote: the same id with the same manifest's creation time
            by_id[r]
            for r, created in self._created_here()
            if r in by_id and (manifest := by_id[r].manifest) is not None and manifest.created == created
        ]
        newest = mine[-1] if mine else entries[-1]
        if newest.problem is None:
            said = (
                f"{LATEST} is run {newest.run_id!r}, the newest run this machine wrote to this store"
                if mine
                else f"{LATEST} resolved to {newest.run_id!r} from the store's own dates "
                "(this machine wrote none of its runs)"
            )
            if said not in _skipped:
                _skipped.add(said)
                _log.warning("sdbctl: %s", said)
        return newest

    def _read_manifest(self, run_id: str) -> RunManifest:
        """The manifest in ``runs/<run_id>/``; unreadable, invalid, or naming another run: a SchemaError."""
        path = self.loc.path("runs", run_id, MANIFEST_NAME)
        try:
            data = self.loc.read_bytes(path)
        except (OSError, SdbError) as exc:
            raise SchemaError(f"{path}: cannot read run manifest ({exc})") from None
        manifest = parse_manifest(data, path)
        if manifest.run_id != run_id:
            raise SchemaError(
                f"{path}: names run {manifest.run_id!r}, but a run's id is its folder's name ({run_id!r}): "
                "a copied or planted manifest"
            )
        return manifest

    def manifest(self, run_id: str) -> RunManifest:
        """The manifest of ``run_id`` (or ``@latest``); an unknown id is a :class:`RunNotFound` listing
        the five newest known runs, newest first (the damaged ones apart), a damaged manifest its
        :class:`SchemaError`."""
        run_id = self.resolve(run_id)
        if not self.loc.is_file(self.loc.path("runs", run_id, MANIFEST_NAME)):
            entries = self.entries()[::-1]  # newest first, in the order of @latest
            known = [e.run_id for e in entries if e.problem is None]
            more = f" and {len(known) - 5} more (sdbctl runs lists them)" if len(known) > 5 else ""
            hint = f"; known runs: {', '.join(known[:5])}{more}" if known else "; the store has no sound runs"
            damaged = [e.run_id for e in entries if e.problem is not None]
            if damaged:
                hint += f"; damaged, left out: {', '.join(damaged[:5])}" + (" ..." if len(damaged) > 5 else "")
            hint = did_you_mean(run_id, known) + hint
            raise RunNotFound(f"run {run_id!r} not found in store {self.uri}{hint}")
        return self._read_manifest(run_id)

    def manifests(self) -> list[RunManifest]:
        """The manifest of every sound run, oldest first (:meth:`entries`).

        A damaged run is left out with a one-line warning on stderr naming it (once per process,
        through :mod:`logging`), so that one broken run does not stop the listing, the views or a
        diff of the others. Asking for that run by id (:meth:`manifest`) is still its error.
        """
        return [e.manifest for e in self.entries(warn=True) if e.problem is None and e.manifest is not None]

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
