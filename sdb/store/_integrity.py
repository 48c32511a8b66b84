"""A run's parts checked against its manifest before the run is read.

The manifest lists every part its writer published (``part_files``: name, rows, size, and the xxh3-64
of the file's bytes, computed from the very bytes that were published). Before a run is read — the
DuckDB views, hence ``show``, ``export``, ``query``, ``diff``, ``gate``, ``replay`` — the parts on disk
must be those: a listed part that is missing, a part that is not listed, or a size, row count or
checksum that differs is one line (:class:`DamagedRun`) naming the run and the part, never an
empty or short read, and never a DuckDB error halfway through a diff.

**A partial run** (its writer died, or is still writing) may hold parts that its manifest does not
list yet: the writer died between publishing a part and rewriting the manifest, or the parts are a
Ray replay's shards, whose driver writes the manifest last. Such a part is read: it was published
atomically (renamed into place after an fsync, or one PUT), so it is a whole file as its writer
wrote it, and its footer is checked like every part's. What it lacks is a checksum to compare with,
so only the part names a writer would have published next are accepted: per writer (``events-`` or
``events-<shard>-``), numbers 0, 1, 2, ... with no gap, every unlisted one after every listed one.
Reopening the run (``--resume``) or closing it (the Ray driver) adopts those parts into the manifest
with their checksums. A complete run has no unlisted part.

**Runs written before the list existed** (``part_files`` is null) are checked on their count of
parts only: as many as the manifest counts (a partial run: at least as many), each with a readable
event-schema footer.

Cost: each part's bytes are read once per process (mapped locally, streamed from S3; xxh3 runs at
memory speed) plus its footer; a part already checked in this process, unchanged since (same size
and modification time), is not read again.

**What the checksum cannot see.** A part whose page was damaged and whose checksum was recomputed
to match (or a run with no checksums), and a payload (or a replay mark) that is not JSON, pass these
checks; they fail when the rows are read, in DuckDB or in Python, with whatever error that reader
raises. A read that fails so is named (:func:`named_damage`): each part of the runs it read is then decoded in full
and every payload parsed (:func:`unreadable`), and the first fault found is the run's one-line
:class:`DamagedRun` naming the part or the event (a read of the whole store leaves such runs out with
a warning: :func:`unreadable_runs`). This costs nothing until a read fails; an error that no damage
explains is raised as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sdbctl.sdb.errors import QueryError, SchemaError, SdbError
from sdbctl.sdb.events import DIVERGENCE_SCHEMA, check_schema
from sdbctl.sdb.store._layout import Store, damaged_warning, one_line, warn_skipped
from sdbctl.sdb.store._listing import DamagedRun, check_listing, run_parts
from sdbctl.sdb.store._manifest import PartFile, RunManifest

# (store, path, size, mtime) -> the part as read, and its schema version
_checked: dict[tuple[str, str, int, int | None], tuple[PartFile, str]] = {}
_checked_lock = threading.Lock()


def describe_part(store: Store, info: pafs.FileInfo, expected: PartFile | None = None, run: str = "") -> PartFile:
    """What a writer records of the part ``info``: its name, rows, size and checksum, read from the
    file itself (a footer that is not an event file's is refused, naming the file). With
    ``expected`` (the manifest's entry), a checksum that differs is a :class:`DamagedRun` of ``run``."""
    return _described(store, info, expected, run)[0]


def _described(
    store: Store, info: pafs.FileInfo, expected: PartFile | None = None, run: str = ""
) -> tuple[PartFile, str]:
    """:func:`describe_part`, and the part's schema version (read from its footer once)."""
    key = (store.uri, info.path, int(info.size or 0), info.mtime_ns)
    with _checked_lock:
        known = _checked.get(key)
    if known is None:
        try:
            digest = store.loc.checksum(info.path)
        except OSError as exc:
            raise SchemaError(f"{info.path}: cannot be read ({_first_line(exc)})") from None
    else:
        digest = known[0].xxh3
    name = info.path.rsplit("/", 1)[-1]
    if expected is not None and digest != expected.xxh3:
        raise DamagedRun(
            f"run {run!r} is damaged: part {name} does not match its manifest's checksum "
            f"(xxh3 {digest}, expected {expected.xxh3})"
        )
    if known is not None:
        return known
    footer, version = _read_footer(store, info.path)
    part = PartFile(name=name, rows=footer.num_rows, size=int(info.size or 0), xxh3=digest)
    with _checked_lock:
        _checked[key] = (part, version)
    return part, version


def checked_parts(store: Store, manifest: RunManifest, on_disk: Iterable[pafs.FileInfo]) -> list[str]:
    """The paths of ``manifest``'s run to read, after checking them against the manifest (see the
    module docstring); a mismatch is a one-line :class:`DamagedRun`. ``on_disk``: the files of the
    run's directory, listed *after* the manifest was read (a writer publishes a part, then the
    manifest: the other order could see a part listed that the listing missed)."""
    return sorted(part_versions(store, manifest, on_disk))


def part_versions(store: Store, manifest: RunManifest, on_disk: Iterable[pafs.FileInfo]) -> dict[str, str]:
    """:func:`checked_parts`, each path with the schema version its footer says (the ``events`` view
    reads each part as its version wrote it: one run may hold parts of two versions)."""
    run = manifest.run_id
    parts = run_parts(on_disk)
    unlisted = check_listing(manifest, parts.values())
    versions: dict[str, str] = {}
    if manifest.part_files is None:  # written before parts were listed: counted, and each footer read
        for info in parts.values():
            versions[info.path] = _read_footer(store, info.path)[1]
        return versions
    for entry in manifest.part_files:
        name = entry.name
        info = parts[name]
        found, versions[info.path] = _described(store, info, entry, run)
        if found.rows != entry.rows:
            raise DamagedRun(
                f"run {run!r} is damaged: part {name} has {found.rows} events, its manifest says {entry.rows}"
            )
    for name in unlisted:  # a partial run's parts published after its manifest was last written
        versions[parts[name].path] = _read_footer(store, parts[name].path)[1]
    return versions


def _read_footer(store: Store, path: str) -> tuple[pq.FileMetaData, str]:
    """The footer of the part at ``path``, checked to be an event file's, and its schema version;
    else a one-line SchemaError."""
    where = f"s3://{path}" if store.loc.remote else path
    try:
        footer = store.loc.read_footer(path)
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{where}: not a readable Parquet file ({_first_line(exc)})") from None
    return footer, check_schema(footer.schema.to_arrow_schema(), where)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def verified_paths(
    store: Store, manifests: list[RunManifest], *, skip_damaged: bool = False
) -> tuple[list[RunManifest], dict[str, str]]:
    """The runs of ``manifests`` (read just before) to read, and their parts (path: schema version,
    in path order), each run checked
    against its manifest: one listing of the run's directory, or of every run's for more than one
    run. A damaged run is its :class:`DamagedRun`, or with ``skip_damaged`` (a read of the whole
    store) left out with a warning naming it."""
    if len(manifests) == 1 and not skip_damaged:
        run = manifests[0].run_id
        found = part_versions(store, manifests[0], store.loc.file_infos(store.run_dir(run)))
        return manifests, dict(sorted(found.items()))
    by_run: dict[str, list[pafs.FileInfo]] = {}
    prefix = store.runs_dir + "/"
    for info in store.loc.file_infos(store.runs_dir, recursive=True) if manifests else []:
        run, _, name = info.path[len(prefix) :].partition("/")
        if name and "/" not in name:  # a run's own files, not what may sit in folders below it
            by_run.setdefault(run, []).append(info)
    kept: list[RunManifest] = []
    paths: dict[str, str] = {}
    for manifest in manifests:
        try:
            paths.update(part_versions(store, manifest, by_run.get(manifest.run_id, [])))
        except SchemaError as exc:
            if not skip_damaged:
                raise
            warn_skipped(damaged_warning(manifest.run_id, one_line(exc)))
            continue
        kept.append(manifest)
    return kept, dict(sorted(paths.items()))


def readable_divergences(store: Store) -> list[str]:
    """Every saved diff's ``divergences.parquet`` whose footer is a divergences file's. Another file
    (truncated, foreign, of other columns) is skipped with a warning naming it: one damaged saved diff
    must not stop the ``divergences`` view, nor any read of the store that does not ask for it."""
    kept = []
    for path in store.divergence_paths():
        where = f"s3://{path}" if store.loc.remote else path
        try:
            schema = store.loc.read_footer(path).schema.to_arrow_schema()
        except (pa.ArrowException, OSError, SdbError) as exc:
            warn_skipped(f"saved diff {where} is damaged, skipped: not a readable Parquet file ({_first_line(exc)})")
            continue
        if not schema.equals(DIVERGENCE_SCHEMA, check_metadata=False):
            warn_skipped(f"saved diff {where} is damaged, skipped: its columns are not those of divergences")
            continue
        kept.append(path)
    return kept


# -- damage that only reading the rows shows -------------------------------------------------------

# the kinds whose payload every writer of sdbctl makes a JSON object (inputs and states may be any JSON)
_OBJECT_PAYLOADS: Final = frozenset({"llm", "action", "effect", "gate", "error"})
# DuckDB's errors about the SQL itself, raised before a row is read: no damage can explain them
_SQL_ERRORS: Final = frozenset({"ParserException", "BinderException", "CatalogException"})


def bad_payload(run: str, session: object, seq: object, payload: object, kind: object = None) -> DamagedRun | None:
    """The :class:`DamagedRun` of an event whose payload is not JSON (or, for a kind whose payload is
    always an object, not a JSON object), naming its run, session and seq; None for a sound payload."""
    what = "not JSON"
    if isinstance(payload, str):
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            pass
        else:
            if kind not in _OBJECT_PAYLOADS or isinstance(value, dict):
                return None
            what = "not a JSON object"
    return DamagedRun(f"run {run!r} is damaged: the payload of event {seq} of session {session!r} is {what}")


def _json_or_none(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def unreadable(store: Store, run_id: str) -> DamagedRun | None:
    """The first fault of ``run_id``'s rows that its manifest's checks cannot see (see the module
    docstring): a part that does not decode, a payload that is not JSON, or a replay mark (column
    ``replay``) that is not a JSON object. Every part is decoded in
    full and every payload parsed, a batch at a time: slow, so only after a read of the run failed."""
    manifest = store.manifest(run_id)
    run = manifest.run_id
    for path in checked_parts(store, manifest, store.loc.file_infos(store.run_dir(run))):
        name = path.rsplit("/", 1)[-1]
        try:
            with store.loc.fs.open_input_file(path) as file:
                for batch in pq.ParquetFile(file).iter_batches():
                    batch.validate(full=True)
                    rows: dict[str, list[Any]] = batch.select(["session_id", "seq", "kind", "payload"]).to_pydict()
                    marks = batch.column("replay").to_pylist() if "replay" in batch.schema.names else []
                    for session, seq, kind, payload in zip(*rows.values(), strict=True):
                        found = bad_payload(run, session, seq, payload, kind)
                        if found is not None:
                            return DamagedRun(f"{found} (part {name})")
                    for i, mark in enumerate(marks):
                        if mark is not None and not isinstance(_json_or_none(mark), dict):
                            return DamagedRun(
                                f"run {run!r} is damaged: the replay mark of event {rows['seq'][i]} of session "
                                f"{rows['session_id'][i]!r} is not a JSON object (part {name})"
                            )
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:  # pyarrow's decoding errors
            return DamagedRun(f"run {run!r} is damaged: part {name} cannot be decoded ({_first_line(exc)})")
    return None


def _the_datas(exc: BaseException) -> bool:
    """Whether a failed read may be its data's fault: any error but sdbctl's own (a query DuckDB
    refused apart) and DuckDB's about the SQL itself. :func:`sdb.store.run_query` raises its
    :class:`QueryError` from None: DuckDB's error is still its ``__context__``."""
    if isinstance(exc, SdbError) and not isinstance(exc, QueryError):
        return False
    cause = exc.__context__ if isinstance(exc, QueryError) else exc
    return type(cause).__name__ not in _SQL_ERRORS


@contextmanager
def named_damage(store: Store, runs: Iterable[str | None]) -> Iterator[None]:
    """A read of ``runs`` (ids or ``@latest``; None left out) that fails on what their rows hold is
    the first damaged run's one-line :class:`DamagedRun` naming the part or the event, never a
    traceback; an error that no damage explains is raised as it was (see the module docstring)."""
    try:
        yield
    except Exception as exc:
        if not _the_datas(exc):
            raise
        for run in dict.fromkeys(r for r in runs if r is not None):
            found = unreadable(store, run)
            if found is not None:
                raise found from None
        raise


def unreadable_runs(store: Store, exc: Exception) -> list[str]:
    """After a read of the whole store failed with ``exc``: the runs whose rows are damaged (see
    :func:`unreadable`), each left out with a warning naming it; none when the error is not the
    data's (the caller then raises it)."""
    if not _the_datas(exc):
        return []
    left_out = []
    for manifest in store.manifests():
        found = unreadable(store, manifest.run_id)
        if found is not None:
            warn_skipped(damaged_warning(manifest.run_id, one_line(found)))
            left_out.append(manifest.run_id)
    return left_out
