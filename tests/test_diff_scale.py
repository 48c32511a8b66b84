"""Scale (issue 22 item 6): the differ writes divergences as it finds them and summarises them in
DuckDB, never holding them as a list; the response cache commits every answer at once without
flushing the disk on each."""

from __future__ import annotations

import gc
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sdbctl.fixtures.workloads
from sdbctl.recorders.sdk import Recorder
from sdbctl.recorders.workload import record_workload
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.diff import DiffConfig, DiffResult, Divergence, Tolerance, diff_runs
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.replay._cache import ResponseCache
from sdbctl.sdb.store import Store
from tests.conftest import CLI

sdbctl.fixtures.workloads.register_all()

pytestmark = pytest.mark.usefixtures("machine_cache")  # this machine's cache: the test's own


def _small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 7 divergences and chunks of 5 groups: a small diff takes every path a large one does."""
    import sdbctl.sdb.diff._commits as commits
    import sdbctl.sdb.diff._found as found
    import sdbctl.sdb.diff._steps as steps

    monkeypatch.setattr(found, "BATCH", 7)
    monkeypatch.setattr(commits, "CHUNK", 5)
    monkeypatch.setattr(steps, "CHUNK", 5)


def _closed_loop(store: Path) -> None:
    """Two closed-loop runs of 60 sessions: in the candidate, a third of the sessions open with an extra
    lookup (which shifts every later step), half change a write's argument."""
    for run in ("base", "cand"):
        with Recorder(store=store, run_id=run) as rec:
            for k in range(60):
                s = rec.session(f"task-{k:02d}")
                calls: list[tuple[str, dict[str, Any]]] = [("get_customer", {"id": k})] * (run == "cand" and k % 3 == 0)
                calls += [("update_plan", {"id": k, "plan": "pro" if run == "cand" and k % 2 else "basic"})]
                calls += [("send_note", {"id": k, "n": i}) for i in range(3)]
                for i, (name, args) in enumerate(calls):
                    llm = s.llm({"messages": [{"role": "user", "content": f"{k}"}]}, {"choices": []}, model="m")
                    act = s.action(name, args, step=f"call-{i}", parent=llm)
                    s.effect(name, {"ok": True}, parent=act)


def _step_mode(store: Path) -> None:
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=120, store=str(store), run_id="base")
    replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", run_id="cand"))


def _saved(store: Path) -> list[dict[str, Any]]:
    """The saved diff's rows, as ``--json`` prints a divergence."""
    path = store / "diffs" / "base..cand" / "divergences.parquet"
    cur = duckdb.connect().execute(f"SELECT * FROM read_parquet('{path}')")
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    out = []
    for row in rows:
        r = dict(zip(names, row, strict=True))
        assert (r.pop("base_run"), r.pop("candidate_run")) == ("base", "cand")
        r["action"] = {"base": r.pop("base_action"), "candidate": r.pop("candidate_action")}
        r["fields"] = json.loads(r["fields"])
        out.append(r)
    return out


@pytest.mark.parametrize("make", [_step_mode, _closed_loop], ids=["by step", "by commit"])
def test_what_a_diff_reports_is_its_saved_file_and_the_counts_are_those_of_the_file(
    make: Any, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(store)
    config = DiffConfig(read_only=("get_*",))
    whole = diff_runs(Store.open(store), "base", "cand", config).as_dict()
    _small_pieces(monkeypatch)
    result = diff_runs(Store.open(store), "base", "cand", config)
    divs = result.as_dict()["divergences"]
    assert len(divs) >= 40  # many batches of 7, many chunks of 5
    assert result.as_dict() == whole  # written in small pieces, the same diff
    saved = _saved(store)
    assert saved == [{k: d[k] for k in saved[0]} for d in divs]  # the saved file, row for row
    s = result.summary
    gated = [d for d in saved if d["layer"] in s.layers]
    assert s.divergences == len(saved)
    assert s.by_reason == dict(sorted(Counter(d["reason"] for d in gated).items()))
    assert s.by_reason_all_layers == dict(sorted(Counter(d["reason"] for d in saved).items()))
    assert {k: v.divergences for k, v in s.by_layer.items()} == {
        layer: sum(d["layer"] == layer for d in saved) for layer in s.by_layer
    }
    firsts: dict[str, tuple[Any, ...]] = {}
    for d in gated:
        if not d["after_first"] and d["repeat"] == 0:
            firsts.setdefault(d["session_id"], (d["step"], d["reason"], d["base_seq"], d["candidate_seq"]))
    assert {k: (f.step, f.reason, f.base_seq, f.candidate_seq) for k, f in s.first_divergence.items()} == firsts
    # each (session, repeat, layer) has exactly one first, and it comes before the others
    seen: set[tuple[str, int, str]] = set()
    for d in saved:
        key = (d["session_id"], d["repeat"], d["layer"])
        assert d["after_first"] == (key in seen)
        seen.add(key)


_PLAIN = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.floats(-2, 2, allow_nan=False), st.text("ab", max_size=2)
)
_FLAT = st.dictionaries(st.sampled_from(["a", "b", "c", "", ".x", "0", "__p"]), _PLAIN, max_size=5)


def _typed(changes: list[list[dict[str, Any]]]) -> list[list[tuple[str, str, str]]]:
    """Changes with their values' types (1 == 1.0 == True to Python)."""
    return [[(c["path"], repr(c["old"]), repr(c["new"])) for c in pair] for pair in changes]


@given(st.lists(st.tuples(_FLAT, _FLAT), max_size=6))
@settings(max_examples=300, deadline=None)
def test_flat_arguments_are_explained_as_deepdiff_explains_them(pairs: list[tuple[Any, Any]]) -> None:
    """DeepDiff took most of a large diff's time; flat arguments skip it, with the same answer."""
    from sdbctl.sdb.diff._explain import deep_changes, field_changes, flat_changes

    assert _typed(field_changes(pairs, Tolerance())) == _typed(deep_changes(pairs, Tolerance()))
    flat = [(a, b) for a, b in pairs if a.keys() == b.keys() and a and not any(k.startswith("__") for k in a)]
    assert all(flat_changes(a, b) is not None for a, b in flat)  # DeepDiff was not asked


def test_nested_arguments_still_go_to_deepdiff() -> None:
    from sdbctl.sdb.diff._explain import field_changes, flat_changes

    old, new = {"a": [1, 2], "b": {"c": 1}}, {"a": [1, 3], "b": {"c": 2}}
    assert flat_changes(old, new) is None
    assert field_changes([(old, new)], Tolerance()) == [
        [{"path": "a[1]", "old": 2, "new": 3}, {"path": "b.c", "old": 1, "new": 2}]
    ]
    within = Tolerance(numeric_tolerance=0.5)  # a numeric tolerance is DeepDiff's to apply
    assert field_changes([({"x": 1}, {"x": 1.2}), ({"x": 1}, {"x": 2})], within) == [
        [],
        [{"path": "x", "old": 1, "new": 2}],
    ]


def _live_divergences() -> int:
    gc.collect()
    return sum(isinstance(o, Divergence) for o in gc.get_objects())


def test_a_diff_holds_no_list_of_its_divergences(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tens of thousands of divergences held as objects made the differ's memory grow with them: the
    result reads them back from the file, a bounded sample at a time."""
    import sdbctl.sdb.diff._results as results

    _step_mode(store)
    monkeypatch.setattr(results, "KEPT", 10)  # a "large" diff: beyond KEPT, never kept whole
    before = _live_divergences()
    result: DiffResult = diff_runs(Store.open(store), "base", "cand")
    n = len(result.divergences)
    assert n == result.summary.divergences > 30
    assert _live_divergences() == before  # the summary is counted; no divergence object is alive
    layers = result.summary.layers
    first = result.divergences.first(3, layers)
    assert len(first) == 3 and _live_divergences() == before + 3
    everything = list(result.divergences)  # read back whole on demand, in order: the same as the file
    assert [d.session_id for d in everything] == sorted(d.session_id for d in everything)
    assert first == sorted(everything, key=lambda d: (d.layer not in layers, d.after_first))[:3]
    assert result.divergences[n - 1] == everything[-1] and result.divergences[2:5] == everything[2:5]
    del everything, first
    assert _live_divergences() == before  # and not kept by the result
    path = result.divergences.path
    del result
    gc.collect()
    assert not path.exists()  # its temporary file goes with it


def test_the_diff_table_prints_the_first_divergences_and_counts_the_rest(sdbctl: CLI, store: Path) -> None:
    _step_mode(store)
    whole = json.loads(sdbctl("diff", "base", "cand", "--json").stdout)
    total = len(whole["divergences"])
    out = sdbctl("diff", "base", "cand", "--limit", "4", env={"COLUMNS": "250"})
    assert out.returncode == 0, out.stderr
    assert f"{total - 4} more divergences" in out.stdout + out.stderr
    gated = set(whole["summary"]["layers"])
    ordered = sorted(whole["divergences"], key=lambda d: (d["layer"] not in gated, d["after_first"]))
    for d in ordered[:4]:
        assert d["session_id"] in out.stdout
    assert whole["summary"]["divergences"] == total and total > 4


# -- the response cache --------------------------------------------------------------------------


def test_the_cache_does_not_flush_the_disk_on_every_answer(tmp_path: Path) -> None:
    """A flush per answer cost ~100 us of a step's ~350 us (the cache halved replay throughput): in WAL
    mode, synchronous=NORMAL commits without it and cannot damage the file; a damaged file is still
    refused (tests/test_cache_trust.py)."""
    cache = ResponseCache(tmp_path / "responses.sqlite")
    cache.put("k", {"response": {}, "truth": None})
    assert cache._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL, not FULL (2)
    assert cache._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    cache.close()
    with sqlite3.connect(tmp_path / "responses.sqlite") as db:  # another reader sees the answer
        assert db.execute("SELECT count(*) FROM completions").fetchone() == (1,)


def test_a_cached_replay_gives_the_answers_an_uncached_one_does(store: Path, machine_cache: Path) -> None:
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=30, store=str(store), run_id="base")
    plain = replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", run_id="plain", cache=False))
    wrote = replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", run_id="wrote"))
    hits = replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", run_id="hits"))
    assert (wrote.model_calls, wrote.cache_hits) == (plain.steps_done, 0)
    assert (hits.model_calls, hits.cache_hits) == (0, plain.steps_done)
    expected = diff_runs(Store.open(store), "base", "plain", save=False).as_dict()["divergences"]
    assert expected  # v2 diverges: the comparison below is not vacuous
    for run in ("wrote", "hits"):
        assert diff_runs(Store.open(store), "base", run, save=False).as_dict()["divergences"] == expected
