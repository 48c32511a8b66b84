"""The rough edges a newcomer hit (issue 12), each through the real CLI: no verdict on half a run, real
error causes, specs taken as given, filters that refuse typos, quiet closed pipes."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.conftest import CLI, SDBCTL, cli_env, wait_until
from tests.helpers import embedded_view
from tests.llm_server import LLMServer


def test_an_interrupted_replay_is_no_verdict_until_resumed(sdbctl: CLI, tmp_path: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "30", "--run-id", "base").returncode == 0
    env = cli_env({"OPENAI_API_KEY": "sk-test", "XDG_CACHE_HOME": str(tmp_path / ".cache")})
    with LLMServer() as model:
        model.delay = 0.05
        proc = subprocess.Popen(
            [str(SDBCTL), "replay", "base", "-m", "openai:m", "--base-url", model.url, "--run-id", "cand",
             "--concurrency", "1"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: model.total >= 20, 60, "20 answers asked for")
        proc.send_signal(signal.SIGTERM)  # as CI cancels a job
        proc.wait(timeout=60)
        gate = sdbctl("gate", "cand", "--json")
        assert gate.returncode == 2, gate.stdout  # neither FAIL (1) nor PASS (0)
        assert "partial" in gate.stderr and len(gate.stderr.strip().splitlines()) == 1, gate.stderr
        assert "--resume cand" in gate.stderr  # and says what to do
        named = ["-m", "openai:m", "--base-url", model.url]  # a resume names the model again
        resumed = sdbctl("replay", "--resume", "cand", *named, env={"OPENAI_API_KEY": "sk-test"})
        assert resumed.returncode == 0, resumed.stderr
    verdict = sdbctl("gate", "cand", "--json")
    assert verdict.returncode in (0, 1), verdict.stderr
    assert json.loads(verdict.stdout)["summary"]["partial"] == []


def test_a_simulator_of_another_workload_is_refused(sdbctl: CLI) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "base").returncode == 0
    out = sdbctl("replay", "base", "--model", "sim:triage@v2")
    assert out.returncode == 2 and "contract-renewal" in out.stderr and "sim:renewal@v" in out.stderr, out.stderr
    assert json.loads(sdbctl("runs", "--json").stdout)[0]["run_id"] == "base"  # nothing written


def test_a_refused_connection_is_recorded_as_refused_and_summarised(sdbctl: CLI) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "base").returncode == 0
    out = sdbctl(
        "replay", "base", "-m", "openai:m", "--base-url", "http://127.0.0.1:9/v1", "--retries", "1", "--run-id", "r",
        env={"OPENAI_API_KEY": "sk-test"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "first connection refused:" in out.stderr and "timed out" not in out.stderr, out.stderr
    rows = json.loads(
        sdbctl("query", "SELECT DISTINCT payload->>'$.message' AS m FROM events WHERE kind = 'error'", "--json").stdout
    )
    assert rows and all("connection refused" in r["m"] for r in rows), rows
    dns = sdbctl(
        "replay", "base", "-m", "openai:m", "--base-url", "http://no-such-host.invalid/v1", "--retries", "1", "--json",
        env={"OPENAI_API_KEY": "sk-test"},
    )  # fmt: skip
    assert list(json.loads(dns.stdout)["first_errors"]) == ["DNS lookup failed"], dns.stdout


def test_demo_takes_the_candidate_spec_as_given_and_says_its_noise(sdbctl: CLI) -> None:
    same = sdbctl("demo", "--sessions", "10", "--candidate", "recorded", "--json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["summary"]["steps_diverged"] == 0  # recorded: exactly no divergence
    noisy = sdbctl("demo", "--sessions", "10", "--candidate", "sim:renewal@v2?noise=0.1")
    assert noisy.returncode == 0, noisy.stderr
    assert "noise 0.1 on each answer" in noisy.stderr
    plain = sdbctl("demo", "--sessions", "10", "--candidate", "sim:renewal@v2")
    assert "no noise added" in plain.stderr


def test_an_unknown_filter_value_is_refused_with_the_valid_ones(sdbctl: CLI) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "base").returncode == 0
    out = sdbctl("show", "base", "--kind", "acton")
    assert out.returncode == 2 and "did you mean 'action'" in out.stderr and "llm" in out.stderr, out.stderr
    layers = sdbctl("diff", "base", "base", "--layers", "wrte")
    assert layers.returncode == 2 and "did you mean 'write'" in layers.stderr
    spec = sdbctl("replay", "base", "--model", "sim:renewl@v2")
    assert spec.returncode == 2 and "did you mean 'renewal'" in spec.stderr
    command = sdbctl("shwo", "base")
    assert command.returncode == 2 and "did you mean 'show'" in command.stderr


def test_a_closed_pipe_ends_quietly_like_any_unix_tool(sdbctl: CLI, tmp_path: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "40", "--run-id", "base").returncode == 0
    for args in (["export", "base"], ["query", "SELECT * FROM events", "--csv"], ["show", "base", "--json"]):
        proc = subprocess.Popen(
            [str(SDBCTL), *args], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.read(10)
        proc.stdout.close()  # `| head -c 10`
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
        assert code in (0, -signal.SIGPIPE), (args, code)  # the shell shows 141
        assert err == b"", (args, err)


def test_rm_removes_a_run_with_its_diffs_and_cache_entries_and_bulk_forms_are_dry_runs(
    sdbctl: CLI, tmp_path: Path
) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "base").returncode == 0
    with LLMServer() as model:
        for run in ("r1", "r2"):
            out = sdbctl(
                "replay", "base", "-m", f"openai:{run}", "--base-url", model.url, "--run-id", run,
                env={"OPENAI_API_KEY": "sk-test"},
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
    for run in ("r1", "r2"):
        assert sdbctl("diff", "base", run).returncode == 0
    import sqlite3

    (cache,) = (tmp_path / ".cache").rglob("responses.sqlite")  # this machine's cache of the store

    def entries() -> int:
        with sqlite3.connect(cache) as db:
            return int(db.execute("SELECT count(*) FROM completions").fetchone()[0])

    before = entries()
    out = json.loads(sdbctl("rm", "r1", "--json").stdout)
    assert out["runs"] == ["r1"] and len(out["diffs"]) == 1 and out["dry_run"] is False
    assert out["cache_entries"] > 0 and entries() == before - out["cache_entries"]
    assert {r["run_id"] for r in json.loads(sdbctl("runs", "--json").stdout)} == {"base", "r2"}
    assert sorted(p.name for p in (tmp_path / ".sdb" / "diffs").iterdir()) == ["base..r2"]  # r2's diff stays
    dry = json.loads(sdbctl("rm", "--keep-last", "1", "--json").stdout)
    assert dry["dry_run"] is True and dry["runs"] == ["base"]
    assert {r["run_id"] for r in json.loads(sdbctl("runs", "--json").stdout)} == {"base", "r2"}  # nothing removed
    done = json.loads(sdbctl("rm", "--keep-last", "1", "--yes", "--json").stdout)
    assert done["runs"] == ["base"] and done["dry_run"] is False
    assert [r["run_id"] for r in json.loads(sdbctl("runs", "--json").stdout)] == ["r2"]
    unknown = sdbctl("rm", "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr


def test_latest_is_named_and_an_unknown_run_gets_a_suggestion_and_a_count(sdbctl: CLI) -> None:
    for k in range(7):
        assert sdbctl("record", "contract-renewal", "-n", "1", "--run-id", f"night-{k}").returncode == 0
    shown = sdbctl("show", "@latest")
    assert shown.returncode == 0 and "run night-6" in shown.stdout and "@latest" not in shown.stdout
    typo = sdbctl("show", "nigth-3")
    assert typo.returncode == 2 and "did you mean 'night-3'" in typo.stderr, typo.stderr
    assert "and 2 more" in typo.stderr  # five are named, the rest counted


def test_repeats_are_told_apart_in_junit_and_html(sdbctl: CLI, tmp_path: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "20", "--run-id", "base").returncode == 0
    assert sdbctl("replay", "base", "-m", "sim:renewal@v2", "--repeat", "3", "--run-id", "rep").returncode == 0
    out = sdbctl("gate", "rep", "--junit", "g.xml", "--html", "g.html")
    assert out.returncode == 1, out.stderr
    junit = (tmp_path / "g.xml").read_text()
    assert all(f"rep {k}" in junit for k in range(3)), junit[:2000]
    assert any(key.endswith("#1") for key in embedded_view(tmp_path / "g.html")["details"])  # repeat 1's detail
