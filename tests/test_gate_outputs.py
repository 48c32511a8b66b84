"""What the gate and the diff tell CI and people (issue 21, items 8, 9, 11, 13, 14): JUnit failures that
are the gate's failing checks, flipped sessions named, thresholds in the unit of what they measure,
replay counts that say what they count (and count resumed work), and one definition of ``*``."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection
from html import escape
from pathlib import Path
from typing import Any

import pytest

import sdbctl.fixtures.workloads
from sdbctl.recorders.sdk import Recorder
from sdbctl.recorders.workload import record_workload
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.replay import ReplayOptions, ReplayProgress, prepare, replay
from sdbctl.sdb.store import Store
from tests.conftest import CLI, REPO, assert_one_line_error
from tests.helpers import embedded_view

sdbctl.fixtures.workloads.register_all()

CHAT = REPO / "fixtures" / "chat"


@pytest.fixture
def walkthrough(store: Path) -> Path:
    """The README's walkthrough: 20 customers, the base model's noise and v2, each 3 times."""
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=20, store=str(store), run_id="base")
    for run, model in (("noise", "sim:renewal@v1?noise=0.05"), ("cand", "sim:renewal@v2?noise=0.05")):
        replay(Store.open(store), "base", ReplayOptions(model=model, repeat=3, run_id=run))
    return store


@pytest.fixture
def chat(sdbctl: CLI) -> None:
    """Two trials of five airline conversations: sessions 2 and 4 go from pass to fail."""
    for run in ("a", "b"):
        trial = CHAT / f"trial-{run}.jsonl"
        assert sdbctl("import", "chat", str(trial), "--map", str(CHAT / "map.toml"), "--run-id", run).returncode == 0


def _junit(path: Path) -> tuple[ET.Element, dict[str, ET.Element], dict[str, ET.Element]]:
    """The testsuite, its check testcases and its session testcases, by name."""
    suite = ET.parse(path).getroot()
    cases = suite.findall("testcase")
    checks = {c.get("name", ""): c for c in cases if c.get("classname") == "checks"}
    sessions = {c.get("name", ""): c for c in cases if c.get("classname") == "sessions"}
    assert len(checks) + len(sessions) == len(cases) == int(suite.get("tests", "-1"))
    return suite, checks, sessions


def _failed(cases: dict[str, ET.Element]) -> set[str]:
    return {name for name, case in cases.items() if case.find("failure") is not None}


# --- item 8: JUnit failures are the gate's failing checks ------------------------------------------


def test_a_passing_gate_writes_junit_with_no_failure(sdbctl: CLI, walkthrough: Path, tmp_path: Path) -> None:
    out = sdbctl("gate", "noise", "--noise-aware", "--junit", "g.xml", "--json")
    assert out.returncode == 0, out.stderr
    verdict = json.loads(out.stdout)
    assert verdict["verdict"]["passed"] and verdict["summary"]["sessions_diverged"] > 0  # diverged, yet PASS
    suite, checks, sessions = _junit(tmp_path / "g.xml")
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert list(checks) == [c["name"] for c in verdict["verdict"]["checks"]]
    assert set(sessions) == set(verdict["summary"]["session_ids"]) and not _failed(sessions)
    diverged = [s for s, case in sessions.items() if case.find("system-out") is not None]
    assert len(diverged) == verdict["summary"]["sessions_diverged"]  # listed, as system-out
    assert "args_changed" in (sessions[diverged[0]].findtext("system-out") or "")


def test_junit_failures_are_exactly_the_failing_checks_power_included(
    sdbctl: CLI, walkthrough: Path, tmp_path: Path
) -> None:
    args = ("gate", "cand", "--noise", "noise", "--noise-aware", "--min-detectable", "1", "--junit", "g.xml")
    out = sdbctl(*args, "--json")
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout)
    failing = {c["name"] for c in result["verdict"]["checks"] if not c["passed"]}
    assert failing == {"drift above noise", "power"}
    suite, checks, sessions = _junit(tmp_path / "g.xml")
    assert _failed(checks) == failing and int(suite.get("failures", "-1")) == len(failing)
    assert not _failed(sessions)
    drift = checks["drift above noise"].find("failure")
    assert drift is not None and "95% CI" in drift.get("message", "")
    named = [s for s in result["summary"]["session_ids"] if s in (drift.text or "")]
    assert len(named) == 10 and "and 1 more" in (drift.text or "")  # 11 diverged sessions: ten, then counted
    props = {p.get("name") for p in suite.iter("property")}
    assert {"drift.min_detectable", "outcomes.min_detectable"} <= props  # issue 20's power properties stay


# --- item 9: outcome flips named; the default gate checks outcomes -----------------------------------


def test_flipped_sessions_are_named_in_diff_gate_and_markdown(sdbctl: CLI, chat: None, tmp_path: Path) -> None:
    diff = sdbctl("diff", "a", "b")
    assert diff.returncode == 0, diff.stderr
    assert "sessions pass -> fail: 2, 4" in diff.stdout and "fail -> pass:" not in diff.stdout
    back = sdbctl("diff", "b", "a").stdout
    assert "sessions fail -> pass: 2, 4" in back and "sessions pass -> fail" not in back
    gate = sdbctl("gate", "b", "--base", "a", "--markdown", "g.md", "--html", "g.html")
    assert gate.returncode == 1
    assert "sessions pass -> fail: 2, 4" in gate.stdout
    row = r"outcome flips pass -> fail\s+│ <= 5\.00%\s+│ 40\.00% \(2/5\)\s+│ FAIL"
    assert re.search(row, gate.stdout), gate.stdout
    assert "sessions pass -> fail: 2, 4" in (tmp_path / "g.md").read_text().lower()
    assert embedded_view(tmp_path / "g.html")["header"]["summary"]["outcomes"]["flipped"]["negative"] == ["2", "4"]


def _outcomes_run(store: Path, run_id: str, sessions: int, passed: Collection[int]) -> None:
    with Recorder(store=store, run_id=run_id) as rec:
        for k in range(sessions):
            s = rec.session(f"task-{k:03d}")
            llm = s.llm({"messages": [{"role": "user", "content": "go"}]}, {"choices": []}, model="m", step="s1")
            act = s.action("book", {"k": k}, step="s1", parent=llm, call_id=f"c{k}")
            s.effect("book", {"content": "ok"}, parent=act)
            s.state("outcome", {"value": 1.0 if k in passed else 0.0})


def test_more_than_ten_flips_are_named_ten_then_counted(sdbctl: CLI, store: Path, tmp_path: Path) -> None:
    _outcomes_run(store, "base", 15, passed=range(15))
    _outcomes_run(store, "cand", 15, passed={13, 14})
    ten = ", ".join(f"task-{k:03d}" for k in range(10))
    line = f"sessions pass -> fail: {ten} and 3 more"
    assert line in sdbctl("diff", "base", "cand").stdout
    gate = sdbctl("gate", "cand", "--base", "base", "--markdown", "g.md", "--html", "g.html", "--junit", "g.xml")
    assert gate.returncode == 1 and line in gate.stdout
    assert line in (tmp_path / "g.md").read_text().lower()
    flipped = embedded_view(tmp_path / "g.html")["header"]["summary"]["outcomes"]["flipped"]["negative"]
    assert flipped == [f"task-{k:03d}" for k in range(13)]
    _, checks, _ = _junit(tmp_path / "g.xml")
    flips = checks["outcome flips pass -> fail"].find("failure")
    assert flips is not None and f"{ten} and 3 more" in (flips.text or "")


def test_the_default_outcome_check_merges_with_the_config(sdbctl: CLI, chat: None, tmp_path: Path) -> None:
    def checks(*args: str) -> dict[str, Any]:
        out = sdbctl("gate", "b", "--base", "a", "--json", *args)
        assert out.returncode in (0, 1), out.stderr
        return {c["name"]: c for c in json.loads(out.stdout)["verdict"]["checks"]}

    flips = "outcome flips pass -> fail"
    assert checks()[flips]["passed"] is False  # by default: 2 of 5 > 5%
    (tmp_path / "sdbctl.toml").write_text('[gate]\nlayers = "write"\n')
    assert flips in checks()  # a table replaces its own keys, never the default
    (tmp_path / "sdbctl.toml").write_text("[gate]\nmax_negative_flips = 2\n")
    assert checks()[flips]["passed"] is True and checks()[flips]["limit"] == "<= 2"
    (tmp_path / "sdbctl.toml").write_text("[gate]\nmax_negative_flips = false\n")
    assert flips not in checks()
    assert checks("--max-negative-flips", "0.5")[flips]["limit"] == "<= 50.00%"  # the flag over the table
    help_text = sdbctl("gate", "--help").stdout
    assert re.search(r"--max-negative-flips.*default.*5%", " ".join(help_text.split()), re.S), help_text


def test_the_noise_aware_default_outcome_check_is_mcnemar(sdbctl: CLI, store: Path) -> None:
    _outcomes_run(store, "base", 15, passed=range(15))
    _outcomes_run(store, "noise", 15, passed=range(15))
    _outcomes_run(store, "cand", 15, passed={13, 14})
    out = sdbctl("gate", "cand", "--base", "base", "--noise", "noise", "--noise-aware", "--json")
    names = [c["name"] for c in json.loads(out.stdout)["verdict"]["checks"]]
    assert "outcome regression (McNemar, one-sided)" in names and "outcome flips pass -> fail" not in names
    assert out.returncode == 1  # 13 of 15 pass -> fail: p = 1/8192
    flag = sdbctl("gate", "cand", "--base", "base", "--noise", "noise", "--noise-aware", "--max-negative-flips", "20")
    assert "outcome flips pass -> fail" in flag.stdout and "McNemar" not in flag.stdout


def test_the_default_outcome_check_needs_outcomes_only_when_asked_for(sdbctl: CLI, store: Path) -> None:
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=5, store=str(store), run_id="base")
    replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", run_id="step"))  # no outcomes
    out = sdbctl("gate", "step", "--json")
    assert out.returncode == 1, out.stderr
    assert "outcome flips pass -> fail" not in {c["name"] for c in json.loads(out.stdout)["verdict"]["checks"]}
    assert_one_line_error(sdbctl("gate", "step", "--max-negative-flips", "0"), "need outcomes on both sides")


# --- item 11: a threshold in the unit of what it measures --------------------------------------------


def test_thresholds_and_measurements_share_their_unit_in_every_output(
    sdbctl: CLI, walkthrough: Path, tmp_path: Path
) -> None:
    out = sdbctl(
        "gate", "cand", "--max-step-divergence", "30", "--json",
        "--junit", "g.xml", "--markdown", "g.md", "--html", "g.html",
    )  # fmt: skip
    checks = {c["name"]: c for c in json.loads(out.stdout)["verdict"]["checks"]}
    assert (checks["provider errors"]["limit"], checks["provider errors"]["measured"]) == ("<= 2.00%", "0.00% (0/180)")
    assert (checks["step divergence"]["limit"], checks["step divergence"]["measured"]) == ("<= 30", "27 (of 180)")
    assert checks["session divergence"]["limit"] == "<= 20.00%" and checks["session divergence"]["measured"] == (
        "55.00% (11/20)"
    )
    assert (checks["parse failures"]["limit"], checks["parse failures"]["measured"]) == ("<= 0", "0 (of 180)")
    table = sdbctl("gate", "cand", "--max-step-divergence", "30").stdout
    _, junit, _ = _junit(tmp_path / "g.xml")
    failure = junit["session divergence"].find("failure")
    assert failure is not None and "<= 20.00%" in failure.get("message", "")
    assert "55.00% (11/20)" in failure.get("message", "")
    for name, text, shown in (
        ("table", table, str),
        ("markdown", (tmp_path / "g.md").read_text(), escape),
        ("html", json.dumps(embedded_view(tmp_path / "g.html")["header"]["verdict"]), str),
        ("junit", (tmp_path / "g.xml").read_text(), escape),
    ):
        for check in checks.values():
            assert shown(check["limit"]) in text and shown(check["measured"]) in text, (name, check)
        assert shown("<= 0.02") not in text and shown("<= 0.2 ") not in text, name


def test_a_proportion_threshold_keeps_its_precision(sdbctl: CLI, walkthrough: Path) -> None:
    out = sdbctl("gate", "cand", "--max-error-rate", "0.0005", "--json")
    checks = {c["name"]: c for c in json.loads(out.stdout)["verdict"]["checks"]}
    assert checks["provider errors"]["limit"] == "<= 0.05%"


# --- item 13: replay's counts say what they count, and a resume counts what it resumed ---------------


class _Stop(Exception):
    pass


def _interrupted(store: Path, mode: str, after: int) -> None:
    """A replay of ``base`` under v2, interrupted once ``after`` units are written: left partial."""
    ready = prepare(store, "base", ReplayOptions(model="sim:renewal@v2", run_id="cut", concurrency=1, mode=mode))
    stopped = [False]

    def show(p: ReplayProgress) -> None:
        if p.done >= after and not stopped[0]:
            stopped[0] = True
            raise _Stop

    with pytest.raises(_Stop):
        ready.run(show)
    assert Store.open(store).manifest("cut").status == "partial"


@pytest.mark.parametrize(("mode", "unit"), [("step", "model calls"), ("session", "sessions")])
def test_a_resumed_replay_counts_the_divergences_of_what_it_resumed(
    sdbctl: CLI, store: Path, mode: str, unit: str
) -> None:
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=20, store=str(store), run_id="base")
    whole = sdbctl("replay", "base", "-m", "sim:renewal@v2", "--mode", mode, "--run-id", "whole", "--json")
    expected = json.loads(whole.stdout)
    assert expected["divergences"] > 0
    _interrupted(store, mode, after=8)
    out = sdbctl("replay", "--resume", "cut", "-m", "sim:renewal@v2", "--json")
    assert out.returncode == 0, out.stderr
    resumed = json.loads(out.stdout)
    assert resumed["resumed_steps"] >= 8 and resumed["steps_done"] == expected["steps_done"]
    for key in ("divergences", "stopped_sessions", "errors"):
        assert resumed[key] == expected[key], key
    by_session = {(s["session_id"], s["repeat"]): s["divergences"] for s in resumed["sessions"]}
    assert by_session == {(s["session_id"], s["repeat"]): s["divergences"] for s in expected["sessions"]}
    diff = json.loads(sdbctl("diff", "base", "cut", "--json").stdout)["summary"]
    counted = diff["steps_diverged"] if mode == "step" else diff["sessions_diverged"]
    assert resumed["divergences"] == counted  # the renewal agent: writes only, no tolerance, one call a step
    line = sdbctl("replay", "base", "-m", "sim:renewal@v2", "--mode", mode, "--run-id", "again").stderr
    total = expected["steps"]
    assert f"{total}/{total} {unit} (0 resumed)" in " ".join(line.split()), line
    said = " ".join(line.split())
    assert f"{expected['divergences']} diverged" in said and f"diverged: {unit} whose actions differ" in said
    assert ("sdbctl diff counts steps" if mode == "step" else "sdbctl diff counts committed actions") in said


# --- item 14: one definition of * ----------------------------------------------------------------------


def test_the_star_has_one_definition_in_one_wording(sdbctl: CLI, chat: None) -> None:
    from sdbctl.sdb.diff import FIRST_MARK

    assert FIRST_MARK == "the first divergence of its session, repeat and layer"
    out = sdbctl("diff", "a", "b")
    assert f"* {FIRST_MARK}" in " ".join(out.stderr.split()), out.stderr
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    said = 0
    for page in pages:
        text = " ".join(page.read_text().split())
        for wording in re.findall(r"first divergence of its [a-z, ]+?(?=[:;.(])", text):
            assert wording == FIRST_MARK.removeprefix("the "), (page.name, wording)
            said += 1
    assert said >= 2  # the README and the diff page say it
