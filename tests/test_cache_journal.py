"""The response cache's journal (issue 22 item 6): each answer is one ``write`` to an append-only file
beside the cache, which a killed process keeps, and goes into SQLite a batch at a time, not one
committed transaction per answer. A dead writer's journal is taken in by the next writer to open the
cache or to miss a lookup; a live writer's is left alone; a torn or damaged record is ignored."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdbctl.sdb.replay import _cache
from sdbctl.sdb.replay._cache import CacheError, ResponseCache

JOURNAL_BATCH = _cache.JOURNAL_BATCH


def _journals(path: Path, but: ResponseCache | None = None) -> list[Path]:
    """The journals beside the cache ``path``, ``but`` that open cache's own."""
    own = but._journal.path if but is not None and but._journal is not None else None
    return sorted(j for j in path.parent.glob(path.name + ".answers-*") if j != own)


def _answer(i: int) -> dict[str, Any]:
    return {"response": {"content": f"answer {i:04d}"}, "truth": None}


def _rows(path: Path) -> int:
    """The answers SQLite holds (its file and -wal), read by a connection of the test's own."""
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM completions").fetchone()[0])
    finally:
        db.close()


_PUT_AND_DIE = """
import os, signal, sys
from pathlib import Path
from sdbctl.sdb.replay._cache import ResponseCache
path, n, bad, die_in_truncate = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
cache = ResponseCache(path)
if die_in_truncate:  # the batch is committed into SQLite, the journal not yet emptied
    os.ftruncate = lambda fd, size: os.kill(os.getpid(), signal.SIGKILL)
for i in range(n):
    completion = {"response": {"content": f"answer {i:04d}"}, "truth": None}
    cache.put(f"k{i:04d}", completion if i != bad else {"response": "not a completion", "truth": None})
os.kill(os.getpid(), signal.SIGKILL)
"""


def _put_and_die(path: Path, n: int, *, bad: int = -1, die_in_truncate: bool = False) -> None:
    """A writer process that puts ``n`` answers (the ``bad``-th not a completion) and is SIGKILLed."""
    args = [sys.executable, "-c", _PUT_AND_DIE, str(path), str(n), str(bad), "1" if die_in_truncate else "0"]
    done = subprocess.run(args, env=os.environ.copy(), check=False, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_put_writes_the_journal_and_commits_no_sqlite_transaction(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    cache = ResponseCache(path)
    before = cache._db.total_changes
    for i in range(10):
        cache.put(f"k{i}", _answer(i))
    assert cache._db.total_changes == before  # no row written into SQLite per answer
    assert _rows(path) == 0 and len(_journals(path)) == 1 and _journals(path)[0].stat().st_size > 0
    assert cache.get("k3") == _answer(3)  # answered from the answers not yet in SQLite
    assert cache.get_many(["k1", "k9", "nope"]) == {"k1": _answer(1), "k9": _answer(9)}
    cache.close()


def test_close_leaves_no_journal_and_sqlite_holds_every_answer(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    cache = ResponseCache(path)
    n = JOURNAL_BATCH + 5
    for i in range(n):
        cache.put(f"k{i}", _answer(i))
    assert _rows(path) == JOURNAL_BATCH  # one batch moved into SQLite in one transaction
    assert len(_journals(path)) == 1
    cache.close()
    assert _journals(path) == [] and not path.with_name(path.name + "-wal").exists()  # all in the file
    assert _rows(path) == n


def test_a_writer_killed_right_after_put_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    n = JOURNAL_BATCH + 7  # one batch in SQLite, the rest only in the journal
    _put_and_die(path, n)
    assert len(_journals(path)) == 1 and _rows(path) == JOURNAL_BATCH
    cache = ResponseCache(path)  # a writer opening the cache takes the dead writer's journal in
    assert _journals(path, but=cache) == [] and _rows(path) == n
    assert cache.get_many(f"k{i:04d}" for i in range(n)) == {f"k{i:04d}": _answer(i) for i in range(n)}
    cache.close()


def test_a_kill_between_the_commit_and_the_truncate_reinserts_the_same_rows(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    _put_and_die(path, JOURNAL_BATCH + 3, die_in_truncate=True)
    assert len(_journals(path)) == 1 and _rows(path) == JOURNAL_BATCH
    cache = ResponseCache(path)
    assert _journals(path, but=cache) == [] and _rows(path) == JOURNAL_BATCH
    assert cache.get("k0000") == _answer(0) and cache.get(f"k{JOURNAL_BATCH - 1:04d}") == _answer(JOURNAL_BATCH - 1)
    assert cache._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    cache.close()


def test_a_torn_last_record_is_ignored_and_the_records_before_it_kept(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    _put_and_die(path, 10)  # ten records of one length
    (journal,) = _journals(path)
    data = journal.read_bytes()
    journal.write_bytes(data[:-5])  # the last write cut short: its length runs past the end
    cache = ResponseCache(path)
    assert [cache.get(f"k{i:04d}") for i in range(10)] == [_answer(i) for i in range(9)] + [None]
    assert _journals(path, but=cache) == []
    cache.close()


@pytest.mark.parametrize("where", ["length", "key", "completion", "digest"])
def test_a_damaged_record_is_ignored_from_there_on_never_a_crash(tmp_path: Path, where: str) -> None:
    path = tmp_path / "responses.sqlite"
    _put_and_die(path, 10)
    (journal,) = _journals(path)
    data = bytearray(journal.read_bytes())
    size = len(data) // 10
    assert size * 10 == len(data)
    at = {"length": 4 * size, "key": 4 * size + 9, "completion": 4 * size + size // 2, "digest": 5 * size - 1}[where]
    data[at] ^= 0xFF
    journal.write_bytes(bytes(data))
    cache = ResponseCache(path)
    assert [cache.get(f"k{i:04d}") for i in range(10)] == [_answer(i) for i in range(4)] + [None] * 6
    cache.close()


def test_what_only_looks_like_a_journal_is_passed_over(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    _put_and_die(path, 2)
    (journal,) = _journals(path)
    (tmp_path / "elsewhere").write_bytes(journal.read_bytes())
    (tmp_path / "responses.sqlite.answers-1-link").symlink_to(tmp_path / "elsewhere")  # not followed
    (tmp_path / "responses.sqlite.answers-2-dir").mkdir()
    os.mkfifo(tmp_path / "responses.sqlite.answers-3-fifo")  # not waited on
    (tmp_path / "responses.sqlite.answers-4-empty").touch()
    journal.unlink()
    cache = ResponseCache(path)
    assert cache.get_many(["k0000", "k0001"]) == {} and (tmp_path / "elsewhere").exists()
    names = {p.name for p in _journals(path, but=cache)}
    assert names == {
        "responses.sqlite.answers-1-link",
        "responses.sqlite.answers-2-dir",
        "responses.sqlite.answers-3-fifo",
    }
    cache.close()


def test_a_journal_record_that_is_no_completion_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    _put_and_die(path, 5, bad=2)
    cache = ResponseCache(path)
    assert [cache.get(f"k{i:04d}") for i in range(5)] == [_answer(0), _answer(1), None, _answer(3), _answer(4)]
    cache.close()


def test_this_writers_own_entry_that_is_no_completion_is_still_refused(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "responses.sqlite")
    cache.put("k0", {"response": "not a completion", "truth": None})
    with pytest.raises(CacheError, match="entry k0 is not a completion object"):
        cache.get_many(["k0"])
    cache.close()


_PUT_AND_WAIT = """
import sys
from pathlib import Path
from sdbctl.sdb.replay._cache import ResponseCache
cache = ResponseCache(Path(sys.argv[1]))
cache.put("live", {"response": {"content": "from the live writer"}, "truth": None})
print("ready", flush=True)
sys.stdin.readline()
cache.close()
"""


def test_a_live_writers_journal_is_not_taken_in_by_another_opener(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    ResponseCache(path).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", _PUT_AND_WAIT, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        (journal,) = _journals(path)
        before = journal.read_bytes()
        other = ResponseCache(path)  # opens the cache, looks for dead writers' journals, misses a lookup
        assert other.get_many(["live"]) == {} and other.get("live") is None
        assert journal.read_bytes() == before and before and _rows(path) == 0  # left to its writer
    finally:
        assert writer.stdin is not None
        writer.stdin.write("\n")
        writer.stdin.close()
        writer.wait(30)
    assert writer.returncode == 0 and _journals(path, but=other) == []
    assert other.get("live") == {"response": {"content": "from the live writer"}, "truth": None}
    other.close()


def test_a_lookup_that_misses_takes_in_a_writer_that_died_after_the_cache_was_opened(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    cache = ResponseCache(path)  # open before the other writer died (a live Ray worker)
    _put_and_die(path, 10)
    assert len(_journals(path, but=cache)) == 1 and _rows(path) == 0
    keys = [f"k{i:04d}" for i in range(10)]
    assert cache.get_many(keys) == {k: _answer(i) for i, k in enumerate(keys)}
    assert _journals(path, but=cache) == [] and _rows(path) == 10
    cache.close()


def test_a_single_lookup_that_misses_takes_in_a_dead_writers_journal(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    cache = ResponseCache(path)
    _put_and_die(path, 3)
    assert len(_journals(path, but=cache)) == 1
    assert cache.get("k0001") == _answer(1) and _journals(path, but=cache) == []
    cache.close()


def test_a_read_only_cache_neither_reads_nor_writes_journals(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    ResponseCache(path).close()
    _put_and_die(path, 3)
    (journal,) = _journals(path)
    before = journal.read_bytes()
    named = ResponseCache(path, read_only=True)
    assert named.get("k0000") is None and named.get_many(["k0001"]) == {}
    named.close()
    assert _journals(path) == [journal] and journal.read_bytes() == before


def test_without_flock_each_answer_is_committed_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    path = tmp_path / "responses.sqlite"
    cache = ResponseCache(path)
    before = cache._db.total_changes
    cache.put("k0", _answer(0))
    assert cache._db.total_changes == before + 1 and _rows(path) == 1 and _journals(path) == []
    cache.close()
