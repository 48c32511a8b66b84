"""What a replay re-runs the agent with is never the source manifest's copy (issue 20 follow-up, item
3): the prompt versions come from the base's llm events (their ``prompt`` column) and ``--prompt``;
the agent's options and the seed (which draws the simulated world) from the workload's code and the
command line. A manifest that says otherwise is shown (a refusal naming the flag), never obeyed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import sdbctl.fixtures.workloads
from tests.conftest import CLI, assert_one_line_error
from tests.helpers import record_run, run_events

sdbctl.fixtures.workloads.register_all()

V1 = "sim:renewal@v1"


pytestmark = pytest.mark.usefixtures("machine_cache")  # this machine's directories: the test's own


def _agent_args(store: Path, run_id: str, **changes: Any) -> None:
    """Edit ``meta.agent_args`` of ``run_id``'s manifest, as a store that arrived from elsewhere may."""
    path = store / "runs" / run_id / "run.json"
    manifest = json.loads(path.read_text())
    manifest["meta"]["agent_args"].update(changes)
    path.write_text(json.dumps(manifest))


def _session(sdbctl: CLI, run_id: str, *extra: str) -> dict[str, Any]:
    out = sdbctl("replay", "base", "--mode", "session", "-m", V1, "--run-id", run_id, "--json", *extra)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert isinstance(result, dict)
    return result


def _prompts(store: Path, run_id: str) -> set[str]:
    return {e["prompt"] for e in run_events(store, run_id) if e["kind"] == "llm"}


def test_the_manifests_prompt_versions_are_not_what_the_agent_runs(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "base", sessions=12)
    _agent_args(store, "base", prompts={"offer": "v2"})
    result = _session(sdbctl, "cand")
    assert result["divergences"] == 0 and _prompts(store, "cand") == _prompts(store, "base")
    gate = sdbctl("gate", "cand", "--base", "base")
    assert gate.returncode == 0, gate.stdout
    # the user's --prompt is obeyed
    _session(sdbctl, "asked", "--prompt", "offer@v2")
    assert "offer@v2" in _prompts(store, "asked")


def test_the_versions_the_base_used_come_from_its_events(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "base", sessions=12, prompts={"offer": "v2"})
    _agent_args(store, "base", prompts={})  # the manifest no longer says offer@v2: its events do
    result = _session(sdbctl, "cand")
    assert result["divergences"] == 0
    assert "offer@v2" in _prompts(store, "cand") and "offer@v1" not in _prompts(store, "cand")


def test_a_manifest_seed_is_never_obeyed(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "base", sessions=12)
    clean = _session(sdbctl, "clean")
    _agent_args(store, "base", seed=5)
    out = sdbctl("replay", "base", "--mode", "session", "-m", V1, "--run-id", "told")
    assert_one_line_error(out, "seed 5", "meta.agent_args.seed", "--seed")
    assert not (store / "runs" / "told").exists()
    named = _session(sdbctl, "named", "--seed", "0")
    assert named["divergences"] == clean["divergences"] == 0
    # a base recorded with another seed is replayed with it when the user names it
    record_run(store, "contract-renewal", "seeded", sessions=12, seed=3)
    out = sdbctl("replay", "seeded", "--mode", "session", "-m", V1, "--seed", "3", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["divergences"] == 0, out.stderr


def test_the_manifests_agent_options_are_never_obeyed(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "base", sessions=8)
    _agent_args(store, "base", options={"spine": "p3"})
    out = sdbctl("replay", "base", "--mode", "session", "-m", V1, "--run-id", "told")
    assert_one_line_error(out, "spine", "meta.agent_args.options", "--spine")
    result = _session(sdbctl, "named", "--spine", "p5")
    assert result["divergences"] == 0
    assert _states(store, "named") == _states(store, "base") == {"P5"}  # the P5 spine ran, as recorded
    _session(sdbctl, "p3", "--spine", "p3")  # the user's flag is obeyed
    assert _states(store, "p3") == {"P3"}


def _states(store: Path, run_id: str) -> set[str]:
    """The patterns of the spine's state transitions (P5: a state row; P3: an event log)."""
    return {e["pattern"] for e in run_events(store, run_id) if e["kind"] == "state" and e["pattern"] in ("P3", "P5")}
