"""The response cache's cost (issue 22 item 6): its key computed without checking again a request read
back from canonical JSON, the same key as every earlier version gave (a cache written before still
answers); its checkpoints (the disk flushes of ``synchronous=NORMAL``) in a thread of their own, not
in the replay's event loop, while every answer is still kept before ``put`` returns (in the journal
of tests/test_cache_journal.py, then SQLite a batch at a time); a step replay's lookups made a batch at
a time, not one query per step."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import xxhash

from sdbctl.sdb.events import canonical_bytes
from sdbctl.sdb.providers import Completion
from sdbctl.sdb.replay import ReplayOptions, cache_key
from sdbctl.sdb.replay._cache import JOURNAL_BATCH, CacheError, ResponseCache
from sdbctl.sdb.replay._calling import CachedCompletion, Caller
from sdbctl.sdb.replay._results import ReplayProgress
from tests.conftest import CLI, wait_until


def _key_as_before(provider: str, request: Any, seed: int, endpoint: str | None = None) -> str:
    """The key as the cache computed it until issue 22: one canonical text of the whole key."""
    key: dict[str, Any] = {"provider": provider, "request": request, "seed": seed}
    if endpoint is not None:
        key["endpoint"] = endpoint
    return xxhash.xxh3_128_hexdigest(canonical_bytes(key))


REQUESTS: list[Any] = [
    {"model": "m", "messages": [{"role": "user", "content": 'hé \u2028 "q"'}], "temperature": 0},
    {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": []}], "top_p": 0.5},
    {"model": "m", "temperature": 1.0, "n": [2.0, 1e16, 0.25], "stop": None},  # integral floats: written as ints
    {"b": {"z": 1, "a": [True, False, None]}, "a": "null 1.0 +"},  # keys out of order, look-alikes in text
    {1: "int key", "x": {"2": 3}},  # a key that is not a string
    "just text",
    None,
    [1, 2.5, {"k": "v"}],
]


@pytest.mark.parametrize("request_", REQUESTS)
@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:8000/v1"])
@pytest.mark.parametrize(("provider", "seed"), [("openai:gpt-x", 0), ("sim:renewal@v2", 7), ("p\u00e9", -3)])
def test_the_key_is_the_one_earlier_versions_wrote(
    request_: Any, endpoint: str | None, provider: str, seed: int
) -> None:
    assert cache_key(provider, request_, seed, endpoint) == _key_as_before(provider, request_, seed, endpoint)


def test_a_bool_seed_is_not_keyed_as_the_int_it_equals() -> None:
    request = {"model": "m"}
    assert cache_key("p", request, True) == _key_as_before("p", request, True)
    assert cache_key("p", request, 1) == _key_as_before("p", request, 1)
    assert cache_key("p", request, True) != cache_key("p", request, 1)


@pytest.mark.parametrize("request_", [r for r in REQUESTS if not (isinstance(r, dict) and 1 in r)])
def test_a_request_read_back_from_canonical_json_keys_alike_unchecked(request_: Any) -> None:
    stored = orjson.loads(canonical_bytes(request_))  # what a step replay reads from the store
    expected = _key_as_before("openai:m", request_, 3, "http://h/v1")
    assert cache_key("openai:m", stored, 3, "http://h/v1", plain=True) == expected
    assert cache_key("openai:m", stored, 3, "http://h/v1") == expected


def _rows_in_the_file(path: Path) -> int:
    """The answers the cache's file holds, without its -wal (opened immutable: the -wal is not read)."""
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM completions").fetchone()[0])
    except sqlite3.DatabaseError:  # no table yet (its creation is still in the -wal), or a checkpoint
        return 0  # copying pages in meanwhile: immutable, the file is read without a lock
    finally:
        db.close()


def test_the_writer_leaves_checkpoints_to_a_thread_of_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    cache = ResponseCache(path)
    # the writer checkpoints only when its thread fell behind by 10,000 pages (SQLite's default: 1,000)
    assert cache._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (10_000,)
    assert [t for t in threading.enumerate() if t.name == "sdb-cache-checkpoint"]
    n = 2 * JOURNAL_BATCH  # each batch of the journal's answers committed, then a checkpoint due
    for i in range(n):
        cache.put(f"k{i}", {"response": {"n": i}, "truth": None})
    wait_until(lambda: _rows_in_the_file(path) >= JOURNAL_BATCH, 30, "the checkpoint thread copied the answers")
    cache.close()
    assert not [t for t in threading.enumerate() if t.name == "sdb-cache-checkpoint"]  # stopped with the cache
    assert not path.with_name(path.name + "-wal").exists() and _rows_in_the_file(path) == n  # all in the file


_PUT_AND_DIE = """
import os, signal, sys
from pathlib import Path
from sdbctl.sdb.replay._cache import JOURNAL_BATCH, ResponseCache
cache = ResponseCache(Path(sys.argv[1]))
for i in range(2 * JOURNAL_BATCH + 7):  # checkpoints due and running while answers go on arriving
    cache.put(f"k{i}", {"response": {"n": i}, "truth": None})
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_while_its_cache_checkpoints_loses_no_answer(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    done = subprocess.run([sys.executable, "-c", _PUT_AND_DIE, str(path)], env=os.environ.copy(), check=False)
    assert done.returncode == -signal.SIGKILL
    n = 2 * JOURNAL_BATCH + 7
    (journal,) = path.parent.glob(path.name + ".answers-*")  # the last answers are only in its journal
    cache = ResponseCache(path)  # which the next writer takes in
    assert not journal.exists()
    assert [cache.get(f"k{i}") for i in range(n)] == [{"response": {"n": i}, "truth": None} for i in range(n)]
    assert cache._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    cache.close()
    assert _rows_in_the_file(path) == n


def _counting_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys looked up one query each (:meth:`ResponseCache.get`), as the test's replays do them."""
    single: list[str] = []
    get = ResponseCache.get

    def counted(self: ResponseCache, key: str) -> dict[str, Any] | None:
        single.append(key)
        return get(self, key)

    monkeypatch.setattr(ResponseCache, "get", counted)
    return single


def test_a_step_replay_looks_its_answers_up_a_batch_at_a_time(
    sdbctl: CLI, machine_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "12", "--run-id", "base").returncode == 0
    single = _counting_lookups(monkeypatch)
    runs = []
    for run_id in ("writes", "hits"):
        done = sdbctl("replay", "base", "-m", "sim:renewal@v2", "--run-id", run_id, "--json")
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
    writes, hits = runs
    assert writes["steps_done"] == writes["model_calls"] == hits["steps_done"] == hits["cache_hits"] > 20
    assert hits["model_calls"] == 0 and writes["cache_hits"] == 0
    assert single == []  # no query per step: each batch of steps looked up at once


class _Counting:
    """A provider that answers every request alike and counts the requests it was asked."""

    spec = "test:counting"

    def __init__(self) -> None:
        self.asked = 0

    async def complete(self, request: dict[str, Any], *, seed: int = 0, repeat: int = 0) -> Completion:
        self.asked += 1
        return Completion({"content": f"answer {self.asked}"})


def test_a_request_answered_within_its_batch_is_answered_from_the_cache_when_asked_again(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "responses.sqlite")
    old = {"model": "m", "messages": [{"role": "user", "content": "cached before"}]}
    new = {"model": "m", "messages": [{"role": "user", "content": "new"}]}
    model = _Counting()
    caller = Caller(model, ReplayOptions(model="test:counting"), cache, ReplayProgress())
    cache.put(caller.key(old, seed=1), {"response": {"content": "from before"}, "truth": None})
    keys = [caller.key(r, seed=1, plain=True) for r in (old, new, new)]
    caller.look_up(keys)

    async def ask_all() -> list[Completion]:
        return [await caller.ask(r, seed=1, repeat=0, key=k) for r, k in zip((old, new, new), keys, strict=True)]

    first, second, third = asyncio.run(ask_all())
    cache.close()
    assert isinstance(first, CachedCompletion) and first.response == {"content": "from before"}
    assert not isinstance(second, CachedCompletion) and second.response == {"content": "answer 1"}
    assert isinstance(third, CachedCompletion) and third.response == {"content": "answer 1"}
    assert model.asked == 1


def test_a_batch_lookup_finds_what_single_lookups_find(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "responses.sqlite")
    for i in range(0, 1_200, 3):
        cache.put(f"k{i}", {"response": {"n": i}, "truth": {"t": i} if i % 2 else None})
    keys = [f"k{i}" for i in range(1_200)] + ["k3", "missing"]  # over two batches of a query, a key twice
    found = cache.get_many(iter(keys))
    assert found == {k: hit for k in keys if (hit := cache.get(k)) is not None} and len(found) == 400
    cache.put("k0", {"response": "not a completion", "truth": None})
    with pytest.raises(CacheError, match="entry k0 is not a completion object"):
        cache.get_many(["k0"])
    cache.close()
