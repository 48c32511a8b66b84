"""Second review of the store (issue 20): ``@latest`` believes this machine's log only for the run it
wrote (its id AND its manifest's ``created``), and a ``--cache-from`` file cannot hang a replay, follow
a view or trigger, or leave files beside it."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest

import sdbctl.fixtures.workloads
from sdbctl.sdb.replay import _cache
from sdbctl.sdb.replay._cache import CacheError, ResponseCache
from sdbctl.sdb.store import Store
from tests.conftest import CLI, assert_one_line_error

sdbctl.fixtures.workloads.register_all()

V2 = "sim:renewal@v2"


pytestmark = pytest.mark.usefixtures("machine_cache")  # this machine's directories: the test's own


def test_latest_ignores_the_log_when_another_store_with_the_same_run_id_took_the_path(
    sdbctl: CLI, store: Path, tmp_path: Path
) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "mine").returncode == 0
    # another machine's store: a run of the same id, then a newer one
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = {"SDB_CACHE_DIR": str(tmp_path / "other-machine")}
    for run_id in ("late", "mine"):  # its "mine" is its newest by its own dates
        assert (
            sdbctl("record", "contract-renewal", "-n", "3", "--run-id", run_id, env=other, cwd=elsewhere).returncode
            == 0
        )
    shutil.rmtree(store)
    shutil.move(elsewhere / ".sdb", store)
    assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "newest", env=other).returncode == 0
    # this machine's log names "mine", but the run of that id is not the one it wrote
    shown = sdbctl("show", "@latest", "--json")
    assert shown.returncode == 0, shown.stderr
    said = [line for line in shown.stderr.splitlines() if "@latest" in line]
    assert said == [
        "sdbctl: @latest resolved to 'newest' from the store's own dates (this machine wrote none of its runs)"
    ], shown.stderr
    assert Store.open(store).resolve("@latest") == "newest"
    # a run this machine writes now is believed again
    assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "again").returncode == 0
    assert Store.open(store).resolve("@latest") == "again"


def _wal_cache(path: Path) -> None:
    """A cache file as this machine writes one (WAL mode), with one entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE completions (key TEXT PRIMARY KEY, completion BLOB NOT NULL)")
    db.execute("INSERT INTO completions VALUES ('k', ?)", (orjson.dumps({"response": {}, "truth": None}),))
    db.close()


def test_a_cache_from_view_that_recurses_forever_is_refused_naming_the_file(sdbctl: CLI, tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.sqlite"
    with sqlite3.connect(hostile) as db:
        db.execute(
            "CREATE VIEW completions AS WITH RECURSIVE r(key, completion) AS "
            "(SELECT 'a', x'00' UNION ALL SELECT key, completion FROM r) SELECT key, completion FROM r"
        )
    with pytest.raises(CacheError, match=r"hostile\.sqlite"):
        ResponseCache(hostile, read_only=True)
    assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "base").returncode == 0
    out = sdbctl("replay", "base", "-m", V2, "--run-id", "cand", "--cache-from", str(hostile))
    assert_one_line_error(out, f"response cache {hostile}")


def test_every_cache_from_query_runs_under_a_time_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real table, but a query slow enough to hang: stopped by the budget, one error naming the file."""
    slow = tmp_path / "slow.sqlite"
    with sqlite3.connect(slow) as db:
        db.execute("CREATE TABLE completions (key TEXT, completion BLOB)")  # no index: a full scan
        db.executemany("INSERT INTO completions VALUES (?, x'00')", ((str(i),) for i in range(200_000)))
    cache = ResponseCache(slow, read_only=True)
    monkeypatch.setattr(_cache, "QUERY_BUDGET", 0.0)
    with pytest.raises(CacheError, match=r"slow\.sqlite.*took longer than"):
        cache.get("absent")
    # this machine's own cache is not limited
    own = ResponseCache(tmp_path / "own.sqlite")
    assert own.get("absent") is None
    own.close()


def test_cache_from_leaves_the_directory_it_reads_unchanged(sdbctl: CLI, store: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "base").returncode == 0
    shipped = store / "cache" / "responses.sqlite"
    _wal_cache(shipped)
    before = sorted(p.name for p in shipped.parent.iterdir())
    out = sdbctl("replay", "base", "-m", V2, "--run-id", "cand", "--cache-from", str(shipped))
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in shipped.parent.iterdir()) == before == ["responses.sqlite"]
