"""The settings of a verdict come from the project, never from a store (issue 20, items 1, 3 and 4):
what the differ knows of the agent (read-only, pure and speech actions, success states, the run's
mode) is read from the config, the registered workload's code and the events, a manifest's copy is
shown and never obeyed; a config table of the wrong type is one line, exit 2; a gate table merges with
the default thresholds and a gate that checks nothing is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import sdbctl.fixtures.workloads
from sdbctl.recorders.sdk import Recorder
from sdbctl.recorders.workload import record_workload
from sdbctl.sdb import agents
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.boundary import Boundary
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.store import Store
from sdbctl.sdb.text import markdown_cell
from tests.conftest import CLI, assert_one_line_error

sdbctl.fixtures.workloads.register_all()

DEFAULT_CHECKS = {"step divergence", "session divergence", "parse failures", "provider errors"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's walkthrough, small: a recording, its step replay under v2 (which truly diverges),
    and a session-mode replay under v2 (closed loop: outcomes)."""
    store = tmp_path_factory.mktemp("verdict") / ".sdb"
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=15, store=str(store), run_id="base")
    replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", run_id="cand"))
    replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", mode="session", run_id="closed"))
    replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", repeat=2, run_id="twice"))
    return store


@pytest.fixture
def store(built: Path, tmp_path: Path) -> Path:
    """A copy of the built store for this test to tamper with."""
    copy = tmp_path / ".sdb"
    shutil.copytree(built, copy)
    return copy


def _tamper(store: Path, run: str, change: dict[str, Any]) -> None:
    """Write ``change`` into ``run``'s manifest (``meta`` merged), as a hostile store would."""
    path = store / "runs" / run / "run.json"
    manifest = json.loads(path.read_text())
    meta = change.pop("meta", {})
    manifest.update(change)
    manifest["meta"].update(meta)
    path.write_text(json.dumps(manifest))


def _gate(sdbctl: CLI, candidate: str, *args: str) -> tuple[int, dict[str, Any]]:
    out = sdbctl("gate", candidate, "--json", *args)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def _verdict(doc: dict[str, Any]) -> dict[str, Any]:
    """A gate's verdict and summary without the rules it lists (which show the manifest's copy)."""
    return {"verdict": doc["verdict"], "summary": {k: v for k, v in doc["summary"].items() if k != "rules"}}


# -- item 1: a manifest is shown, never obeyed ----------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "run", "change"),
    [
        ("cand", "base", {"meta": {"actions": {"read_only": ["propose_offer"]}}}),
        ("cand", "base", {"meta": {"actions": {"read_only": ["record_score", "propose_offer", "close_renewal"]}}}),
        ("cand", "cand", {"meta": {"actions": {"read_only": ["propose_offer"]}}}),
        ("cand", "cand", {"mode": "session"}),
        ("closed", "closed", {"mode": "step"}),
        ("twice", "twice", {"repeat": 1}),
        ("twice", "twice", {"mode": "session"}),
        ("closed", "base", {"meta": {"outcome": {"success": ["released"]}}}),
    ],
    ids=str,
)
def test_a_manifest_chooses_no_setting_of_the_verdict(
    sdbctl: CLI, store: Path, candidate: str, run: str, change: dict[str, Any]
) -> None:
    args = ("--fail-on-outcome-regression",) if candidate == "closed" else ()
    code, clean = _gate(sdbctl, candidate, *args)
    assert code == 1  # v2 truly diverges: the attack would turn this FAIL into a PASS or another verdict
    _tamper(store, run, dict(change))
    forged_code, forged = _gate(sdbctl, candidate, *args)
    assert (forged_code, _verdict(forged)) == (code, _verdict(clean))
    shown = [r for r in forged["summary"]["rules"] if not r["obeyed"]]
    if "repeat" not in change:  # the manifest's differing copy is shown, naming it
        assert shown and all(f"run {run!r}" in r["source"] for r in shown), shown


def test_the_diff_and_the_gate_list_the_rules_they_used_and_where_each_came_from(
    sdbctl: CLI, store: Path, tmp_path: Path
) -> None:
    (tmp_path / "sdbctl.toml").write_text('[diff]\nread_only = ["record_*"]\n')
    summary = json.loads(sdbctl("diff", "base", "closed", "--json").stdout)["summary"]
    assert summary["rules"] == [
        {"rule": "read", "values": ["record_*"], "source": "sdbctl.toml", "obeyed": True},
        {"rule": "speech", "values": ["message"], "source": "default", "obeyed": True},
        {
            "rule": "success",
            "values": ["renewed", "restructured"],
            "source": "workload contract-renewal",
            "obeyed": True,
        },
    ]
    assert summary["by_layer"]["read"]["steps_compared"] > 0  # the config's rule was applied
    line = (
        "read: record_* (sdbctl.toml); speech: message (default); "
        "success: renewed, restructured (workload contract-renewal)"
    )
    assert line in sdbctl("diff", "base", "closed").stdout
    gate = sdbctl("gate", "closed", "--markdown", "gate.md")
    assert gate.returncode == 1 and line in gate.stdout
    assert markdown_cell(line) in (tmp_path / "gate.md").read_text()
    _tamper(store, "base", {"meta": {"actions": {"read_only": ["propose_offer"]}}})
    shown = "not obeyed: pure: propose_offer (manifest of run 'base')"
    assert shown in sdbctl("diff", "base", "closed").stdout
    assert shown in sdbctl("gate", "closed").stdout


class _PureWorkload:
    """A workload's code as the differ reads it: its boundary's pure actions and its success states."""

    success_states = ("done",)

    def replay_boundary(self) -> Boundary:
        b = Boundary("pure-test")

        @b.action(pure=True)
        def lookup(key: str) -> str:
            """Read one record."""
            return key

        @b.action()
        def book(key: str) -> str:
            """Write one record."""
            return key

        return b


def _run(store: Path, run_id: str, agent: str, booked: str) -> None:
    with Recorder(store=store, run_id=run_id, meta={"agent": agent, "meta_note": "x"}) as rec:
        for k in range(3):
            s = rec.session(f"t{k}")
            for step, name, args in (("1", "lookup", {"key": f"x{k}"}), ("2", "book", {"key": booked})):
                llm = s.llm({"messages": [{"role": "user", "content": step}]}, {"choices": []}, model="m", step=step)
                s.action(name, args, step=step, parent=llm)
            s.state("done", {})


def test_pure_actions_come_from_the_registered_workloads_code_and_a_stored_path_is_never_imported(
    sdbctl: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(agents._SHORT_NAMES, "pure-test", _PureWorkload)
    store = tmp_path / ".sdb"
    _run(store, "base", "pure-test", "A")
    _run(store, "cand", "pure-test", "A")
    summary = json.loads(sdbctl("diff", "base", "cand", "--json").stdout)["summary"]
    assert {"rule": "pure", "values": ["lookup"], "source": "workload pure-test", "obeyed": True} in summary["rules"]
    assert summary["by_layer"]["read"]["steps_compared"] == 3  # the three lookups, by the workload's code
    by_layer = summary["by_layer"]
    _tamper(store, "cand", {"meta": {"actions": {"read_only": ["book"]}}})  # the manifest's copy: not obeyed
    summary = json.loads(sdbctl("diff", "base", "cand", "--json").stdout)["summary"]
    assert summary["by_layer"] == by_layer
    # a run naming code by path: the differ never imports it, and the path selects nothing
    (tmp_path / "evil.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\nW = object\n")
    _tamper(store, "cand", {"agent": "evil.py:W"})
    out = sdbctl("diff", "base", "cand", "--json")
    assert not (tmp_path / "imported").exists()
    # and the runs no longer name one agent: refused (tests/test_verdict_inputs.py), never half-consulted
    assert_one_line_error(out, "run 'base'", "pure-test", "run 'cand'", "evil.py:W")


# -- item 3: a config table of the wrong type is one line, exit 2 -----------------------------------------


@pytest.mark.parametrize(
    ("command", "table", "needle"),
    [
        ("diff", "[diff]\nlayers = 5", "layers"),
        ("diff", "[diff]\nactions = 5", "actions"),
        ("diff", "[diff]\nread_only = 5", "read_only"),
        ("diff", '[diff]\nspeech = ["message", 5]', "speech"),
        ("diff", '[diff]\nspeech_threshold = "high"', "speech_threshold"),
        ("diff", "[diff]\nspeech_threshold = nan", "speech_threshold"),
        ("diff", "[diff.actions]\npropose_offer = 5", "propose_offer"),
        ("diff", "[diff.actions.propose_offer]\nignore = 5", "ignore"),
        ("diff", "[diff.actions.propose_offer]\nunordered = [1]", "unordered"),
        ("diff", '[diff.actions.propose_offer]\ntext = ["case", 5]', "text"),
        ("diff", "[diff.actions.propose_offer]\nnumeric_tolerance = inf", "numeric_tolerance"),
        ("diff", "[diff.actions.propose_offer]\nnumeric_tolerance = nan", "numeric_tolerance"),
        ("diff", "[diff.actions.propose_offer]\nnumeric_tolerance = -1", "numeric_tolerance"),
        ("diff", '[diff.actions.propose_offer]\nnumeric_tolerance = "0.5"', "numeric_tolerance"),
        ("diff", "[diff.actions.propose_offer]\nnumeric_tolerance = 1e308", "numeric_tolerance"),  # all equal
        ("gate", "[gate]\ncritical_actions = 5", "critical_actions"),
        ("gate", '[gate]\ncritical_actions = ["propose_offer", 5]', "critical_actions"),
        ("gate", "[gate]\nlayers = 5", "layers"),
        ("gate", "[gate]\nnoise_aware = 1", "noise_aware"),
        ("gate", '[gate]\nfail_on_outcome_regression = "yes"', "fail_on_outcome_regression"),
        ("gate", "[gate]\noutcome_alpha = nan", "outcome_alpha"),
        ("gate", "[gate]\nmax_step_divergence = true", "max_step_divergence"),
        ("gate", "[gate]\nmax_error_rate = inf", "max_error_rate"),
        ("gate", "[diff]\nlayers = 5", "layers"),
        ("gate", "gate = 5", "gate"),
        ("diff", "diff = 5", "diff"),
    ],
    ids=str,
)
def test_a_config_key_of_the_wrong_type_is_one_line_naming_the_file_and_the_key(
    sdbctl: CLI, store: Path, tmp_path: Path, command: str, table: str, needle: str
) -> None:
    (tmp_path / "sdbctl.toml").write_text(table + "\n")
    out = sdbctl(command, "base", "cand") if command == "diff" else sdbctl("gate", "cand")
    assert_one_line_error(out, "sdbctl.toml", needle)
    pyproject = table.replace("[diff", "[tool.sdbctl.diff").replace("[gate", "[tool.sdbctl.gate")
    pyproject = pyproject if pyproject.startswith("[") else f"[tool.sdbctl]\n{pyproject}"
    (tmp_path / "sdbctl.toml").unlink()
    (tmp_path / "pyproject.toml").write_text(pyproject + "\n")
    out = sdbctl(command, "base", "cand") if command == "diff" else sdbctl("gate", "cand")
    assert_one_line_error(out, "pyproject.toml", needle)


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e308", "2e12"])
def test_a_numeric_tolerance_flag_must_be_finite(sdbctl: CLI, store: Path, value: str) -> None:
    out = sdbctl("diff", "base", "cand", "--numeric-tolerance", f"propose_offer={value}")
    assert_one_line_error(out, "propose_offer", "numeric_tolerance")


# -- item 4: no gate without a check ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "table", ['layers = "write"', "critical_actions = []", "outcome_alpha = 0.5", "noise_aware = false"]
)
def test_a_gate_table_merges_with_the_default_thresholds(sdbctl: CLI, store: Path, tmp_path: Path, table: str) -> None:
    (tmp_path / "sdbctl.toml").write_text(f"[gate]\n{table}\n")
    code, doc = _gate(sdbctl, "cand")
    assert code == 1  # today: an empty table of thresholds, PASS on a run diverging this much
    assert {c["name"] for c in doc["verdict"]["checks"]} == DEFAULT_CHECKS


def test_a_key_replaces_one_threshold_and_false_switches_one_default_check_off(
    sdbctl: CLI, store: Path, tmp_path: Path
) -> None:
    (tmp_path / "sdbctl.toml").write_text("[gate]\nmax_step_divergence = 0.99\nmax_session_divergence = false\n")
    _, doc = _gate(sdbctl, "cand")
    checks = {c["name"]: c for c in doc["verdict"]["checks"]}
    assert set(checks) == DEFAULT_CHECKS - {"session divergence"}
    assert checks["step divergence"]["limit"] == "<= 99.00%"


def test_a_gate_that_would_check_nothing_is_refused(sdbctl: CLI, store: Path, tmp_path: Path) -> None:
    off = "\n".join(f"{key} = false" for key in ("max_step_divergence", "max_session_divergence"))
    (tmp_path / "sdbctl.toml").write_text(f"[gate]\n{off}\nmax_parse_failures = false\nmax_error_rate = false\n")
    assert_one_line_error(sdbctl("gate", "cand"), "sdbctl.toml", "checks nothing")
    # one check left is a gate again
    (tmp_path / "sdbctl.toml").write_text(f"[gate]\n{off}\nmax_parse_failures = false\nmax_error_rate = 0\n")
    code, doc = _gate(sdbctl, "cand")
    assert [c["name"] for c in doc["verdict"]["checks"]] == ["provider errors"]
    assert code == 0
