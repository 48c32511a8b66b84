"""``sdbctl import jsonl``: any JSON-lines log as a run; all or nothing; replayable in step mode."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import CLI, assert_one_line_error

MAP = """
session = "session_id"
order = "seq"
kind = "kind"
name = "name"
args = "payload.args"
step = "step"
model = "model"
timestamp = "ts"
request = "payload.request"
response = "payload.response"
[kinds]
llm = "llm"
action = "action"
input = "input"
state = "state"
gate = "gate"
effect = "effect"
error = "error"
"""


def test_an_exported_run_imports_and_replays_with_zero_divergence(sdbctl: CLI, tmp_path: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "8", "--run-id", "orig").returncode == 0
    assert sdbctl("export", "orig", "--out", "log.jsonl").returncode == 0
    (tmp_path / "map.toml").write_text(MAP)
    out = sdbctl("import", "jsonl", "log.jsonl", "--map", "map.toml", "--run-id", "imp", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert summary == {"run_id": "imp", "events": len(lines), "sessions": 8, "skipped": 0}
    runs = {r["run_id"]: r for r in json.loads(sdbctl("runs", "--json").stdout)}
    assert runs["imp"]["events"] == runs["orig"]["events"] and runs["imp"]["status"] == "complete"
    same = json.loads(sdbctl("replay", "imp", "--model", "recorded", "--json").stdout)
    assert same["divergences"] == 0 and same["steps"] > 0
    sim = json.loads(sdbctl("replay", "imp", "--model", "sim:renewal@v1", "--json", "--run-id", "again").stdout)
    assert sim["errors"] == 0
    diff = json.loads(sdbctl("diff", "imp", "again", "--json").stdout)
    assert diff["summary"]["steps_compared"] > 0 and diff["divergences"] == []


def test_bad_lines_are_named_and_no_run_is_written(sdbctl: CLI, tmp_path: Path) -> None:
    (tmp_path / "map.toml").write_text(MAP)
    good = {"session_id": "s", "seq": 0, "kind": "action", "name": "a", "payload": {"args": {"x": 1}}}
    cases = {
        "truncated": json.dumps(good)[:-5],
        "no-session": json.dumps({**good, "session_id": None}),
        "unmapped": json.dumps({**good, "kind": "telemetry"}),
        "bad-order": json.dumps({**good, "seq": "yesterday"}),
        "bad-args": json.dumps({**good, "payload": {"args": [1, 2]}}),
        # a request that is no object: imported before, its replay then ended in a traceback
        "bad-request": json.dumps({**good, "kind": "llm", "payload": {"request": "hello"}}),
        "list-request": json.dumps({**good, "kind": "llm", "payload": {"request": [1]}}),
    }
    for label, bad in cases.items():
        (tmp_path / f"{label}.jsonl").write_text(json.dumps(good) + "\n" + bad + "\n")
        assert_one_line_error(sdbctl("import", "jsonl", f"{label}.jsonl", "--map", "map.toml"), f"{label}.jsonl:2:")
    (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert_one_line_error(sdbctl("import", "jsonl", "binary.jsonl", "--map", "map.toml"), "not a text file")
    assert not (tmp_path / ".sdb" / "runs").exists() or not any((tmp_path / ".sdb" / "runs").iterdir())
    skipped = sdbctl("import", "jsonl", "truncated.jsonl", "--map", "map.toml", "--skip-bad", "--json")
    assert json.loads(skipped.stdout)["skipped"] == 1 and json.loads(skipped.stdout)["events"] == 1
    (tmp_path / "bad-map.toml").write_text('session = "s"\n[kinds]\nx = "action"\n')
    assert_one_line_error(sdbctl("import", "jsonl", "truncated.jsonl", "--map", "bad-map.toml"), "needs order, kind")


def test_an_answer_with_no_action_line_of_its_own_gets_the_actions_a_replay_reads_from_it(
    sdbctl: CLI, tmp_path: Path
) -> None:
    """A log that writes a tool call as an action line but a text answer only as its llm line: the import
    had no action for the text, so a `recorded` replay (which reads `message` from it) diverged."""
    (tmp_path / "map.toml").write_text(MAP)
    call = {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": '{"order": 42}'}}
    asked = {"model": "m", "messages": [{"role": "user", "content": "refund 42"}]}
    lines = [
        {"kind": "llm", "payload": {"request": asked, "response": {"choices": [
            {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}}},
        {"kind": "action", "name": "refund", "payload": {"args": {"order": 42}}},
        {"kind": "llm", "payload": {"request": {**asked, "messages": [*asked["messages"], {
            "role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "tool_call_id": "c1",
            "content": "ok"}]}, "response": {"choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Refunded."}}]}}},
    ]  # fmt: skip
    rows = [{"session_id": "s", "seq": k, "step": str(k), "model": "openai:m", **line} for k, line in enumerate(lines)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert sdbctl("import", "jsonl", "log.jsonl", "--map", "map.toml", "--run-id", "log").returncode == 0
    actions = json.loads(
        sdbctl("query", "SELECT name, payload FROM events WHERE kind = 'action' ORDER BY seq", "--json").stdout
    )
    assert [(a["name"], json.loads(a["payload"])["args"]) for a in actions] == [
        ("refund", {"order": 42}),  # the log's own line, kept as it is
        ("message", {"content": "Refunded."}),  # read from the answer
    ]
    same = json.loads(sdbctl("replay", "log", "--model", "recorded", "--json").stdout)
    assert same["divergences"] == 0 and same["steps"] == 2
