"""Untrusted stores and untrusted text (issue 15): no code runs from a store, recorded text prints as
the literal text it is, queries do not write, reports survive control characters."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from sdbctl.recorders.sdk import Recorder
from tests.conftest import CLI, SDBCTL, wait_until
from tests.llm_server import LLMServer

MARKUP = "[/INST] Sure [link=https://evil.example]click[/link] [bold]loud[/bold]"
ESCAPES = "\x1b[31mred\x1b]0;owned\x07 done"


def _tamper(store: Path, run: str, agent: str) -> None:
    manifest = store / "runs" / run / "run.json"
    data = json.loads(manifest.read_text())
    data["agent"] = agent
    manifest.write_text(json.dumps(data))


def test_a_manifest_naming_code_in_the_store_runs_nothing(sdbctl: CLI, tmp_path: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", "v").returncode == 0
    store = tmp_path / ".sdb"
    marker = tmp_path / "pwned"
    helper = store / "runs" / "v" / "helper.py"
    helper.write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from sdbctl.fixtures.contract_renewal.agent import RenewalWorkload\n"
        "W = RenewalWorkload()\n"
    )
    for agent in (f"{helper}:W", "runs.v.helper:W"):
        _tamper(store, "v", agent)
        step = sdbctl("replay", "v", "--model", "recorded", "--run-id", f"s{len(agent)}")
        assert step.returncode == 0, step.stderr  # step mode needs no agent code
        session = sdbctl("replay", "v", "--model", "recorded", "--mode", "session")
        assert session.returncode == 2 and f"--agent {agent}" in session.stderr, session.stderr
        assert len(session.stderr.strip().splitlines()) == 1 and "Traceback" not in session.stderr
        prompt = sdbctl("replay", "v", "--model", "recorded", "--prompt", "offer@v2")
        assert prompt.returncode == 2 and "does not import from a store" in prompt.stderr
    assert not marker.exists()
    # named on the command line by the user, it runs
    ok = sdbctl("replay", "v", "--model", "recorded", "--mode", "session", "--agent", f"{helper}:W", "--json")
    assert ok.returncode == 0, ok.stderr
    assert marker.exists() and json.loads(ok.stdout)["divergences"] == 0


def test_recorded_text_prints_as_literal_text(sdbctl: CLI, tmp_path: Path) -> None:
    with Recorder(store=tmp_path / ".sdb", run_id="evil") as rec:
        s = rec.session(f"s-{ESCAPES}")
        for k, text in enumerate((MARKUP, ESCAPES)):
            llm = s.llm({"messages": []}, {"choices": [{"message": {"content": text}}]}, model="m", step=f"[b]{k}")
            s.action(f"say{MARKUP[:7]}", {"content": text}, step=f"[b]{k}", parent=llm)
    with Recorder(store=tmp_path / ".sdb", run_id="evil2") as rec:
        s = rec.session(f"s-{ESCAPES}")
        llm = s.llm({"messages": []}, {}, model="m", step="[b]0")
        s.action(f"say{MARKUP[:7]}", {"content": "other"}, step="[b]0", parent=llm)
    for args in (
        ("show", "evil"),
        ("show", "evil", "--session", f"s-{ESCAPES}"),
        ("diff", "evil", "evil2"),
        ("runs",),
        ("query", "SELECT session_id, step, name, payload FROM events"),
        ("diagnose", "evil2"),
    ):
        out = sdbctl(*args)
        assert out.returncode == 0, (args, out.stderr)
        assert "\x1b" not in out.stdout + out.stderr and "\x07" not in out.stdout, (
            args
        )  # no raw escape reaches the terminal
        if args[0] in ("show", "query", "diff"):
            assert "\\x1b" in out.stdout, args  # shown, as an escape
            assert "[/INST" in out.stdout or "say[/INST" in out.stdout, args  # the markup is literal text


def test_query_cannot_write_attach_or_install(sdbctl: CLI, tmp_path: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "r").returncode == 0
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for sql in (
        "COPY (SELECT 1) TO 'x.csv'",
        "COPY (SELECT * FROM events) TO '.sdb/runs/r/events-09999.parquet' (FORMAT parquet)",
        "ATTACH 'other.db' AS o",
        "CREATE TABLE t AS SELECT 1",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT 1; COPY (SELECT 1) TO 'y.csv'",
        "PRAGMA enable_external_access",
        "SET enable_external_access = true",
    ):
        out = sdbctl("query", sql)
        assert out.returncode == 2, (sql, out.stdout)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, (sql, out.stderr)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert after == before  # nothing written anywhere
    twice = sdbctl("query", "SELECT 1 AS n, 2 AS n", "--json")
    assert json.loads(twice.stdout) == [{"n": 1, "n_2": 2}]  # two columns of one name are both kept
    ok = sdbctl("query", "SELECT kind, count(*) AS n FROM events GROUP BY ALL ORDER BY 1", "--json")
    assert ok.returncode == 0 and {r["kind"] for r in json.loads(ok.stdout)} >= {"llm", "action"}


def test_reports_survive_control_characters_and_table_syntax(sdbctl: CLI, tmp_path: Path) -> None:
    nasty = "a|b\nc <!-- hidden --> \x1b[31m ]]> \x00 end"
    for run, value in (("base", "plain"), ("cand", nasty)):
        with Recorder(store=tmp_path / ".sdb", run_id=run) as rec:
            s = rec.session("s|1\n<!--")
            llm = s.llm({"messages": []}, {}, model="m", step="st|ep")
            s.action("send|x", {"text": value}, step="st|ep", parent=llm)
    out = sdbctl("gate", "cand", "--base", "base", "--junit", "g.xml", "--markdown", "g.md")
    assert out.returncode == 1, out.stderr
    suite = ET.parse(tmp_path / "g.xml").getroot()  # parses: no raw control character in the XML
    assert suite.get("failures") == "2"  # the failing checks: step and session divergence
    md = (tmp_path / "g.md").read_text()
    rows = [line for line in md.splitlines() if "send" in line]
    assert len(rows) == 1 and rows[0].count(" | ") == 6  # one row, seven cells: no | or newline broke it
    assert rows[0].startswith("| s\\|1\\n&lt;!-- |")
    assert "<!--" not in md and "\x1b" not in md and "\x00" not in md


LEAK = "sk-proj-LEAKEDKEY0123456789abcdefghijkl"


def _leaky_answer(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"use {LEAK} or mail ops@example.com"},
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }


def test_a_replay_redacts_the_answers_it_stores(sdbctl: CLI, tmp_path: Path) -> None:
    with Recorder(store=tmp_path / ".sdb", run_id="src") as rec:
        s = rec.session("s")
        llm = s.llm({"messages": [{"role": "user", "content": "hi"}]}, {"choices": []}, model="m", step="call-001")
        s.action("message", {"content": "hello"}, step="call-001", parent=llm)
    with LLMServer(_leaky_answer) as model:
        out = sdbctl(
            "replay", "src", "--model", "openai:m", "--base-url", model.url, "--run-id", "again", "--json",
            env={"OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    for path in (tmp_path / ".sdb").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert LEAK.encode() not in data and b"ops@example.com" not in data, path
    manifest = json.loads((tmp_path / ".sdb" / "runs" / "again" / "run.json").read_text())
    assert "openai_key" in manifest["meta"]["redaction"] and "email" in manifest["meta"]["redaction"]
    shown = sdbctl("show", "again", "--kind", "action", "--json")
    assert "[REDACTED:openai_key]" in shown.stdout


def test_the_sdk_redacts_when_configured(tmp_path: Path) -> None:
    (tmp_path / "sdbctl.toml").write_text("[redact]\nsdk = true\n")
    import os

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        with Recorder(store=tmp_path / ".sdb", run_id="sdk") as rec:
            s = rec.session("s")
            s.input("ticket", {"from": "jane.doe@example.com", "key": LEAK})
            s.error("tool", f"failed with {LEAK}", detail={"mail": "jane.doe@example.com"})
        with Recorder(store=tmp_path / ".sdb", run_id="raw", redact=False) as rec:
            rec.session("s").input("ticket", {"from": "jane.doe@example.com"})
    finally:
        os.chdir(here)
    data = b"".join(p.read_bytes() for p in (tmp_path / ".sdb" / "runs" / "sdk").iterdir())
    assert LEAK.encode() not in data and b"jane.doe@example.com" not in data and b"[REDACTED:email]" in data
    assert "email" in json.loads((tmp_path / ".sdb" / "runs" / "sdk" / "run.json").read_text())["meta"]["redaction"]
    raw = b"".join(p.read_bytes() for p in (tmp_path / ".sdb" / "runs" / "raw").iterdir())
    assert b"jane.doe@example.com" in raw  # off by default, and when the caller says so


AGENT = """
import os, httpx
r = httpx.post(os.environ["OPENAI_BASE_URL"] + "/chat/completions",
               json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
               headers={"X-SDB-Session": "sk-proj-SESSIONKEY0123456789abcdefghij"})
print(r.status_code)
"""


def test_credentials_in_urls_and_key_shaped_session_ids_never_reach_a_store(
    sdbctl: CLI, sdbctl_process: CLI, tmp_path: Path
) -> None:
    (tmp_path / "agent.py").write_text(AGENT)
    with LLMServer(_leaky_answer) as upstream:
        url = upstream.url.replace("http://", "http://user:HUNTER2SECRET@")
        # `record -- CMD` as a process: CMD, its child, prints to sdbctl's own stdout
        out = sdbctl_process("record", "--upstream", url, "--run-id", "p", "--", sys.executable, "agent.py")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == "200", out.stdout  # no 500: the credentials went as Basic auth
        assert upstream.headers[-1]["Authorization"].startswith("Basic ")
        replay = sdbctl(
            "replay", "p", "--model", "openai:m", "--base-url", url, "--run-id", "r",
            env={"OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        assert replay.returncode == 0, replay.stderr
    for path in (tmp_path / ".sdb").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"HUNTER2SECRET" not in data and b"SESSIONKEY0123456789" not in data, path
    sessions = json.loads(sdbctl("query", "SELECT DISTINCT session_id FROM events", "--json").stdout)
    assert [s["session_id"] for s in sessions] == ["[REDACTED:openai_key]"]
    resume_needs_it = json.loads((tmp_path / ".sdb" / "runs" / "r" / "run.json").read_text())["meta"]["replay"]
    assert resume_needs_it["base_url"].startswith("http://user:[REDACTED]@")


def test_record_streams_its_sessions(sdbctl: CLI, tmp_path: Path) -> None:
    """99,999,999 sessions: the first are recorded at once, with the memory of the few in flight."""
    proc = subprocess.Popen(
        [str(SDBCTL), "record", "contract-renewal", "--sessions", "99999999", "--run-id", "big"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        manifest = tmp_path / ".sdb" / "runs" / "big" / "run.json"
        wait_until(lambda: manifest.exists() and json.loads(manifest.read_text() or "{}").get("events", 0) > 1000, 60)
        rss_kb = int(
            next(
                line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if line.startswith("VmRSS")
            ).split()[1]
        )
        assert json.loads(manifest.read_text())["events"] > 1000  # recording began long before 99M sessions exist
        assert rss_kb < 600_000, rss_kb
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert json.loads(manifest.read_text())["status"] == "partial"


def _small_files() -> None:
    """In the child: files may not grow past 300 kB, as on a full disk (EFBIG instead of ENOSPC)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))


def test_a_full_disk_during_record_is_one_line_and_leaves_no_temp_file(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(SDBCTL), "record", "contract-renewal", "--sessions", "3000", "--run-id", "full"],
        cwd=tmp_path,
        preexec_fn=_small_files,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot write" in lines[0] and "partial" in lines[0], out.stderr
    assert "Traceback" not in out.stderr and "never retrieved" not in out.stderr
    assert not [p for p in (tmp_path / ".sdb").rglob("*") if ".tmp" in p.name]
