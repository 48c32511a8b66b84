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

This machine's writer keeps each answer, before the step that asked it goes on, in a journal of its
own beside the file (``<cache>.answers-<pid>-<random>``, one ``write`` per answer, which outlives a
killed process), and moves the journal's answers into SQLite :data:`JOURNAL_BATCH` at a time: a
committed transaction per answer cost the replay's event loop ~30 us a step. The journal of a writer
that died (its flock free) is taken into SQLite by the next writer that opens the cache or misses a
lookup, so a resumed run or a retried Ray shard asks nothing twice. A ``--cache-from`` file's
journals are never read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator
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

#: This machine's cache, as its own writer opens it. Its commits (a batch of the journal's answers;
#: where there is no flock, each answer the moment it arrives) are not flushed to the disk:
#: ``synchronous=NORMAL`` in WAL mode cannot leave the file damaged by a crash, only without its last
#: commits after a power loss, and a lost entry is a miss (the default, FULL, flushed on every commit:
#: ~100 us of a step's ~350 us). The page cache (32 MiB instead of
#: 2 MiB) keeps the b-tree's upper pages in memory as the cache grows to hundreds of thousands of
#: random keys. The checkpoints that copy the -wal into the file (and flush both to the disk) are
#: :class:`_Checkpointer`'s, in a thread of its own; the writer makes one itself only when the -wal
#: has grown to 10,000 pages (~40 MB: that thread fell behind), so that the -wal stays bounded.
_WRITER_PRAGMAS = ("PRAGMA synchronous=NORMAL", "PRAGMA cache_size=-32768", "PRAGMA wal_autocheckpoint=10000")
LOOKUP_BATCH = 500  #: keys one query of :meth:`ResponseCache.get_many` looks up (SQLite allows 32,766 parameters)
CHECKPOINT_EVERY = 256  #: answers written between two checkpoints (~2 pages each: SQLite's default is 1,000 pages)
JOURNAL_BATCH = 2_000  #: answers a writer's journal holds before they go into SQLite, in one transaction
JOURNAL_BYTES = 16 << 20  #: ... or bytes of answers (kept in memory too until then)
JOURNAL_INFIX = ".answers-"  #: a journal is ``<cache>.answers-<pid>-<random>`` (not SQLite's -journal/-wal/-shm)
_HEADER = struct.Struct("<II")  # a record: the key's and the completion's lengths, the key, the completion,
_DIGEST = struct.Struct("<Q")  # then the xxh3 digest of all that: a torn or damaged record does not match


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


def _record(key: str, blob: bytes) -> bytes:
    """One answer as a journal holds it: its lengths, key and completion, then their digest."""
    encoded = key.encode()
    body = _HEADER.pack(len(encoded), len(blob)) + encoded + blob
    return body + _DIGEST.pack(xxhash.xxh3_64_intdigest(body))


def _records(data: bytes) -> Iterator[tuple[str, bytes]]:
    """A journal's (key, completion) records up to the first torn or damaged one (a length past the
    end, a digest that does not match, a key that is not UTF-8): a killed writer's last write may be
    cut short, and nothing after a damaged record can be told apart. Never an error: a journal is data."""
    view = memoryview(data)
    at = 0
    while at + _HEADER.size <= len(data):
        key_len, blob_len = _HEADER.unpack_from(data, at)
        start = at + _HEADER.size
        end = start + key_len + blob_len
        if end + _DIGEST.size > len(data):
            return
        if _DIGEST.unpack_from(data, end)[0] != xxhash.xxh3_64_intdigest(view[at:end]):
            return
        try:
            key = bytes(view[start : start + key_len]).decode()
        except UnicodeDecodeError:
            return
        yield key, bytes(view[start + key_len : end])
        at = end + _DIGEST.size


if sys.platform == "win32":  # no flock: each answer is committed into SQLite alone, as before

    def _lock(fd: int, *, wait: bool) -> bool:
        raise OSError("no flock on this platform")

else:
    import fcntl

    def _lock(fd: int, *, wait: bool) -> bool:
        """Take the exclusive flock on ``fd``'s file; False when another open of it holds it (``wait``:
        wait for it instead). OSError where the file system has no flock."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


class _Journal:
    """A writer's answers not yet in SQLite: an append-only file beside the cache, one ``write`` per
    answer (the kernel keeps it when the process is killed; a power loss may lose it, as it may lose
    the last commits of ``synchronous=NORMAL``), under an exclusive flock for as long as it is open:
    the lock is what tells another process this writer lives and its journal is not to be taken in."""

    def __init__(self, cache: Path) -> None:
        while True:
            path = cache.with_name(f"{cache.name}{JOURNAL_INFIX}{os.getpid()}-{secrets.token_hex(6)}")
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _lock(fd, wait=True)
                mine = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:  # taken in (empty) as a dead writer's before it was locked
                mine = False
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
            if mine:
                break
            os.close(fd)
        self.path = path
        self._fd = fd
        self.size = 0  #: bytes written since the journal was last emptied
        self.records = 0

    def append(self, record: bytes) -> None:
        """Write one record (a single ``write``: only a full disk makes it short)."""
        done = 0
        try:
            while done < len(record):
                done += os.write(self._fd, record[done:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)  # no half record for the next ones to follow
            raise
        self.size += len(record)
        self.records += 1

    def clear(self) -> None:
        """Empty the journal: its answers are committed into SQLite."""
        os.ftruncate(self._fd, 0)
        self.size = self.records = 0

    def close(self, *, delete: bool) -> None:
        """Close it; ``delete`` (its answers are in SQLite) removes the file while the lock is held."""
        try:
            if delete:  # one left behind is only taken in again
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
        finally:
            os.close(self._fd)


def _open_journal(cache: Path) -> _Journal | None:
    """This writer's journal, or None where the file system (or the platform) has no flock."""
    try:
        return _Journal(cache)
    except OSError:
        return None


def _is_completion(blob: bytes) -> bool:
    """Whether a journal's record holds a completion (:func:`_completion`'s checks)."""
    try:
        _completion(Path(), "", blob, "")
    except CacheError:
        return False
    return True


class ResponseCache:
    """Completions (``{"response", "truth"}``) by key, in one SQLite file: this machine's cache for a
    store (created when missing), or with ``read_only`` a cache the user named (``--cache-from``)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
        self._puts = 0
        self._journal: _Journal | None = None
        self._pending: dict[str, bytes] = {}  # the journal's answers, by key, until they are in SQLite
        self._taken_in: set[str] = set()  # dead writers' journals taken in that could not be deleted
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
                self._journal = _open_journal(path)
                if self._journal is not None:  # no flock, no journals: none of a dead writer's either
                    self._take_in()
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
        journal = getattr(self, "_journal", None)
        if journal is not None:  # kept, with its answers, for the next writer to take in
            journal.close(delete=not journal.records)
            self._journal = None
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
        """The completion cached under ``key``, or None; a damaged entry is a :class:`CacheError`. A miss
        first takes in the journals of writers that died since (:meth:`_take_in`)."""
        pending = self._pending.get(key)
        if pending is not None:
            return _completion(self.path, key, pending, self._hint)
        sql = "SELECT completion FROM completions WHERE key = ?"
        try:
            with self._lock:
                row = self._query(sql, (key,)).fetchone()
                if row is None and self._journal is not None and self._take_in():
                    row = self._query(sql, (key,)).fetchone()
        except sqlite3.Error as exc:
            self._fail(exc)
        return _completion(self.path, key, row[0], self._hint) if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The completions cached under any of ``keys``, by key, :data:`LOOKUP_BATCH` keys a query: a
        query alone costs a replayed step more than its lookup (~1 us a key in a batch, 5-15 alone),
        mostly SQLite's own work per statement. Where a key has several rows (a --cache-from file
        need not have a primary key), the first one read; a damaged entry is a :class:`CacheError`. A
        miss first takes in the journals of writers that died since (:meth:`_take_in`): a retried Ray
        shard may run in a process that opened the cache before the worker that asked them died."""
        wanted = list(dict.fromkeys(keys))
        pending = self._pending
        rows: list[tuple[Any, Any]] = [(key, pending[key]) for key in wanted if key in pending]
        rest = [key for key in wanted if key not in pending] if rows else wanted
        try:
            with self._lock:
                stored = self._select(rest)
                if self._journal is not None and len(stored) < len(rest) and self._take_in():
                    stored = self._select(rest)
        except sqlite3.Error as exc:
            self._fail(exc)
        rows.extend(stored)
        found: dict[str, dict[str, Any]] = {}
        for key, blob in rows:
            if isinstance(key, str) and key not in found:
                found[key] = _completion(self.path, key, blob, self._hint)
        return found

    def _select(self, keys: list[str]) -> list[tuple[Any, Any]]:
        """The rows of ``keys``, :data:`LOOKUP_BATCH` keys a query (under the lock)."""
        rows: list[tuple[Any, Any]] = []
        for start in range(0, len(keys), LOOKUP_BATCH):
            part = tuple(keys[start : start + LOOKUP_BATCH])
            marks = ",".join("?" * len(part))
            rows.extend(self._query(f"SELECT key, completion FROM completions WHERE key IN ({marks})", part).fetchall())
        return rows

    def put(self, key: str, completion: dict[str, Any]) -> None:
        """Keep an answer, durably against a killed process before it returns: one ``write`` to this
        writer's journal (~5 us), the answers going into SQLite :data:`JOURNAL_BATCH` at a time in one
        transaction; where there is no flock, one committed transaction (~30 us, in the -wal)."""
        if self.read_only:
            raise CacheError(f"response cache {self.path}: read-only")
        blob = orjson.dumps(completion)
        journal = self._journal
        try:
            with self._lock:
                if journal is None:
                    self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?)", (key, blob))
                    self._puts += 1
                    if self._puts % CHECKPOINT_EVERY == 0 and self._checkpointer is not None:
                        self._checkpointer.due()
                    return
                journal.append(_record(key, blob))
                self._pending[key] = blob
                if journal.records >= JOURNAL_BATCH or journal.size >= JOURNAL_BYTES:
                    self._flush(journal)
        except sqlite3.Error as exc:
            self._fail(exc)
        except OSError as exc:
            raise CacheError(f"response cache {self.path}: its journal: {exc.strerror or exc}") from None

    def _insert(self, rows: Iterable[tuple[str, bytes]]) -> None:
        """``rows`` into SQLite, in one transaction (under the lock)."""
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _flush(self, journal: _Journal) -> None:
        """The journal's answers into SQLite, then the journal emptied (under the lock): a kill between
        the two leaves a journal the next writer takes in, which only inserts the same rows again."""
        if journal.records:
            self._insert(self._pending.items())
            journal.clear()
            self._pending.clear()
            if self._checkpointer is not None:
                self._checkpointer.due()

    def _take_in(self) -> bool:
        """Move the journals of dead writers beside the cache into SQLite, then delete them; True when
        any answer came in. A writer holds its journal's flock while it lives, so a journal whose lock
        can be taken is a killed writer's; one whose lock is held is left to its writer. A journal is
        data: a torn or damaged record ends it (:func:`_records`), a record that is no completion is
        skipped, and a file that cannot be read is passed over, never an error."""
        prefix = self.path.name + JOURNAL_INFIX
        own = self._journal.path.name if self._journal is not None else None
        try:
            with os.scandir(self.path.parent) as found:
                names = [e.name for e in found if e.name.startswith(prefix) and e.name != own]
        except OSError:
            return False
        taken = False
        for name in names:
            if name in self._taken_in:
                continue
            journal = self.path.parent / name
            try:
                fd = os.open(journal, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            except OSError:  # taken in by another process meanwhile, or not a file this user can read
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode) or not _lock(fd, wait=False):
                    continue  # a live writer's (or not a journal)
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                rows = [(k, blob) for k, blob in _records(b"".join(chunks)) if _is_completion(blob)]
                if rows:
                    self._insert(rows)
                    taken = True
                try:
                    os.unlink(journal)
                except FileNotFoundError:
                    pass
                except OSError:
                    self._taken_in.add(name)
            except OSError:
                continue
            finally:
                os.close(fd)
        return taken

    def close(self) -> None:
        """Move the journal's answers into SQLite and delete it; then close the cache."""
        journal = self._journal
        if journal is not None:
            try:
                with self._lock:
                    self._flush(journal)
            except sqlite3.Error as exc:
                self._fail(exc)
            except OSError:  # the journal not emptied, after its answers were committed: deleted all the same
                pass
            self._journal = None
            journal.close(delete=True)
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._lock:
            self._db.close()  # the last connection to close checkpoints the -wal into the file, and deletes it


class _Checkpointer:
    """Copies the cache's -wal into its file, in a thread and on a connection of its own, when
    :meth:`due`: a checkpoint flushes the -wal and the file to the disk (``synchronous=NORMAL``), tens
    of milliseconds the event loop would otherwise wait for every few hundred answers; it is due after
    each batch of the journal's answers (where there is no journal, every :data:`CHECKPOINT_EVERY`
    answers). A checkpoint only moves committed pages, so one that fails or never runs (a killed
    process) loses nothing: the next connection to open the file reads the -wal."""

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


def settle_journals(path: Path) -> None:
    """Move the journals of killed writers beside the cache at ``path`` into its SQLite file (a writer
    takes them in when it opens): what deletes entries by key (``sdbctl rm``) must find them all there,
    or the next writer would bring the deleted answers back."""
    ResponseCache(path).close()


def check_cache(path: Path, *, read_only: bool) -> None:
    """Refuse a damaged cache before a replay creates its run: opened, its table checked, closed."""
    if read_only or path.exists():
        ResponseCache(path, read_only=read_only).close()
