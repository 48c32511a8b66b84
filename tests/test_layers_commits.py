"""Verdicts that hold on real agent traffic: layers, comparison by commit over whole sessions,
outcomes and flips, and no verdict on half a run or on nothing (through the real CLI)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.diff import DiffConfig, DiffResult, diff_runs, mcnemar_one_sided, pass_hat_k
from tests.conftest import CLI

CONFIG = '[diff]\nread_only = ["get_*", "search_*"]\n'


def _call(s: Any, step: str, name: str, args: dict[str, Any], *, result: Any = "ok", failed: bool = False) -> None:
    """One model call proposing one tool call, and the tool's result (an error text when ``failed``)."""
    llm = s.llm({"messages": [{"role": "user", "content": step}]}, {"choices": []}, model="m", step=step)
    act = s.action(name, args, step=step, parent=llm, call_id=f"c-{step}")
    s.effect(
        name,
        {"content": "Error: seat map locked" if failed else result},
        parent=act,
        status="error" if failed else "ok",
    )


def _say(s: Any, step: str, text: str) -> None:
    llm = s.llm({"messages": []}, {"choices": []}, model="m", step=step)
    s.action("message", {"content": text}, step=step, parent=llm)


def _outcome(s: Any, value: float) -> None:
    s.state("outcome", {"value": value})


def _base(store: Path, sessions: int = 4) -> None:
    with Recorder(store=store, run_id="base") as rec:
        for k in range(sessions):
            s = rec.session(f"task-{k}")
            _call(s, "call-001", "get_reservation", {"id": f"R{k}"})
            _call(s, "call-002", "update_flight", {"id": f"R{k}", "flight": "HAT170"})
            _call(s, "call-003", "cancel_insurance", {"id": f"R{k}"})
            _say(s, "call-004", f"Your reservation R{k} is now on flight HAT170.")
            _outcome(s, 1.0)


def _diff(sdbctl: CLI, tmp_path: Path, *args: str) -> dict[str, Any]:
    (tmp_path / "sdbctl.toml").write_text(CONFIG)
    out = sdbctl("diff", "base", "cand", "--json", *args)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_an_extra_read_and_a_failed_then_retried_write_are_not_write_divergences(sdbctl: CLI, tmp_path: Path) -> None:
    store = tmp_path / ".sdb"
    _base(store)
    with Recorder(store=store, run_id="cand") as rec:
        for k in range(4):
            s = rec.session(f"task-{k}")
            _call(s, "call-001", "get_user", {"user": "mia"})  # one extra lookup first
            _call(s, "call-002", "get_reservation", {"id": f"R{k}"})
            _call(s, "call-003", "update_flight", {"id": f"R{k}", "flight": "HAT170"}, failed=True)  # fails ...
            _call(s, "call-004", "update_flight", {"id": f"R{k}", "flight": "HAT170"})  # ... and is retried
            _call(s, "call-005", "cancel_insurance", {"id": f"R{k}"})
            _say(s, "call-006", f"Done: reservation R{k} is now on flight HAT170!")  # reworded, same words
            _outcome(s, 1.0)
    result = _diff(sdbctl, tmp_path)
    s = result["summary"]
    assert s["comparison"] == "commit" and s["layers"] == ["write"]
    assert s["by_layer"]["write"] == {
        "steps_compared": 8,  # two committed writes per session, aligned whole
        "steps_diverged": 0,
        "sessions_compared": 4,
        "sessions_diverged": 0,
        "divergences": 0,
        "attempts": {"base": {}, "candidate": {"failed": 4}},  # the failed updates, writes
    }
    assert s["steps_diverged"] == 0 and s["step_divergence_rate"] == 0.0
    assert s["attempts"]["candidate"] == {"failed": 4} and s["attempts"]["base"] == {}
    assert s["by_layer"]["read"]["divergences"] == 4  # the extra lookups are reported, in their layer
    assert {d["reason"] for d in result["divergences"]} == {"extra"}
    assert all(d["layer"] == "read" and d["action"]["candidate"] == "get_user" for d in result["divergences"])
    assert s["by_layer"]["speech"]["divergences"] == 0  # a reworded reply is similar enough
    assert s["outcomes"]["negative_flips"] == 0 and s["outcomes"]["mcnemar_p"] == 1.0
    # the same runs compared step by step (the old differ) see the shift everywhere
    by_step = _diff(sdbctl, tmp_path, "--align", "step")["summary"]
    assert by_step["comparison"] == "step" and by_step["steps_diverged"] >= 8


def test_one_changed_argument_of_one_committed_write_is_one_divergence_with_its_path(
    sdbctl: CLI, tmp_path: Path
) -> None:
    store = tmp_path / ".sdb"
    _base(store)
    with Recorder(store=store, run_id="cand") as rec:
        for k in range(4):
            s = rec.session(f"task-{k}")
            _call(s, "call-001", "get_reservation", {"id": f"R{k}"})
            flight = "HAT999" if k == 2 else "HAT170"
            _call(s, "call-002", "update_flight", {"id": f"R{k}", "flight": flight})
            _call(s, "call-003", "cancel_insurance", {"id": f"R{k}"})
            _say(
                s,
                "call-004",
                "I could not help with that." if k == 2 else f"Your reservation R{k} is now on flight HAT170.",
            )
            _outcome(s, 0.0 if k == 2 else 1.0)
    result = _diff(sdbctl, tmp_path)
    writes = [d for d in result["divergences"] if d["layer"] == "write"]
    assert len(writes) == 1
    (d,) = writes
    assert d["session_id"] == "task-2" and d["reason"] == "args_changed" and d["after_first"] is False
    assert d["fields"] == [{"path": "flight", "old": "HAT170", "new": "HAT999"}]
    speech = [d for d in result["divergences"] if d["layer"] == "speech"]
    assert [x["reason"] for x in speech] == ["speech_changed"] and speech[0]["similarity"] < 0.8
    s = result["summary"]
    assert s["sessions_diverged"] == 1 and s["steps_diverged"] == 1 and s["steps_compared"] == 8
    assert s["first_divergence"]["task-2"]["reason"] == "args_changed"
    assert s["outcomes"] == {
        "sessions": 4,
        "missing": 0,
        "base_pass": 4,
        "candidate_pass": 3,
        "negative_flips": 1,
        "positive_flips": 0,
        "mcnemar_p": 0.5,
        "flipped": {"negative": ["task-2"], "positive": []},
        "pass_k": {"base": None, "candidate": None},
        "alpha": 0.05,
        "min_detectable": None,  # 4 sessions: the exact test at 0.05 can never reject (p >= 1/16)
        "target": 0.05,
        "sessions_needed": 134,  # for a fall of 5 points, with no fail -> pass
    }
    # the gate: writes fail it; the flip fails --max-negative-flips 0, in JUnit too
    gate = sdbctl("gate", "cand", "--base", "base", "--max-negative-flips", "0", "--junit", "g.xml", "--json")
    assert gate.returncode == 1, gate.stderr
    checks = {c["name"]: c for c in json.loads(gate.stdout)["verdict"]["checks"]}
    assert checks["outcome flips pass -> fail"]["passed"] is False
    suite = ET.parse(tmp_path / "g.xml").getroot()
    flips = suite.find("testcase[@name='outcome flips pass -> fail']/failure")
    assert flips is not None and "sessions (1): task-2" in (flips.text or "")
    assert (suite.findtext("testcase[@name='task-2']/system-out") or "").startswith("outcome: pass -> fail")
    loose = sdbctl(
        "gate", "cand", "--base", "base", "--max-step-divergence", "1", "--max-session-divergence", "1",
        "--max-negative-flips", "1", "--fail-on-outcome-regression", "--json",
    )  # fmt: skip
    assert loose.returncode == 0, loose.stdout  # one flip of four: p = 0.5, not a regression
    wider = json.loads(sdbctl("gate", "cand", "--base", "base", "--layers", "write,speech", "--json").stdout)
    assert wider["summary"]["layers"] == ["write", "speech"] and wider["summary"]["steps_diverged"] == 2


def test_mcnemar_and_pass_k_match_hand_computed_values() -> None:
    # 5 negative and 1 positive flips: P(X >= 5), X ~ Bin(6, 1/2) = (6 + 1) / 64
    assert mcnemar_one_sided(5, 1) == pytest.approx(7 / 64)
    assert mcnemar_one_sided(0, 3) == 1.0 and mcnemar_one_sided(0, 0) == 1.0
    assert mcnemar_one_sided(8, 0) == pytest.approx(1 / 256)
    # n = 4 repeats with c = 2 successes: pass^1 = 2/4, pass^2 = C(2,2)/C(4,2) = 1/6, pass^3 = 0
    results = {"a": [True, False, True, False], "b": [True, True, True, True]}
    assert pass_hat_k(results, 1) == pytest.approx((0.5 + 1.0) / 2)
    assert pass_hat_k(results, 2) == pytest.approx((1 / 6 + 1.0) / 2)
    assert pass_hat_k(results, 3) == pytest.approx((0.0 + 1.0) / 2)
    assert pass_hat_k(results, 5) is None


def test_pass_k_comes_from_the_outcomes_of_repeats(sdbctl: CLI, tmp_path: Path) -> None:
    store = tmp_path / ".sdb"
    _base(store, sessions=2)
    with Recorder(store=store, run_id="cand", meta={"repeat": 3}) as rec:
        for k in range(2):
            for r in range(3):
                s = rec.session(f"task-{k}" + (f"#r{r}" if r else ""))
                _call(s, "call-001", "get_reservation", {"id": f"R{k}"})
                _call(s, "call-002", "update_flight", {"id": f"R{k}", "flight": "HAT170"})
                _call(s, "call-003", "cancel_insurance", {"id": f"R{k}"})
                _outcome(s, 0.0 if (k, r) == (1, 2) else 1.0)
    s = _diff(sdbctl, tmp_path)["summary"]
    assert s["repeats"] == 3 and s["sessions_compared"] == 2
    # task-0: 3/3, task-1: 2/3 -> pass^1 = (1 + 2/3) / 2, pass^3 = (1 + 0) / 2
    assert s["outcomes"]["pass_k"]["candidate"] == {
        "1": pytest.approx(5 / 6),
        "2": pytest.approx((1 + 1 / 3) / 2),
        "3": pytest.approx(0.5),
    }
    assert s["drift"]["source"] == "3 repeats of the candidate"


def test_partial_runs_are_refused_and_an_empty_comparison_is_an_error(sdbctl: CLI, tmp_path: Path) -> None:
    store = tmp_path / ".sdb"
    _base(store)
    rec = Recorder(store=store, run_id="cand", handle_signals=False)
    s = rec.session("task-0")
    _call(s, "call-001", "get_reservation", {"id": "R0"})
    rec.close("partial")
    for args in (
        ("diff", "base", "cand"),
        ("gate", "cand", "--base", "base"),
        ("replay", "cand", "--model", "recorded"),
    ):
        out = sdbctl(*args)
        assert out.returncode == 2 and "partial" in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
    allowed = sdbctl("diff", "base", "cand", "--allow-partial")
    assert allowed.returncode == 0 and "PARTIAL" in allowed.stdout + allowed.stderr
    with Recorder(store=store, run_id="quiet") as rec:
        rec.session("task-0").input("ticket", {"text": "hello"})  # no model action at all
    empty = sdbctl("diff", "quiet", "quiet")
    assert empty.returncode == 2 and "nothing to compare" in empty.stderr


def test_a_tool_call_log_without_llm_events_is_compared(sdbctl: CLI, tmp_path: Path) -> None:
    for run, amount in (("base", 10), ("cand", 12)):
        log = tmp_path / f"{run}.jsonl"
        log.write_text(
            "\n".join(
                json.dumps({"trace": f"t{k}", "n": i, "type": "tool", "tool": tool, "args": args})
                for k in range(3)
                for i, (tool, args) in enumerate(
                    [("lookup", {"k": k}), ("refund", {"amount": amount if k == 1 else 10})]
                )
            )
        )
    (tmp_path / "map.toml").write_text(
        'session = "trace"\norder = "n"\nkind = "type"\nname = "tool"\nargs = "args"\n[kinds]\ntool = "action"\n'
    )
    for run in ("base", "cand"):
        out = sdbctl("import", "jsonl", f"{run}.jsonl", "--map", "map.toml", "--run-id", run)
        assert out.returncode == 0, out.stderr
    result = json.loads(sdbctl("diff", "base", "cand", "--json").stdout)
    assert [(d["session_id"], d["reason"], d["fields"]) for d in result["divergences"]] == [
        ("t1", "args_changed", [{"path": "amount", "old": 10, "new": 12}])
    ]
    assert result["summary"]["steps_compared"] == 6


@pytest.mark.parametrize(
    ("workload", "family"), [("contract-renewal", "renewal"), ("support-triage", "triage"), ("research", "research")]
)
def test_the_noise_aware_gate_passes_on_noise_and_fails_on_drift_on_every_reference_workload(
    sdbctl: CLI, workload: str, family: str
) -> None:
    assert sdbctl("record", workload, "-n", "60", "--run-id", "base").returncode == 0
    for run, spec in (("noise", f"sim:{family}@v1?noise=0.05"), ("v2", f"sim:{family}@v2")):
        out = sdbctl("replay", "base", "--model", spec, "--repeat", "3", "--run-id", run)
        assert out.returncode == 0, out.stderr
    noise = sdbctl("gate", "noise", "--noise-aware", "--json")
    assert noise.returncode == 0, noise.stdout
    drift = json.loads(noise.stdout)["summary"]["drift"]
    assert drift["source"] == "3 repeats of the candidate" and drift["noise_floor"] > 0  # measured, not assumed
    assert json.loads(noise.stdout)["summary"]["layers"] == ["write"]
    drifted = sdbctl("gate", "v2", "--noise-aware", "--json")
    assert drifted.returncode == 1, drifted.stdout
    assert json.loads(drifted.stdout)["summary"]["drift"]["drift_above_noise"] is True


def test_recorded_workloads_carry_outcomes_from_their_success_states(sdbctl: CLI, tmp_path: Path) -> None:
    assert sdbctl("record", "support-triage", "-n", "100", "--run-id", "base").returncode == 0
    assert sdbctl("record", "support-triage", "-n", "100", "-m", "sim:triage@v3", "--run-id", "v3").returncode == 0
    s = json.loads(sdbctl("diff", "base", "v3", "--json").stdout)["summary"]
    assert s["comparison"] == "commit" and s["outcomes"]["sessions"] == 100
    changed = {t["session_id"] for t in s["terminal_changes"]}
    success = {"resolved", "refunded"}
    flips = {t["session_id"] for t in s["terminal_changes"] if (t["base"] in success) != (t["candidate"] in success)}
    assert set(s["outcomes"]["flipped"]["negative"]) | set(s["outcomes"]["flipped"]["positive"]) == flips
    assert flips <= changed
    assert flips  # v3 flips some outcomes, so the comparison above is not vacuous
    manifest = json.loads((tmp_path / ".sdb" / "runs" / "base" / "run.json").read_text())
    assert manifest["meta"]["outcome"] == {"success": ["resolved", "refunded"]}  # read from the manifest


def test_the_differ_gives_the_same_result_in_two_halves_as_in_one(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdbctl.sdb.store import Store

    _base(store, sessions=40)
    with Recorder(store=store, run_id="cand") as rec:
        for k in range(40):
            s = rec.session(f"task-{k}")
            _call(s, "call-001", "get_reservation", {"id": f"R{k}", "v": k % 3})
            _call(s, "call-002", "update_flight", {"id": f"R{k}", "flight": "HAT170" if k % 2 else "HAT9"})
            _call(s, "call-003", "cancel_insurance", {"id": f"R{k}"})
    config = DiffConfig(read_only=("get_*",))
    monkeypatch.setenv("SDB_DIFF_WORKERS", "1")
    one = diff_runs(Store.open(store), "base", "cand", config, save=False)
    monkeypatch.setenv("SDB_DIFF_WORKERS", "2")
    monkeypatch.setenv("SDB_DIFF_MIN_ITEMS", "2")  # fork even for this small diff
    two = diff_runs(Store.open(store), "base", "cand", config, save=False)
    assert one.as_dict() == two.as_dict() and len(one.divergences) >= 40


# -- found in review: each pinned -----------------------------------------------------------------


def _tool(
    s: Any, step: str, name: str, args: dict[str, Any], *, failed: bool = False, state: str | None = None
) -> None:
    _call(s, step, name, args, failed=failed)
    if state:
        s.state(state, {}, step=step)


def _diff_api(store: Path, **kw: Any) -> DiffResult:
    from sdbctl.sdb.store import Store

    return diff_runs(Store.open(store), "base", "cand", DiffConfig(read_only=("get_*",)), save=False, **kw)


def test_an_extra_step_shifts_no_state_and_the_first_divergence_is_the_earliest(store: Path) -> None:
    with Recorder(store=store, run_id="base") as rec:
        for k in range(4):
            s = rec.session(f"t{k}")
            for i, (name, state) in enumerate((("book", "booked"), ("pay", "paid"), ("notify", "done"))):
                _tool(s, f"{i}", name, {"k": k}, state=state)
    with Recorder(store=store, run_id="cand") as rec:
        for k in range(4):
            s = rec.session(f"t{k}")
            _tool(s, "x", "get_x", {"k": k})  # one extra lookup shifts every step key after it
            for i, (name, state) in enumerate((("book", "booked"), ("pay", "paid"), ("notify", "done"))):
                _tool(s, f"{i}b", name, {"k": k + (k == 1 and i == 0)}, state=state)
            if k == 1:
                _tool(s, "late", "refund", {"k": k})  # and an extra write at the end
    result = _diff_api(store)
    writes = [d for d in result.divergences if d.layer == "write"]
    assert [(d.session_id, d.reason, d.after_first) for d in writes] == [
        ("t1", "args_changed", False),  # the cause, first in the session's alignment
        ("t1", "extra", True),
    ]
    assert result.summary.first_divergence["t1"].reason == "args_changed"


def test_the_noise_floor_keeps_sessions_the_candidate_lost(store: Path) -> None:
    _base(store, sessions=10)
    with Recorder(store=store, run_id="cand", meta={"repeat": 3}) as rec:
        for k in range(10):
            for r in range(3):
                s = rec.session(f"task-{k}" + (f"#r{r}" if r else ""))
                lost = k < 5  # half the sessions: every write now fails
                _call(s, "call-001", "get_reservation", {"id": f"R{k}"})
                _call(s, "call-002", "update_flight", {"id": f"R{k}", "flight": "HAT170"}, failed=lost)
                _call(s, "call-003", "cancel_insurance", {"id": f"R{k}"}, failed=lost)
    drift = _diff_api(store).summary.drift
    assert drift is not None and drift.sessions == 10 and drift.drift_above_noise is True


def test_a_session_without_an_outcome_in_the_candidate_is_a_failure(store: Path) -> None:
    _base(store, sessions=6)
    with Recorder(store=store, run_id="cand") as rec:
        for k in range(6):
            s = rec.session(f"task-{k}")
            _call(s, "call-001", "get_reservation", {"id": f"R{k}"})
            _call(s, "call-002", "update_flight", {"id": f"R{k}", "flight": "HAT170"})
            _call(s, "call-003", "cancel_insurance", {"id": f"R{k}"})
            if k < 2:
                _outcome(s, 1.0)  # four sessions never reach their end
    outcomes = _diff_api(store).summary.outcomes
    assert outcomes is not None and outcomes.sessions == 6 and outcomes.missing == 4 and outcomes.negative_flips == 4


def test_a_base_of_two_trials_against_one_trial_compares_its_first(store: Path) -> None:
    with Recorder(store=store, run_id="base", meta={"repeat": 2}) as rec:
        for k in range(4):
            for r in range(2):
                s = rec.session(f"t{k}" + (f"#r{r}" if r else ""))
                _call(s, "call-001", "book", {"k": k})
    with Recorder(store=store, run_id="cand") as rec:
        for k in range(4):
            _call(rec.session(f"t{k}"), "call-001", "book", {"k": k})
    summary = _diff_api(store).summary
    assert summary.sessions_compared == 4 and summary.divergences == 0
