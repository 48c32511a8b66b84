"""Writing one run: Parquet parts published atomically, and the manifest kept in step with them.

Each part is published atomically (locally: written under a hidden temporary name, fsynced, renamed;
on S3: one PUT), so a reader only ever sees whole parts. The manifest is rewritten after each part
with the counts so far; closing the run sets ``status: complete``. Recorders and the replay
engine both write through :class:`RunWriter`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import subprocess
import threading
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

import sdb
from sdb.errors import SdbError
from sdb.events.schema import EVENT_SCHEMA, SCHEMA_VERSION
from sdb.store.layout import MANIFEST_NAME, Store
from sdb.store.manifest import RunManifest, RunStatus, manifest_bytes

COMPRESSION: Final = "zstd"


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

    Thread-safe: parts are numbered and published under a lock.
    """

    def __init__(self, store: Store, manifest: RunManifest, *, reopen: bool = False, shard: str | None = None) -> None:
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
        if reopen or shard:
            self._recount()
        else:
            loc = store.loc
            if loc.is_file(f"{self.dir}/{MANIFEST_NAME}"):
                raise RunExists(f"run {manifest.run_id!r} already exists in store {store.uri}")
            loc.make_dir(store.runs_dir)
            if not loc.remote:
                try:
                    Path(self.dir).mkdir()
                except FileExistsError:
                    raise RunExists(f"run {manifest.run_id!r} already exists in store {store.uri}") from None
        if not shard:
            self._write_manifest()

    @classmethod
    def reopen(cls, store: Store, run_id: str) -> RunWriter:
        """Continue writing a run that did not finish: counts are taken from the parts on disk (a
        writer may have died between publishing a part and updating the manifest)."""
        manifest = store.manifest(run_id)
        manifest.status = "partial"
        manifest.finished = None
        manifest.interrupted = None
        return cls(store, manifest, reopen=True)

    @classmethod
    def for_shard(cls, store: Store, run_id: str, shard: str) -> RunWriter:
        """A writer of one shard's parts (``events-<shard>-NNNNN.parquet``) into an open run, for a
        distributed replay: it never writes the manifest, which the driver publishes last."""
        if not re.fullmatch(r"[a-z0-9]{1,16}", shard):
            raise SdbError(f"shard name {shard!r}: use 1-16 lowercase letters and digits")
        return cls(store, store.manifest(run_id), shard=shard)

    def _recount(self) -> None:
        parts = self.store.part_paths(self.manifest.run_id)
        events = 0
        for part in parts:
            table = self.store.loc.read_parquet(part, columns=["session_id", "prompt", "model"])
            events += table.num_rows
            self._note_vocabulary(table)
        mine = [p.rsplit("/", 1)[-1] for p in parts if p.rsplit("/", 1)[-1].startswith(self._prefix)]
        numbers = [
            int(m[len(self._prefix) : -len(".parquet")])
            for m in mine
            if m[len(self._prefix) : -len(".parquet")].isdigit()
        ]
        self._next_part = max(numbers, default=-1) + 1
        self.manifest.parts = len(parts)
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
        """Start a new run ``run_id`` with manifest ``fields`` (model, prompts, mode, agent, ...)."""
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
        return cls(store, manifest)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    def write(
        self,
        batch: pa.RecordBatch | pa.Table,
        *,
        vocabulary: tuple[set[str], set[str], set[str]] | None = None,
    ) -> str | None:
        """Publish ``batch`` as the next part; returns its path (None for an empty batch).

        ``vocabulary``: the batch's distinct session ids, prompts and models, when the caller has them
        already (the recorder's C queue does), else they are read off the batch."""
        if batch.num_rows == 0:
            return None
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        table = table.replace_schema_metadata(EVENT_SCHEMA.metadata)
        with self._lock:
            if self._closed:
                raise SdbError(f"run {self.run_id}: already closed, cannot write more events")
            path = f"{self.dir}/{self._prefix}{self._next_part:05d}.parquet"
            self.store.loc.write_parquet(table, path, compression=COMPRESSION, row_group_size=max(table.num_rows, 1))
            self._note_vocabulary(table, vocabulary)
            self._next_part += 1
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
        """Mark the run finished (``complete``) or cut short (``partial``). Idempotent."""
        with self._lock:
            if self._closed:
                return self.manifest
            self._closed = True
            if self.shard:  # the driver publishes the manifest
                return self.manifest
            self.manifest.status = status
            self.manifest.finished = utc_now()
            self.manifest.interrupted = interrupted
            self._write_manifest()
            return self.manifest

    def _note_vocabulary(self, table: pa.Table, known: tuple[set[str], set[str], set[str]] | None = None) -> None:
        """Keep the manifest's session count, prompt versions and models in step with the parts."""
        if known is not None:
            sessions, prompts, models = known
        else:
            sessions = {str(s) for s in table.column("session_id").unique().to_pylist()}
            prompts = {p for p in table.column("prompt").unique().to_pylist() if p}
        self._sessions.update(sessions)
        self._prompts.update(p for p in prompts if p)
        self.manifest.prompts = sorted(self._prompts)
        if self.manifest.model is None or self._models:
            if known is None:  # read off the batch only when the manifest's model comes from the events
                models = {m for m in table.column("model").unique().to_pylist() if m}
            self._models.update(m for m in models if m)
            if self._models:
                self.manifest.model = ",".join(sorted(self._models))

    def _write_manifest(self) -> None:
        self.store.loc.write_bytes(f"{self.dir}/{MANIFEST_NAME}", manifest_bytes(self.manifest))
