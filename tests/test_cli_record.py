"""``sdbctl record`` and ``sdbctl patterns`` end to end through the installed script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CLI, assert_one_line_error


def test_record_reference_agent_then_query_it(sdbctl: CLI) -> None:
    out = sdbctl("record", "contract-renewal", "--model", "sim:renewal@v1", "--sessions", "100", "--run-id", "r")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "r" and "renewed" in out.stdout
    tags = json.loads(sdbctl("query", "SELECT DISTINCT pattern FROM events WHERE pattern <> ''", "--json").stdout)
    assert {t["pattern"] for t in tags} == {"P1", "P2", "P3", "P4", "P5", "P6"}
    again = sdbctl("record", "contract-renewal", "--sessions", "100", "--run-id", "r2", "--json")
    summary = json.loads(again.stdout)
    assert summary["run_id"] == "r2" and summary["sessions"] == 100
    assert set(summary["terminal_states"]) == {"renewed", "restructured", "churned"}
    same = sdbctl(
        "query",
        "SELECT count(*) AS n FROM events a JOIN events b USING (session_id, seq) WHERE "
        "a.run_id = 'r' AND b.run_id = 'r2' AND a.kind = 'action' AND a.digest <> b.digest",
        "--json",
    )
    assert json.loads(same.stdout) == [{"n": 0}]


def test_record_a_workload_from_a_file(sdbctl: CLI, tmp_path: Path) -> None:
    (tmp_path / "my_agent.py").write_text(
        "from sdbctl.fixtures.contract_renewal import RenewalWorkload\nworkload = RenewalWorkload()\n"
    )
    out = sdbctl("record", "my_agent.py:workload", "--sessions", "3", "--spine", "p3", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sessions"] == 3
    manifest = json.loads(sdbctl("runs", "--json").stdout)[0]
    assert manifest["model"] == "sim:renewal@v1"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("record", "no-such-workload"), "agent 'no-such-workload': not a workload"),
        (("record", "nomodule_xyz:thing"), "cannot import module 'nomodule_xyz'"),
        (("record", "sdbctl.fixtures.contract_renewal:Nothing"), "has no attribute 'Nothing'"),
        (("record", "sdbctl.fixtures.telco:TELCO_CSV"), "is not a workload"),
        (("record", "contract-renewal", "--model", "sim:renewal@v9"), "no such version"),
        (("record", "contract-renewal", "--model", "nope:x"), "unknown model spec 'nope:x'"),
        (("record", "contract-renewal", "--prompt", "offer@v7"), "versions: v1, v2"),
        (("record", "contract-renewal", "--spine", "p9"), "--spine must be p5 or p3"),
        (("patterns", "show", "P9"), "unknown pattern 'P9'"),
    ],
)
def test_bad_record_and_pattern_arguments_are_exit_2(
    sdbctl: CLI, tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    assert_one_line_error(sdbctl(*args), needle)
    assert not (tmp_path / ".sdb").exists()  # refused before anything was written


def test_patterns_list_show_and_recommend(sdbctl: CLI, tmp_path: Path) -> None:
    listed = json.loads(sdbctl("patterns", "list", "--json").stdout)
    assert [p["tag"] for p in listed] == ["P1", "P2", "P3", "P4", "P5", "P6"]
    shown = sdbctl("patterns", "show", "p5").stdout
    assert "shared state machine" in shown and "What a divergence means" in shown
    flags = sdbctl(
        "patterns",
        "recommend",
        "--name",
        "renewal",
        "--runtime",
        "long-horizon",
        "--external-events",
        "--deadlines",
        "--specialists",
        "4",
        "--fan-out",
        "--policy",
        "--human-approval",
    )
    lines = flags.stdout.splitlines()
    assert len(lines) == 6 and lines[1].startswith("Spine: P5") and "P3 log" in lines[1]
    assert lines[2].startswith("Coordination: P1 + P2") and lines[3].startswith("Control: P4 + P6")
    (tmp_path / "triage.toml").write_text('[workload]\nname = "triage"\nruntime = "conversational"\npolicy = true\n')
    from_file = json.loads(sdbctl("patterns", "recommend", "--from", "triage.toml", "--json").stdout)
    assert from_file["steps"]["2_spine"] == "P3 event log" and from_file["steps"]["4_control"] == ["P4"]
    (tmp_path / "bad.toml").write_text('[workload]\nruntime = "weekly"\n')
    assert_one_line_error(sdbctl("patterns", "recommend", "--from", "bad.toml"), "runtime 'weekly'")
