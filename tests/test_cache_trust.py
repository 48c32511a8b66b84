"""The response cache cannot answer for a model (issue 20 item 2): it lives on this machine, never in
the store; a cache that came with a store is read only when named (``--cache-from``); every answer a
cache gave is marked on its llm event and counted by replay, diff and gate; a damaged cache is one
line naming it, exit 2, and no replay run is left ``complete``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

import sdbctl.fixtures.workloads
from sdbctl.sdb.replay import cache_key, cache_path
from sdbctl.sdb.store import Store
from tests.conftest import CLI, assert_one_line_error
from tests.helpers import run_events
from tests.llm_server import LLMServer, simulator_answer

sdbctl.fixtures.workloads.register_all()

V1, V2 = "sim:renewal@v1", "sim:renewal@v2"


pytestmark = pytest.mark.usefixtures("machine_cache")  # this machine's directories: the test's own


def _replay(sdbctl: CLI, *args: str) -> dict[str, Any]:
    out = sdbctl("replay", "base", *args, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert isinstance(result, dict)
    return result


def _llm(store: Path, run_id: str) -> list[dict[str, Any]]:
    return [e for e in run_events(store, run_id, payloads=True) if e["kind"] == "llm"]


def _plant(store: Path, sdbctl: CLI) -> Path:
    """What an attacker ships: ``<store>/cache/responses.sqlite`` holding v1's answers under v2's keys
    (the keys are computable: provider, canonical request, seed)."""
    _replay(sdbctl, "-m", V2, "--run-id", "probe2", "--no-cache")
    _replay(sdbctl, "-m", V1, "--run-id", "probe1", "--no-cache")
    v1 = {(e["session_id"], e["payload"]["replay"]["source_seq"]): e["payload"] for e in _llm(store, "probe1")}
    path = store / "cache" / "responses.sqlite"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE completions (key TEXT PRIMARY KEY, completion BLOB NOT NULL)")
        for e in _llm(store, "probe2"):
            payload = e["payload"]
            assert isinstance(payload, dict)
            answer = v1[(e["session_id"], payload["replay"]["source_seq"])]["response"]
            key = cache_key(V2, payload["request"], 0)
            entry = orjson.dumps({"response": answer, "truth": None})
            db.execute("INSERT INTO completions VALUES (?, ?)", (key, entry))
    return path


def test_a_cache_planted_in_the_store_does_not_answer_for_v2(sdbctl: CLI, store: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "30", "--run-id", "base").returncode == 0
    _plant(store, sdbctl)
    real = sdbctl("gate", "probe2")
    assert real.returncode == 1, real.stdout  # the real v2 FAILs
    result = _replay(sdbctl, "-m", V2, "--run-id", "cand")
    assert result["cache_hits"] == 0 and result["model_calls"] == result["steps"]  # v2 itself was asked
    assert not any("cached" in e["payload"]["replay"] for e in _llm(store, "cand"))
    gate = sdbctl("gate", "cand")
    assert gate.returncode == real.returncode == 1, gate.stdout
    assert "from a cache" not in gate.stdout


def test_cache_from_is_read_only_and_its_answers_are_counted(sdbctl: CLI, store: Path, machine_cache: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "30", "--run-id", "base").returncode == 0
    planted = _plant(store, sdbctl)
    before = planted.read_bytes()
    result = _replay(sdbctl, "-m", V2, "--run-id", "fromit", "--cache-from", str(planted))
    steps = result["steps"]
    assert result["cache_hits"] == steps and result["model_calls"] == 0
    assert all(e["payload"]["replay"]["cached"] is True for e in _llm(store, "fromit"))
    assert planted.read_bytes() == before  # read, never written
    diff = json.loads(sdbctl("diff", "base", "fromit", "--json").stdout)["summary"]
    assert diff["cached_answers"] == steps and diff["answers"] == steps
    table = sdbctl("diff", "base", "fromit")
    assert f"{steps} of the candidate's {steps} answers came from a cache" in table.stdout, table.stdout
    gate = sdbctl("gate", "fromit")
    assert f"{steps} of the candidate's {steps} answers came from a cache" in gate.stdout, gate.stdout
    # nothing of the named cache reached this machine's: without it, v2 is asked
    again = _replay(sdbctl, "-m", V2, "--run-id", "after")
    assert again["cache_hits"] == 0 and again["model_calls"] == steps
    assert sdbctl("diff", "base", "after", "--json").returncode == 0


def test_the_cache_lives_on_this_machine_and_marks_what_it_answered(
    sdbctl: CLI, store: Path, machine_cache: Path
) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "4", "--run-id", "base").returncode == 0
    for mode, model in (("step", V2), ("session", V1)):  # two models: the session's first asks are its own
        first = _replay(sdbctl, "-m", model, "--mode", mode, "--run-id", f"{mode}1")
        second = _replay(sdbctl, "-m", model, "--mode", mode, "--run-id", f"{mode}2")
        assert first["model_calls"] and first["cache_hits"] == 0
        assert second["model_calls"] == 0 and second["cache_hits"] == first["model_calls"]
        assert not any("cached" in (e["payload"].get("replay") or {}) for e in _llm(store, f"{mode}1"))
        marked = [(e["payload"].get("replay") or {}).get("cached") for e in _llm(store, f"{mode}2")]
        assert marked and all(m is True for m in marked)
    assert cache_path(Store.open(store)).is_file() and cache_path(Store.open(store)).is_relative_to(machine_cache)
    assert not (store / "cache").exists()
    # sdbctl rm finds the run's entries where they are
    with sqlite3.connect(cache_path(Store.open(store))) as db:
        entries = db.execute("SELECT count(*) FROM completions").fetchone()[0]
    removed = json.loads(sdbctl("rm", "step1", "--json").stdout)
    assert removed["cache_entries"] > 0
    with sqlite3.connect(cache_path(Store.open(store))) as db:
        assert db.execute("SELECT count(*) FROM completions").fetchone()[0] == entries - removed["cache_entries"]


def _no_complete_run(store: Path, run_id: str) -> None:
    """The run is absent (refused before it was made) or ``partial``: never ``complete``."""
    if (store / "runs" / run_id / "run.json").exists():
        assert Store.open(store).manifest(run_id).status == "partial"


@pytest.mark.parametrize("damage", ["not sqlite", "foreign table", "wrong columns", "entry [1]", "entry not json"])
@pytest.mark.parametrize("where", ["machine", "cache-from"])
def test_a_damaged_cache_is_one_line_naming_it_and_no_complete_run(
    sdbctl: CLI, store: Path, tmp_path: Path, damage: str, where: str
) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "base").returncode == 0
    _replay(sdbctl, "-m", V2, "--run-id", "warm")  # fills this machine's cache
    machine = cache_path(Store.open(store))
    path = machine if where == "machine" else tmp_path / "shipped.sqlite"
    if where == "cache-from":
        path.write_bytes(machine.read_bytes())
        with sqlite3.connect(machine) as db:
            db.execute("DELETE FROM completions")  # the answers come from the named cache, or not at all
    if damage == "not sqlite":
        path.write_bytes(b"this is no database\n" * 100)
    elif damage in ("foreign table", "wrong columns"):
        path.unlink()
        with sqlite3.connect(path) as db:
            if damage == "foreign table":
                db.execute("CREATE TABLE answers (k TEXT, v BLOB)")
            else:
                db.execute("CREATE TABLE completions (k TEXT, v BLOB)")
    else:
        with sqlite3.connect(path) as db:
            db.execute("UPDATE completions SET completion = ?", (b"[1]" if damage == "entry [1]" else b"\xff{",))
    extra = ["--cache-from", str(path)] if where == "cache-from" else []
    out = sdbctl("replay", "base", "-m", V2, "--run-id", "cand", *extra)
    if where == "machine" and damage == "foreign table":
        assert out.returncode == 0, out.stderr  # its own table is made beside the other: not damage
        return
    assert_one_line_error(out, f"response cache {path}")
    _no_complete_run(store, "cand")
    if damage.startswith("entry"):
        assert "is not a completion object" in out.stderr and "left partial" in out.stderr
        assert Store.open(store).manifest("cand").status == "partial"


def test_the_cache_key_names_the_endpoint_so_server_b_is_asked(sdbctl: CLI, store: Path) -> None:
    """Two servers, one model name: the answers server A gave are never served for server B (issue 20
    follow-up, item 7); each server's own answers are still cached, and ``rm`` finds them."""
    assert sdbctl("record", "contract-renewal", "-n", "20", "--run-id", "base").returncode == 0
    with LLMServer() as a, LLMServer(simulator_answer(V2)) as b:
        on_a = _replay(sdbctl, "-m", "openai:m", "--base-url", a.url, "--run-id", "on-a")
        on_b = _replay(sdbctl, "-m", "openai:m", "--base-url", b.url, "--run-id", "on-b")
        assert on_b["cache_hits"] == 0 and on_b["model_calls"] == on_b["steps"] == b.total > 0
        asked_a = a.total
        again = _replay(sdbctl, "-m", "openai:m", "--base-url", a.url, "--run-id", "a-again")
        assert again["cache_hits"] == on_a["steps"] and a.total == asked_a  # A's own answers, from the cache
        # the key names the server without its secrets, and so does the manifest
        secret = _replay(sdbctl, "-m", "openai:m", "--base-url", f"{a.url}?api_key=sk-x", "--run-id", "a-key")
        assert secret["cache_hits"] == 0 and a.total == asked_a + secret["steps"]
        saved = json.loads((store / "runs" / "a-key" / "run.json").read_text())["meta"]["replay"]
        assert saved["endpoint"] == f"{a.url}?api_key=[REDACTED]" and "sk-x" not in json.dumps(saved)
    assert not any("cached" in (e["payload"].get("replay") or {}) for e in _llm(store, "on-b"))
    assert sdbctl("gate", "on-a", "--base", "base").returncode == 0
    assert sdbctl("gate", "on-b", "--base", "base").returncode == 1  # B's own (v2) answers: FAIL
    removed = json.loads(sdbctl("rm", "on-b", "--json").stdout)
    assert removed["cache_entries"] == on_b["steps"]  # its keys rebuilt with its endpoint


_PUT_AND_DIE = """
import os, signal, sys
from pathlib import Path
import orjson
from sdbctl.sdb.replay._cache import ResponseCache
cache = ResponseCache(Path(sys.argv[1]))
for key, blob in orjson.loads(sys.argv[2]):
    cache.put(key, orjson.loads(blob))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_rm_takes_in_a_killed_replays_journal_before_it_deletes(sdbctl: CLI, store: Path) -> None:
    """A replay killed before its answers went into SQLite leaves them in its journal (a dead writer's):
    ``rm`` of the run must delete them too, not let the next cache opener bring them back."""
    import os
    import signal
    import subprocess
    import sys

    from sdbctl.sdb.replay._cache import ResponseCache

    assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "base").returncode == 0
    _replay(sdbctl, "-m", V2, "--run-id", "step1")
    path = cache_path(Store.open(store))
    with sqlite3.connect(path) as db:
        rows = [(k, bytes(v).decode()) for k, v in db.execute("SELECT key, completion FROM completions")]
    assert rows
    # the same answers left in a killed writer's journal, as a replay killed mid-batch leaves them
    done = subprocess.run(
        [sys.executable, "-c", _PUT_AND_DIE, str(path), orjson.dumps(rows).decode()],
        env=os.environ.copy(),
        check=False,
        capture_output=True,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    removed = json.loads(sdbctl("rm", "step1", "--json").stdout)
    assert removed["cache_entries"] == len(rows)
    ResponseCache(path).close()  # the next writer takes in whatever journal is left
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM completions").fetchone()[0] == 0
