"""``sdbctl gate``: exit codes, thresholds from config and flags, JUnit and Markdown outputs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import sdbctl.fixtures.workloads
from sdbctl.recorders.workload import record_workload
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.store import Store
from tests.conftest import CLI, assert_one_line_error
from tests.helpers import embedded_view

sdbctl.fixtures.workloads.register_all()


@pytest.fixture
def runs(store: Path) -> Path:
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=40, store=str(store), run_id="base")
    replay(Store.open(store), "base", ReplayOptions(model="recorded", run_id="same"))
    replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", run_id="v2"))
    return store


def test_exit_codes_pass_fail_and_usage(sdbctl: CLI, runs: Path) -> None:
    assert sdbctl("gate", "same").returncode == 0
    failed = sdbctl("gate", "v2")
    assert failed.returncode == 1 and "FAIL" in failed.stdout and "step divergence" in failed.stdout
    assert sdbctl("gate", "v2", "--max-step-divergence", "0.9", "--max-session-divergence", "0.9").returncode == 0
    assert sdbctl("gate", "v2", "--max-step-divergence", "100", "--max-session-divergence", "100").returncode == 0
    assert_one_line_error(sdbctl("gate", "base"), "no source run")
    assert_one_line_error(sdbctl("gate", "nope"), "'nope' not found")
    assert_one_line_error(sdbctl("gate", "v2", "--max-step-divergence", "-1"), "must be a number >= 0")


def test_critical_action_fails_on_any_divergence(sdbctl: CLI, runs: Path) -> None:
    out = sdbctl(
        "gate",
        "v2",
        "--max-step-divergence",
        "0.9",
        "--max-session-divergence",
        "0.9",
        "--critical-actions",
        "propose_offer,close_renewal",
    )
    assert out.returncode == 1 and "critical action propose_offer" in out.stdout


def test_thresholds_from_pyproject(sdbctl: CLI, runs: Path, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.sdbctl.gate]\nmax_step_divergence = 0.99\n")
    assert sdbctl("gate", "v2").returncode == 1  # a key replaces its own default: session divergence fails
    both = "[tool.sdbctl.gate]\nmax_step_divergence = 0.99\nmax_session_divergence = 0.99\n"
    (tmp_path / "pyproject.toml").write_text(both)
    assert sdbctl("gate", "v2").returncode == 0
    (tmp_path / "pyproject.toml").write_text("[tool.sdbctl.gate]\nmax_steps = 1\n")
    assert_one_line_error(sdbctl("gate", "v2"), "unknown gate key(s) max_steps")


def test_junit_has_one_testcase_per_session_and_markdown_reaches_the_step_summary(
    sdbctl: CLI, runs: Path, tmp_path: Path
) -> None:
    summary = tmp_path / "step_summary.md"
    out = sdbctl(
        "gate", "v2", "--junit", "gate.xml", "--markdown", "gate.md", env={"GITHUB_STEP_SUMMARY": str(summary)}
    )
    assert out.returncode == 1
    suite = ET.parse(tmp_path / "gate.xml").getroot()
    cases = suite.findall("testcase[@classname='sessions']")
    assert len(cases) == 40 and len({c.get("name") for c in cases}) == 40
    failed = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert len(failed) == int(suite.get("failures", "-1")) > 0  # the failing checks (tests/test_gate_outputs.py)
    assert any("args_changed" in (c.findtext("system-out") or "") for c in cases)
    text = (tmp_path / "gate.md").read_text()
    assert text.startswith("## sdbctl gate: FAIL") and summary.read_text() == text


def test_the_step_summary_is_appended_to_and_never_written_over(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdbctl.sdb.ci_summary import markdown, write_ci_files
    from sdbctl.sdb.gate import run_gate

    monkeypatch.chdir(tmp_path)  # the shipped thresholds: no project settings
    st = Store.open(runs)
    result, verdict = run_gate(st, "v2")
    step_summary = tmp_path / "step_summary.md"
    step_summary.write_text("## an earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(step_summary)}
    write_ci_files(st, result, verdict, junit_file=tmp_path / "gate.xml", env=env)
    write_ci_files(st, result, verdict, env=env)  # a second gate in the same job
    text = markdown(result, verdict)
    assert not verdict.passed and text.startswith("## sdbctl gate: FAIL")
    assert step_summary.read_text() == "## an earlier step\n" + text + text
    assert len(ET.parse(tmp_path / "gate.xml").getroot().findall("testcase[@classname='sessions']")) == 40
    write_ci_files(st, result, verdict, markdown_file=tmp_path / "gate.md", env={})  # outside GitHub Actions
    assert (tmp_path / "gate.md").read_text() == text and step_summary.read_text().count(text) == 2


def test_noise_aware_gate_needs_a_noise_floor_and_uses_it(sdbctl: CLI, runs: Path) -> None:
    assert_one_line_error(sdbctl("gate", "v2", "--noise-aware"), "needs a noise floor")
    replay(Store.open(runs), "base", ReplayOptions(model="sim:renewal@v1", run_id="self"))
    out = sdbctl("gate", "v2", "--noise", "self", "--noise-aware", "--json")
    verdict = __import__("json").loads(out.stdout)["verdict"]
    names = [c["name"] for c in verdict["checks"]]
    assert "drift above noise" in names and "step divergence" not in names
    drift = next(c for c in verdict["checks"] if c["name"] == "drift above noise")
    assert out.returncode == (0 if verdict["passed"] else 1) and "self-replay self" in drift["measured"]


def test_diagnose_names_the_weak_field_with_advice(sdbctl: CLI, runs: Path) -> None:
    assert_one_line_error(sdbctl("diagnose", "v2"), "no stored divergences")
    assert sdbctl("diff", "base", "v2").returncode == 0
    report = __import__("json").loads(sdbctl("diagnose", "v2", "--json").stdout)
    top = report["findings"][0]
    assert top["where"] == "propose_offer.discount_pct" and "numeric" in top["evidence"]
    assert "rounding" in top["recommendation"] and "P4" in top["recommendation"]
    assert report["divergences"] > 0 and report["by_action"] == {"propose_offer": report["divergences"]}


def test_demo_runs_the_whole_loop(sdbctl: CLI, tmp_path: Path) -> None:
    out = sdbctl("demo", "--sessions", "30", "--json")
    assert out.returncode == 0, out.stderr
    result = __import__("json").loads(out.stdout)
    assert result["verdict"]["checks"] and "passed" in result["verdict"]
    assert result["summary"]["drift"]["source"].startswith("self-replay")
    report = (tmp_path / result["report"]).read_text()
    assert report.startswith("<!doctype html>")
    assert embedded_view(tmp_path / result["report"])["header"]["summary"]["drift"] == result["summary"]["drift"]
    runs = __import__("json").loads(sdbctl("runs", "--json").stdout)
    assert {r["run_id"] for r in runs} == set(result["runs"].values())
    strict = sdbctl("demo", "--sessions", "30", "--candidate", "sim:renewal@v3", "--strict")
    assert strict.returncode == 1 and "FAIL" in strict.stdout  # v3 drifts well above the noise


def test_tolerance_flags_and_config_override_the_digest_comparison(sdbctl: CLI, runs: Path, tmp_path: Path) -> None:
    strict = __import__("json").loads(sdbctl("diff", "base", "v2", "--json").stdout)
    assert strict["summary"]["by_reason"].get("args_changed", 0) > 0
    loose = sdbctl(
        "diff", "base", "v2", "--ignore", "propose_offer.plan", "--numeric-tolerance", "propose_offer=5", "--json"
    )
    assert __import__("json").loads(loose.stdout)["divergences"] == []
    (tmp_path / "sdbctl.toml").write_text('[diff.actions.propose_offer]\nignore = ["plan", "discount_pct"]\n')
    assert __import__("json").loads(sdbctl("diff", "base", "v2", "--json").stdout)["divergences"] == []
    assert_one_line_error(sdbctl("diff", "base", "v2", "--text", "propose_offer=loud"), "text rules are")
