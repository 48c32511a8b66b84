"""Writing one run: Parquet parts published atomically, and the manifest kept in step with them.

Each part is published atomically (locally: written under a hidden temporary name, fsynced, renamed;
on S3: one PUT), so a reader only ever sees whole parts. The manifest is rewritten after each part
with the counts so far and the part's entry (name, rows, size, xxh3-64 of its bytes), which readers
check the files against (:mod:`sdb.store._integrity`); closing the run sets ``status: complete``.
Recorders, importers, the proxy and the replay engine all write through :class:`RunWriter`, which
holds the run's lock (:mod:`sdb.store._lock`) from opening the run to closing it: one writer per run.
A run that never got an event and whose writer is gone does not keep its id (see
:meth:`RunWriter.create`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import re
import subprocess
import threading
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

import sdbctl.sdb as sdb
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events import EVENT_SCHEMA, SCHEMA_VERSION
from sdbctl.sdb.store._integrity import checked_parts, describe_part
from sdbctl.sdb.store._layout import LOCK_NAME, MANIFEST_NAME, Store
from sdbctl.sdb.store._listing import PART_GLOB, part_key
from sdbctl.sdb.store._lock import RunLock
from sdbctl.sdb.store._manifest import PartFile, RunManifest, RunStatus, manifest_bytes, parse_manifest

COMPRESSION: Final = "zstd"
NO_EVENTS: Final = "no events"  #: the ``interrupted`` reason of a run closed with no event (never complete)


class RunExists(SdbError):
    """A run with that id is already in the store."""


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string with microseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the git checkout around ``cwd``, or None when there is none."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


class RunWriter:
    """Creates a run in a store and appends record batches to it as Parquet parts.

    Thread-safe: parts are numbered and published under a lock. The run's writer lock is held from
    here to :meth:`close` (a shard's writer takes none: its driver holds it).
    """

    def __init__(
        self,
        store: Store,
        manifest: RunManifest,
        *,
        reopen: bool = False,
        shard: str | None = None,
        _run_lock: RunLock | None = None,
    ) -> None:
        self.store = store
        self.manifest = manifest
        self.dir: str = store.run_dir(manifest.run_id)
        self.shard = shard
        self._prefix = f"events-{shard}-" if shard else "events-"
        self._lock = threading.RLock()
        self._sessions: set[str] = set()
        self._prompts: set[str] = set(manifest.prompts)
        self._models: set[str] = set()
        self._closed = False
        self._next_part = 0
        self._run_lock = _run_lock
        try:
            if reopen or shard:
                self._recount(adopt=not shard)
            else:
                self._run_lock = self._claim_id()
                manifest.part_files = []
            if not shard:
                self._write_manifest()
        except BaseException:
            if self._run_lock is not None:
                self._run_lock.release()
            raise

    def _claim_id(self) -> RunLock:
        """Make the run's directory and take its lock; an id in use is a :class:`RunExists`, unless
        the run there never got an event and its writer is gone (see :meth:`create`)."""
        store, loc, run_id = self.store, self.store.loc, self.manifest.run_id
        manifest_path = f"{self.dir}/{MANIFEST_NAME}"
        loc.make_dir(store.runs_dir)
        created = True
        if not loc.remote:
            try:
                Path(self.dir).mkdir()
            except FileExistsError:
                created = False
        lock = RunLock.take(store, run_id)  # a live writer of the id: RunLocked, at once
        try:
            if loc.remote:
                created = not loc.is_file(manifest_path)
            if not created:
                self._take_over_abandoned()
        except BaseException:
            lock.release()
            raise
        return lock

    def _take_over_abandoned(self) -> None:
        """Clear a run left behind with no event by a writer that is gone, else refuse the id."""
        store, loc, run_id = self.store, self.store.loc, self.manifest.run_id
        manifest_path = f"{self.dir}/{MANIFEST_NAME}"
        exists = RunExists(f"run {run_id!r} already exists in store {store.uri}")
        files = loc.files(self.dir)
        if any(fnmatch.fnmatch(f.rsplit("/", 1)[-1], PART_GLOB) for f in files):
            raise exists
        if loc.is_file(manifest_path):
            try:
                old = parse_manifest(loc.read_bytes(manifest_path), manifest_path)
            except SdbError:
                raise exists from None
            # we hold the run's lock (an flock, or an S3 lock object whose holder closed or went stale):
            # whoever wrote this empty run is gone
            if old.status != "partial" or old.events != 0:
                raise exists
        for path in files:  # side files (truth.jsonl) and temporaries: nothing of value; the manifest
            name = path.rsplit("/", 1)[-1]  # is overwritten next
            if name != LOCK_NAME and (name.endswith(".jsonl") or name.startswith(".")):
                loc.delete_file(path)

    @classmethod
    def reopen(cls, store: Store, run_id: str) -> RunWriter:
        """Continue writing a run that did not finish, under its lock: the parts on disk are checked
        against the manifest, and those it does not list yet (a writer died between publishing a part
        and updating the manifest; a Ray replay's shards) are adopted, counted from the files. A
        complete run is not reopened."""
        run_id = store.manifest(run_id).run_id  # an unknown run: RunNotFound, before any lock file
        lock = RunLock.take(store, run_id)
        try:
            manifest = store.manifest(run_id)  # again, under the lock: the last writer's final word
            if manifest.status == "complete":
                raise RunExists(f"run {run_id!r} is complete; it is not written again")
            manifest.status = "partial"
            manifest.finished = None
            manifest.interrupted = None
        except BaseException:
            lock.release()
            raise
        return cls(store, manifest, reopen=True, _run_lock=lock)

    @classmethod
    def for_shard(cls, store: Store, run_id: str, shard: str) -> RunWriter:
        """A writer of one shard's parts (``events-<shard>-NNNNN.parquet``) into an open run, for a
        distributed replay: it never writes the manifest, which the driver publishes last (adopting
        the shards' parts: :meth:`refresh`), and takes no lock (the driver holds it)."""
        if not re.fullmatch(r"[a-z0-9]{1,16}", shard):
            raise SdbError(f"shard name {shard!r}: use 1-16 lowercase letters and digits")
        return cls(store, store.manifest(run_id), shard=shard)

    def refresh(self) -> None:
        """Take in the parts other processes published into this run since it was opened (a Ray
        replay's shards): checked, then counted and checksummed from the files."""
        with self._lock:
            self._recount(adopt=True)

    def _recount(self, *, adopt: bool) -> None:
        """Counts from the parts on disk. With ``adopt`` (a writer that owns the manifest), the parts
        are first checked against it, and the ones it does not list are added to it from the files."""
        run_id = self.manifest.run_id
        infos = self.store.loc.file_infos(self.dir)
        if adopt:
            paths = checked_parts(self.store, self.manifest, infos)
            listed = {p.name: p for p in self.manifest.part_files or []}
            by_path = {i.path: i for i in infos}
            entries = []
            for path in paths:
                name = path.rsplit("/", 1)[-1]
                entries.append(listed.get(name) or describe_part(self.store, by_path[path], run=run_id))
            entries.sort(key=lambda e: part_key(e.name) or (e.name, 0))
            self.manifest.part_files = entries
        else:
            paths = sorted(i.path for i in infos if fnmatch.fnmatch(i.path.rsplit("/", 1)[-1], PART_GLOB))
        events = 0
        for part in paths:
            table = self.store.loc.read_parquet(part, columns=["session_id", "prompt", "model"])
            events += table.num_rows
            self._note_vocabulary(table)
        mine = [p.rsplit("/", 1)[-1] for p in paths if p.rsplit("/", 1)[-1].startswith(self._prefix)]
        numbers = [
            int(m[len(self._prefix) : -len(".parquet")])
            for m in mine
            if m[len(self._prefix) : -len(".parquet")].isdigit()
        ]
        self._next_part = max(numbers, default=-1) + 1
        self.manifest.parts = len(paths)
        self.manifest.events = events
        self.manifest.sessions = len(self._sessions)

    @classmethod
    def create(
        cls,
        store: Store,
        run_id: str,
        *,
        recorder: str,
        meta: dict[str, Any] | None = None,
        **fields: Any,
    ) -> RunWriter:
        """Start a new run ``run_id`` with manifest ``fields`` (model, prompts, mode, agent, ...).

        An id already in the store is a :class:`RunExists`, and one being written by a live process a
        :class:`~sdb.store.RunLocked`, except for a run that never got an event (``partial``, no
        part) whose writer is gone — a proxy whose port was taken, an import killed before its first
        part: that run is cleared and the id taken. Gone means that nobody holds its lock: locally the
        OS drops the flock of a dead process; on S3 the lock object is released at close, or goes
        stale once its holder stops refreshing it (see :mod:`sdb.store._lock`)."""
        fields.setdefault("git_commit", git_commit())
        manifest = RunManifest(
            run_id=run_id,
            created=utc_now(),
            sdbctl_version=sdb.__version__,
            recorder=recorder,
            schema_version=SCHEMA_VERSION,
            meta=meta or {},
            **fields,
        )
        writer = cls(store, manifest)
        store.note_created(run_id, manifest.created)  # this machine's record of its runs: what @latest prefers
        return writer

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def lock_lost(self) -> bool:
        """True once this writer found its S3 writer lock taken over or deleted (see
        :mod:`sdb.store._lock`): from then on it writes nothing more, neither part nor manifest."""
        return self._run_lock is not None and self._run_lock.lost

    def _lost(self) -> SdbError:
        """The error of a writer that lost its lock: it stops, and leaves the run to whoever holds it."""
        return SdbError(
            f"run {self.run_id!r} in store {self.store.uri}: this writer lost its writer lock (another process "
            "took the run over or deleted the lock) and stopped writing"
        )

    def write(self, batch: pa.RecordBatch | pa.Table) -> str | None:
        """Publish ``batch`` as the next part; returns its path (None for an empty batch)."""
        if batch.num_rows == 0:
            return None
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        table = table.replace_schema_metadata(EVENT_SCHEMA.metadata)
        with self._lock:
            if self._closed:
                raise SdbError(f"run {self.run_id}: already closed, cannot write more events")
            if self.lock_lost:  # another writer holds the run now: not one more part
                raise self._lost()
            name = f"{self._prefix}{self._next_part:05d}.parquet"
            path = f"{self.dir}/{name}"
            published = self.store.loc.write_parquet(
                table, path, compression=COMPRESSION, row_group_size=max(table.num_rows, 1)
            )
            self._note_vocabulary(table)
            self._next_part += 1
            if self.manifest.part_files is not None:
                self.manifest.part_files.append(
                    PartFile(name=name, rows=table.num_rows, size=published.size, xxh3=published.xxh3)
                )
            self.manifest.parts += 1
            self.manifest.events += table.num_rows
            self.manifest.sessions = len(self._sessions)
            # the part is published: its rows must never be written again, so a manifest that cannot be
            # written now is left for the next part or close() to rewrite
            if not self.shard:
                with contextlib.suppress(OSError, SdbError):
                    self._write_manifest()
            return path

    def close(self, status: RunStatus = "complete", *, interrupted: str | None = None) -> RunManifest:
        """Mark the run finished (``complete``) or cut short (``partial``). Idempotent. A run with no
        event is never complete: it is left ``partial``, interrupted by "no events" (nothing to diff)."""
        with self._lock:
            if self._closed:
                return self.manifest
            self._closed = True
            if self.shard:  # the driver publishes the manifest
                return self.manifest
            if status == "complete" and self.manifest.events == 0:
                status, interrupted = "partial", NO_EVENTS
            self.manifest.status = status
            self.manifest.finished = utc_now()
            self.manifest.interrupted = interrupted
            try:
                if self.lock_lost:  # the manifest is the new holder's now: left as it is, partial
                    if status == "complete":
                        raise self._lost()
                else:
                    self._write_manifest()
            finally:
                if self._run_lock is not None:
                    self._run_lock.release()
            return self.manifest

    def _note_vocabulary(self, table: pa.Table) -> None:
        """Keep the manifest's session count, prompt versions and models in step with the parts."""
        self._sessions.update(str(s) for s in table.column("session_id").unique().to_pylist())
        self._prompts.update(p for p in table.column("prompt").unique().to_pylist() if p)
        self.manifest.prompts = sorted(self._prompts)
        if self.manifest.model is None or self._models:  # the manifest's model comes from the events
            self._models.update(m for m in table.column("model").unique().to_pylist() if m)
            if self._models:
                self.manifest.model = ",".join(sorted(self._models))

    def _write_manifest(self) -> None:
        if self.lock_lost:
            raise self._lost()
        self.store.loc.write_bytes(f"{self.dir}/{MANIFEST_NAME}", manifest_bytes(self.manifest))
