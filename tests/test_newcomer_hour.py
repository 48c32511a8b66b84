"""The newcomer's first hour, again (issue 21): Ctrl-C says what it left and what to do, export leaves
nothing behind on an error, the demo checks --sessions and explains its verdict, an empty run is never
complete, and the chat export keeps the run's outcomes and says plainly what it leaves out."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.store import Store
from tests.chat_runs import MAP, TRIALS, ok, query_rows
from tests.conftest import CLI, REPO, SDBCTL, assert_one_line_error, cli_env, wait_until

# ---- Ctrl-C (item 1) ----------------------------------------------------------------------------------

# a model that answers as sim:renewal@v1, slowly, in blocking code (so that a signal mostly lands inside
# a task), and counts its answers in a file the test watches
SLOW_MODEL = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from sdbctl.sdb.providers import resolve

    _sim = resolve("sim:renewal@v1")

    async def answer(request):
        time.sleep(float(os.environ.get("SLOW_MODEL_DELAY", "0.05")))
        with open(Path(__file__).with_name("answers.log"), "a") as fh:
            fh.write("x\\n")
        return (await _sim.complete(request)).response
    """
)


def _answers(tmp_path: Path) -> int:
    log = tmp_path / "answers.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _interrupted(tmp_path: Path, args: list[str], ready: object, what: str) -> subprocess.CompletedProcess[str]:
    """``sdbctl ARGS`` as a process, sent SIGINT (as Ctrl-C sends it) once ``ready()`` holds."""
    env = cli_env({"XDG_CACHE_HOME": str(tmp_path / ".cache")})
    proc = subprocess.Popen(
        [str(SDBCTL), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: proc.poll() is not None or ready(), 120, what)  # type: ignore[operator]
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _the_line(out: subprocess.CompletedProcess[str]) -> str:
    """The one line an interrupted command prints: exit 130, nothing on stdout, no traceback."""
    assert out.returncode == 130, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and out.stdout == "", (out.stdout, out.stderr)
    assert lines[0].startswith("sdbctl: interrupted: "), lines[0]
    return lines[0]


def _printed_command(line: str) -> list[str]:
    """The command at the end of the line (after its last ': sdbctl '), as the shell would split it."""
    words = shlex.split(line[line.rindex(": sdbctl ") + 2 :])
    assert words[0] == "sdbctl"
    return words[1:]


def test_ctrl_c_during_a_replay_names_the_partial_run_and_the_resume_command_that_works(
    sdbctl: CLI, tmp_path: Path
) -> None:
    ok(sdbctl("record", "contract-renewal", "-n", "10", "--run-id", "base", "--store", "other"))
    (tmp_path / "slow_model.py").write_text(SLOW_MODEL)
    args = ["replay", "base", "-m", "py:slow_model:answer", "--concurrency", "1", "--store", "other"]
    out = _interrupted(tmp_path, args, lambda: _answers(tmp_path) >= 5, "5 answers")
    line = _the_line(out)
    (run,) = [r for r in json.loads(ok(sdbctl("runs", "--json", "--store", "other")).stdout) if r["run_id"] != "base"]
    assert run["status"] == "partial" and f"run {run['run_id']} is left partial" in line, line
    command = _printed_command(line)
    assert command[:5] == ["replay", "--resume", run["run_id"], "--model", "py:slow_model:answer"], line
    assert command[-2:] == ["--store", "other"], line  # the store the user named: the command works as printed
    resumed = sdbctl(*command, "--json", env={"SLOW_MODEL_DELAY": "0"})
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["status"] == "complete" and result["resumed_steps"] >= 4, result
    gate = sdbctl("diff", "base", run["run_id"], "--json", "--store", "other")
    assert gate.returncode == 0 and json.loads(gate.stdout)["summary"]["partial"] == [], gate.stderr


def test_ctrl_c_during_a_recording_names_the_partial_run_and_says_to_record_again_and_remove_it(
    sdbctl: CLI, tmp_path: Path
) -> None:
    (tmp_path / "slow_model.py").write_text(SLOW_MODEL)
    args = ["record", "contract-renewal", "-m", "py:slow_model:answer", "-n", "50", "--concurrency", "2"]
    args += ["--run-id", "rec"]
    line = _the_line(_interrupted(tmp_path, args, lambda: _answers(tmp_path) >= 6, "6 answers"))
    (run,) = json.loads(ok(sdbctl("runs", "--json")).stdout)
    assert (run["run_id"], run["status"]) == ("rec", "partial")
    assert "run rec is left partial" in line and "record again" in line and "cannot be resumed" in line, line
    assert _printed_command(line) == ["rm", "rec"], line
    ok(sdbctl(*_printed_command(line)))
    assert json.loads(ok(sdbctl("runs", "--json")).stdout) == []


_JSONL_MAP = 'session = "s"\norder = "i"\nkind = "k"\nname = "n"\nargs = "a"\n[kinds]\naction = "action"\n'


@pytest.mark.parametrize("importer", ["chat", "otel", "jsonl"])
def test_ctrl_c_while_an_import_reads_its_input_leaves_no_run_and_says_so(
    sdbctl: CLI, tmp_path: Path, importer: str
) -> None:
    fifo = tmp_path / "input.jsonl"
    os.mkfifo(fifo)  # the importer blocks reading it: the signal lands while it reads
    (tmp_path / "map.toml").write_text(_JSONL_MAP)
    args = ["import", importer, str(fifo), "--run-id", "imp", *(["--map", "map.toml"] if importer == "jsonl" else [])]
    env = cli_env({"XDG_CACHE_HOME": str(tmp_path / ".cache")})
    proc = subprocess.Popen(
        [str(SDBCTL), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with open(fifo, "w") as writer:  # returns once the importer has opened its input
            writer.write('{"s": "a"')
            writer.flush()
            proc.send_signal(signal.SIGINT)
            # a signal that lands between two reads is handled at the next one: the end of the input
            time.sleep(0.5)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    line = _the_line(subprocess.CompletedProcess(args, proc.returncode, out, err))
    assert "nothing was imported" in line and "run the command again" in line, line
    assert not (tmp_path / ".sdb" / "runs" / "imp").exists()


def test_ctrl_c_while_an_import_writes_its_run_removes_the_run_and_says_so(sdbctl: CLI, tmp_path: Path) -> None:
    conversation = json.loads(Path(TRIALS[0]).read_text().splitlines()[0])
    with open(tmp_path / "big.jsonl", "w") as fh:
        for i in range(6000):
            fh.write(json.dumps({**conversation, "task_id": i}) + "\n")
    args = ["import", "chat", "big.jsonl", "--map", MAP, "--run-id", "big"]
    run = tmp_path / ".sdb" / "runs" / "big"
    out = _interrupted(tmp_path, args, lambda: list(run.glob("events-*.parquet")), "the import's first part")
    line = _the_line(out)
    assert "nothing was imported" in line, line
    assert not run.exists() and json.loads(ok(sdbctl("runs", "--json")).stdout) == []


# ---- export: the user's path in the error, nothing left behind (item 3) -------------------------------


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "chat"])
def test_export_to_a_directory_names_it_in_one_line_and_leaves_nothing(sdbctl: CLI, tmp_path: Path, fmt: str) -> None:
    ok(sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "base"))
    (tmp_path / "walk").mkdir()
    before = _listing(tmp_path)
    out = sdbctl("export", "base", "--format", fmt, "-o", "walk")
    assert_one_line_error(out, "walk: is a directory")
    assert ".tmp" not in out.stderr
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "chat"])
def test_export_into_a_missing_directory_names_the_users_path_and_leaves_nothing(
    sdbctl: CLI, tmp_path: Path, fmt: str
) -> None:
    ok(sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "base"))
    before = _listing(tmp_path)
    path = f"/nonexistent/dir/x.{'parquet' if fmt == 'parquet' else 'jsonl'}"
    out = sdbctl("export", "base", "--format", fmt, "-o", path)
    assert_one_line_error(out, path, "no such directory /nonexistent/dir")
    assert ".tmp" not in out.stderr
    assert _listing(tmp_path) == before


def test_an_export_that_fails_leaves_the_users_files_as_they_were(sdbctl: CLI, tmp_path: Path) -> None:
    ok(sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "base"))
    (tmp_path / ".x.jsonl.tmp").write_text("the user's own file\n")  # the name the export used to take
    before = _listing(tmp_path)
    out = sdbctl("export", "nosuch", "--format", "chat", "-o", "x.jsonl")
    assert out.returncode == 2 and "nosuch" in out.stderr, out.stderr
    assert _listing(tmp_path) == before and (tmp_path / ".x.jsonl.tmp").read_text() == "the user's own file\n"
    ok(sdbctl("export", "base", "-o", "x.jsonl"))
    assert (tmp_path / ".x.jsonl.tmp").read_text() == "the user's own file\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == [".x.jsonl.tmp"]


# ---- demo --sessions, and empty runs (item 4) -----------------------------------------------------------


@pytest.mark.parametrize("sessions", ["0", "-5"])
def test_demo_refuses_sessions_below_one_as_record_does_before_any_step(
    sdbctl: CLI, tmp_path: Path, sessions: str
) -> None:
    demo = sdbctl("demo", "--sessions", sessions)
    record = sdbctl("record", "contract-renewal", "--sessions", sessions)
    assert_one_line_error(demo, "--sessions must be 1 or more", sessions)
    assert demo.stderr == record.stderr  # one rule, one wording
    assert not (tmp_path / ".sdb").exists()  # no step ran, no run was created


@pytest.mark.parametrize(
    ("args", "said"), [(("--repeat", "0"), "--repeat"), (("--candidate", "sim:renewal@v9"), "sim:renewal@v9")]
)
def test_demo_refuses_its_other_bad_options_before_any_step(
    sdbctl: CLI, tmp_path: Path, args: tuple[str, ...], said: str
) -> None:
    assert_one_line_error(sdbctl("demo", "--sessions", "3", *args), said)
    assert not (tmp_path / ".sdb").exists()


def test_a_run_closed_with_no_event_is_partial_never_complete(tmp_path: Path) -> None:
    with Recorder(tmp_path / ".sdb", run_id="empty", handle_signals=False):
        pass
    manifest = Store.open(tmp_path / ".sdb").manifest("empty")
    assert (manifest.status, manifest.events, manifest.interrupted) == ("partial", 0, "no events")


def test_diff_and_gate_of_an_empty_run_refuse_in_one_line(sdbctl: CLI, tmp_path: Path) -> None:
    ok(sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "base"))
    with Recorder(tmp_path / ".sdb", {"source_run": "base", "mode": "step"}, run_id="empty", handle_signals=False):
        pass
    for args in (("diff", "base", "empty"), ("gate", "empty"), ("diff", "base", "empty", "--allow-partial")):
        assert_one_line_error(sdbctl(*args), "run 'empty' has no events")


def test_a_replay_of_a_run_without_content_is_not_complete(sdbctl: CLI, tmp_path: Path) -> None:
    traces = REPO / "fixtures" / "traces" / "openllmetry-0.62.4-no-content.jsonl"
    ok(sdbctl("import", "otel", str(traces), "--run-id", "bare"))
    replayed = json.loads(ok(sdbctl("replay", "bare", "--model", "recorded", "--json")).stdout)
    assert replayed["steps"] == 0 and replayed["status"] == "partial"
    runs = {r["run_id"]: r["status"] for r in json.loads(ok(sdbctl("runs", "--json")).stdout)}
    assert runs[replayed["run_id"]] == "partial"


# ---- the demo's verdict, explained (item 15) ------------------------------------------------------------


def test_demo_says_fail_is_expected_of_v2s_drift_and_ends_with_the_noise_floor(sdbctl: CLI) -> None:
    out = ok(sdbctl("demo", "--sessions", "30"))
    lines = out.stdout.strip().splitlines()
    runs = {r["run_id"].rsplit("-", 1)[1]: r["run_id"] for r in json.loads(ok(sdbctl("runs", "--json")).stdout)}
    diff = json.loads(ok(sdbctl("diff", runs["base"], runs["candidate"], "--noise", runs["noise"], "--json")).stdout)
    floor = diff["summary"]["drift"]["noise_floor"]
    assert lines[-1].startswith("FAIL: ") and f"noise floor {floor:.1%}" in lines[-1], lines[-1]
    said = "\n".join(lines)
    assert "expected" in said and "sim:renewal@v2" in said and "drift" in said, said
    assert "multiple of 5" in said and "loyalty" in said  # the drift v2 carries, by name
    assert "--strict" in said  # why it exits 0 all the same
    same = ok(sdbctl("demo", "--sessions", "10", "--candidate", "recorded")).stdout
    assert same.strip().splitlines()[-1].startswith("PASS: ") and "PASS is the expected verdict" in same, same


def test_the_readme_shows_the_demos_last_lines_as_the_demo_prints_them(sdbctl: CLI) -> None:
    readme = (REPO / "README.md").read_text()
    shown = readme.split("Its last lines say both", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    out = ok(sdbctl("demo", env={"COLUMNS": "1000"})).stdout  # the default demo, as the README runs it

    def ids(text: str) -> list[str]:
        return [re.sub(r"demo-[0-9]{8}-[0-9]{6}-[0-9a-f]{6}", "demo-ID", line) for line in text.strip().splitlines()]

    assert ids(out)[-2:] == ids(shown)


# ---- chat export: outcomes, and a plain warning (item 16) -----------------------------------------------


def _terminal_outcomes(sdbctl: CLI, run: str, success: set[str]) -> dict[str, float]:
    rows = query_rows(
        sdbctl,
        "SELECT session_id, arg_max(name, seq) FROM events WHERE kind = 'state' AND name <> 'outcome' "
        f"AND run_id = '{run}' GROUP BY 1",
    )
    return {sid: 1.0 if state in success else 0.0 for sid, state in rows}


def test_chat_export_carries_the_runs_outcomes_and_import_reads_them_back(sdbctl: CLI, tmp_path: Path) -> None:
    ok(sdbctl("record", "contract-renewal", "-n", "12", "--run-id", "base"))
    ok(sdbctl("export", "base", "--format", "chat", "-o", "chat.jsonl"))
    exported = {c["id"]: c.get("outcome") for c in map(json.loads, (tmp_path / "chat.jsonl").read_text().splitlines())}
    expected = _terminal_outcomes(sdbctl, "base", {"renewed", "restructured"})  # the workload's code declares them
    assert exported == expected and set(expected.values()) == {0.0, 1.0}, exported
    ok(sdbctl("import", "chat", "chat.jsonl", "--run-id", "back"))
    back = query_rows(
        sdbctl, "SELECT session_id, payload->>'$.value' FROM events WHERE run_id = 'back' AND name = 'outcome'"
    )
    assert {sid: float(v) for sid, v in back} == expected
    # the success states are the project's config or the workload's code, never the manifest's copy
    manifest = tmp_path / ".sdb" / "runs" / "base" / "run.json"
    data = json.loads(manifest.read_text())
    data["meta"]["outcome"] = {"success": ["churned"]}
    manifest.write_text(json.dumps(data))
    ok(sdbctl("export", "base", "--format", "chat", "-o", "tampered.jsonl"))
    assert (tmp_path / "tampered.jsonl").read_text() == (tmp_path / "chat.jsonl").read_text()
    (tmp_path / "sdbctl.toml").write_text('[outcome]\nsuccess = ["churned"]\n')
    ok(sdbctl("export", "base", "--format", "chat", "-o", "config.jsonl"))
    configured = {c["id"]: c["outcome"] for c in map(json.loads, (tmp_path / "config.jsonl").read_text().splitlines())}
    assert configured == _terminal_outcomes(sdbctl, "base", {"churned"})


def test_chat_export_says_plainly_which_calls_it_leaves_out_and_why(sdbctl: CLI, tmp_path: Path) -> None:
    ok(sdbctl("record", "contract-renewal", "-n", "6", "--run-id", "base"))
    out = ok(sdbctl("export", "base", "--format", "chat", "-o", "chat.jsonl"))
    ((calls,),) = query_rows(sdbctl, "SELECT count(*) FROM events WHERE run_id = 'base' AND kind = 'llm'")
    left_out = calls - 6  # each session's earlier calls (score, offer) are conversations of their own
    note = " ".join(out.stderr.split())  # as one line, however the terminal wraps it
    assert f"{left_out} model calls of 6 sessions left out" in note, note
    assert "only the last call" in note, note  # why: one conversation per session, its last call's
    assert "outside their last call's history" not in note


# -- from a newcomer's review of the first fixes --------------------------------------------------------


def test_record_refuses_another_workloads_simulator_as_replay_does(sdbctl: CLI) -> None:
    out = sdbctl("record", "contract-renewal", "-n", "2", "--model", "sim:triage@v1", "--run-id", "x")
    assert_one_line_error(out, "sim:triage@v1 simulates another workload", "sim:renewal@v1")
    assert sdbctl("runs", "--json").stdout.strip() in ("", "[]")  # nothing recorded


def test_an_error_of_a_command_with_a_progress_bar_is_one_line_with_no_empty_line_before(sdbctl: CLI) -> None:
    out = sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "a/b")
    assert_one_line_error(out, "'a/b'")
    assert out.stderr.startswith("sdbctl: error:"), repr(out.stderr)


def test_session_only_options_are_refused_in_step_mode(sdbctl: CLI) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "base").returncode == 0
    assert_one_line_error(sdbctl("replay", "base", "-m", "sim:renewal@v1", "--spine", "p3"), "--spine", "session")
    out = sdbctl("replay", "base", "-m", "sim:renewal@v1", "--on-divergence", "continue")
    assert_one_line_error(out, "--on-divergence", "session")


def test_the_divergence_table_at_80_columns_keeps_the_repeat_and_the_first_mark(sdbctl: CLI) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "20", "--run-id", "base").returncode == 0
    assert sdbctl("replay", "base", "-m", "sim:renewal@v2", "--repeat", "2", "--run-id", "cand").returncode == 0
    out = sdbctl("diff", "base", "cand", "--limit", "3", env={"COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    header = next(line for line in out.stdout.splitlines() if "session" in line and "reason" in line)
    assert "rep" in header and "layer" in header and "base seq" not in header, out.stdout
    assert "*" in out.stdout


def test_export_takes_dash_as_stdout_and_refuses_a_file_of_another_format(sdbctl: CLI, tmp_path: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "base").returncode == 0
    out = sdbctl("export", "base", "-o", "-")
    assert out.returncode == 0 and out.stdout.startswith("{") and not (tmp_path / "-").exists()
    assert_one_line_error(sdbctl("export", "base", "-o", "x.parquet"), "x.parquet", "--format jsonl")
    assert_one_line_error(sdbctl("export", "base", "-f", "parquet", "-o", "x.jsonl"), "x.jsonl")
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "x.jsonl").exists()
