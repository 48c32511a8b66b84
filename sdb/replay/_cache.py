"""The response cache: a SQLite file on this machine, keyed by (provider, seed, canonical request).

Replaying the same run twice asks the model once. SQLite (standard library) gives atomic writes and
safe concurrent readers; the cache is an optimisation, never the truth: deleting it changes nothing
but the number of model calls.

It lives under the user's cache directory (``$SDB_CACHE_DIR``, else ``$XDG_CACHE_HOME/sdbctl`` or
``~/.cache/sdbctl``), in a folder named by a digest of the store's resolved location, and never in the
store: a store travels, its cache keys are computable, so a cache that arrived with one could answer
for a model that was never asked. Such a cache is read only when the user names it (``--cache-from``),
read-only, and its answers are counted as cached like any other. Such a file is hostile until shown
otherwise: it must hold a real table ``completions`` (a view, however it recurses, is refused), it is
opened ``immutable`` (no ``-wal``/``-shm`` file is made beside it, no lock taken; only when a ``-wal``
is already there, holding its latest writes, is it opened plainly read-only), and every query on
it runs under a time budget (:data:`QUERY_BUDGET`), so no file can hang a replay.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson
import xxhash

from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events import canonical_bytes, plain_json
from sdbctl.sdb.redaction import url_without_secrets

if TYPE_CHECKING:
    from sdbctl.sdb.store import Store

CACHE_FILE = "responses.sqlite"
QUERY_BUDGET = 10.0  #: seconds one query on a --cache-from file may take (a lookup by key takes microseconds)

#: This machine's cache, as its own writer opens it. Every answer is still committed the moment it
#: arrives (a killed process loses none: the commit is in the -wal file, which outlives the process),
#: but not flushed to the disk: ``synchronous=NORMAL`` in WAL mode cannot leave the file damaged by a
#: crash, only without its last commits after a power loss, and a lost entry is a miss (the default,
#: FULL, flushed on every commit: ~100 us of a step's ~350 us). The page cache (32 MiB instead of
#: 2 MiB) keeps the b-tree's upper pages in memory as the cache grows to hundreds of thousands of
#: random keys. The checkpoints that copy the -wal into the file (and flush both to the disk) are
#: :class:`_Checkpointer`'s, in a thread of its own; the writer makes one itself only when the -wal
#: has grown to 10,000 pages (~40 MB: that thread fell behind), so that the -wal stays bounded.
_WRITER_PRAGMAS = ("PRAGMA synchronous=NORMAL", "PRAGMA cache_size=-32768", "PRAGMA wal_autocheckpoint=10000")
LOOKUP_BATCH = 500  #: keys one query of :meth:`ResponseCache.get_many` looks up (SQLite allows 32,766 parameters)
CHECKPOINT_EVERY = 256  #: answers written between two checkpoints (~2 pages each: SQLite's default is 1,000 pages)


class CacheError(SdbError):
    """A response cache that is not one: not SQLite, a foreign table, an entry that is no completion."""


def cache_key(provider: str, request: Any, seed: int, endpoint: str | None = None, *, plain: bool = False) -> str:
    """The key an answer is cached under; ``sdbctl rm`` rebuilds it from a run's llm events. A provider
    that asks a server names it (``endpoint``, its base URL without secrets: :func:`cache_endpoint`):
    two servers answering to one model name are two models. ``plain``: the caller knows the request
    is made of values read back from canonical JSON, which :func:`plain_json` writes as they were
    (the same bytes, so the same key), without looking for what canonical JSON would change."""
    key: dict[str, Any] = {"provider": provider, "request": request, "seed": seed}
    if endpoint is not None:  # a provider with no server (a simulator, a local model): keys as before
        key["endpoint"] = endpoint
    text = plain_json(key) if plain else None
    return xxhash.xxh3_128_hexdigest(text if text is not None else canonical_bytes(key))


def cache_endpoint(provider: object) -> str | None:
    """The server a provider asks, as its cache keys (and a replay's manifest) name it: its base URL
    without the secrets it may carry (:func:`url_without_secrets`); None for one that asks no server."""
    endpoint = getattr(provider, "endpoint", None)
    return url_without_secrets(endpoint) if isinstance(endpoint, str) else None


def cache_path(store: Store) -> Path:
    """This machine's response cache for ``store`` (see :meth:`Store.machine_dir`), never in the store."""
    return store.machine_dir(CACHE_FILE)


def _completion(path: Path, key: str, blob: Any, hint: str) -> dict[str, Any]:
    """The completion an entry holds (``{"response": {...}, "truth": {...} | null}``), else CacheError."""
    try:
        value = orjson.loads(blob)
    except (orjson.JSONDecodeError, TypeError):
        value = None
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("response"), dict)
        and isinstance(value.get("truth"), dict | None)
    )
    if not ok:
        raise CacheError(f"response cache {path}: entry {key} is not a completion object{hint}")
    assert isinstance(value, dict)
    return value


class ResponseCache:
    """Completions (``{"response", "truth"}``) by key, in one SQLite file: this machine's cache for a
    store (created when missing), or with ``read_only`` a cache the user named (``--cache-from``)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
        self._puts = 0
        try:
            if read_only:
                if not path.is_file():
                    raise CacheError(f"response cache {path}: no such file")
                # immutable: no -wal/-shm made beside it, no lock; unless a -wal already there holds
                # its latest writes (a cache in use elsewhere), which only a plain read-only open reads
                pending = path.with_name(path.name + "-wal").exists()
                mode = "ro" if pending else "ro&immutable=1"
                self._db = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True, check_same_thread=False)
                self._deadline = 0.0
                self._db.set_progress_handler(self._over_budget, 10_000)
                if not self._query(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'completions'"
                ).fetchone():
                    raise sqlite3.DatabaseError("no table completions")  # a view is not followed
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
                self._db.execute("PRAGMA journal_mode=WAL")
                for pragma in _WRITER_PRAGMAS:
                    self._db.execute(pragma)
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, completion BLOB NOT NULL)"
                )
            self._query("SELECT key, completion FROM completions LIMIT 0").fetchall()  # its shape, now
            if not read_only:
                self._checkpointer = _Checkpointer(path)
        except sqlite3.Error as exc:
            self._fail(exc)
        except OSError as exc:
            raise CacheError(f"response cache {path}: {exc.strerror or exc}") from None

    def _over_budget(self) -> bool:
        """SQLite's progress handler on a --cache-from file: True stops the query running too long."""
        return time.monotonic() > self._deadline

    def _query(self, sql: str, params: tuple[str, ...] = ()) -> sqlite3.Cursor:
        """``sql`` on the cache; on a --cache-from file, within :data:`QUERY_BUDGET` from now."""
        if self.read_only:
            self._deadline = time.monotonic() + QUERY_BUDGET
        return self._db.execute(sql, params)

    def _fail(self, exc: sqlite3.Error) -> NoReturn:
        checkpointer = getattr(self, "_checkpointer", None)
        if checkpointer is not None:
            checkpointer.close()
            self._checkpointer = None
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        if self.read_only and reason == "interrupted":
            reason = f"a query took longer than {QUERY_BUDGET:g}s"
        raise CacheError(f"response cache {self.path}: not a response cache ({reason}){self._hint}") from None

    @property
    def _hint(self) -> str:
        """What to do about this machine's damaged cache (one the user named is theirs to judge)."""
        return "" if self.read_only else "; delete it (it only saves model calls) or pass --no-cache"

    def get(self, key: str) -> dict[str, Any] | None:
        """The completion cached under ``key``, or None; a damaged entry is a :class:`CacheError`."""
        try:
            with self._lock:
                row = self._query("SELECT completion FROM completions WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            self._fail(exc)
        return _completion(self.path, key, row[0], self._hint) if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The completions cached under any of ``keys``, by key, :data:`LOOKUP_BATCH` keys a query: a
        query alone costs a replayed step more than its lookup (~1 us a key in a batch, 5-15 alone),
        mostly SQLite's own work per statement. Where a key has several rows (a --cache-from file
        need not have a primary key), the first one read; a damaged entry is a :class:`CacheError`."""
        wanted = list(dict.fromkeys(keys))
        rows: list[tuple[Any, Any]] = []
        try:
            with self._lock:
                for start in range(0, len(wanted), LOOKUP_BATCH):
                    part = tuple(wanted[start : start + LOOKUP_BATCH])
                    marks = ",".join("?" * len(part))
                    sql = f"SELECT key, completion FROM completions WHERE key IN ({marks})"
                    rows.extend(self._query(sql, part).fetchall())
        except sqlite3.Error as exc:
            self._fail(exc)
        found: dict[str, dict[str, Any]] = {}
        for key, blob in rows:
            if isinstance(key, str) and key not in found:
                found[key] = _completion(self.path, key, blob, self._hint)
        return found

    def put(self, key: str, completion: dict[str, Any]) -> None:
        if self.read_only:
            raise CacheError(f"response cache {self.path}: read-only")
        try:
            with self._lock:  # committed before it returns: in the -wal, which outlives a killed process
                self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?)", (key, orjson.dumps(completion)))
                self._puts += 1
        except sqlite3.Error as exc:
            self._fail(exc)
        if self._puts % CHECKPOINT_EVERY == 0 and self._checkpointer is not None:
            self._checkpointer.due()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._lock:
            self._db.close()  # the last connection to close checkpoints the -wal into the file, and deletes it


class _Checkpointer:
    """Copies the cache's -wal into its file, in a thread and on a connection of its own, when
    :meth:`due`: a checkpoint flushes the -wal and the file to the disk (``synchronous=NORMAL``), tens
    of milliseconds the event loop would otherwise wait for every few hundred answers. Each answer is
    committed by the writer all the same; a checkpoint only moves committed pages, so one that fails
    or never runs (a killed process) loses nothing: the next connection to open the file reads the -wal."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
        self._due = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sdb-cache-checkpoint", daemon=True)
        self._thread.start()

    def due(self) -> None:
        self._due.set()

    def _run(self) -> None:
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stopping:
                    return
                # PASSIVE: never waits for the writer, which goes on committing meanwhile; an error is
                # the writer's to meet (a damaged file), and it checkpoints itself at 10,000 pages
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            self._db.close()

    def close(self) -> None:
        self._stopping = True
        self._due.set()
        self._thread.join()


def check_cache(path: Path, *, read_only: bool) -> None:
    """Refuse a damaged cache before a replay creates its run: opened, its table checked, closed."""
    if read_only or path.exists():
        ResponseCache(path, read_only=read_only).close()
