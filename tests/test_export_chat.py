"""``sdbctl export RUN --format chat`` through the real CLI: the airline run exported and imported back
with no map, and a proxied run (each request holding the whole history again, call ids reused)
exported and imported back to the same actions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdbctl.recorders.conversation import ConversationRecorder
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.redaction import load_redactor
from tests.chat_runs import by_session, import_airline, ok, query_rows, shown_events
from tests.conftest import CLI


def _same_run(sdbctl: CLI, one: str, other: str) -> None:
    """The two runs hold the same actions, effects (with their status) and outcomes."""
    for kinds, cols in (
        ("'action'", "session_id, step, name, digest, status"),
        ("'effect'", "session_id, step, name, digest, status"),
        ("'state'", "session_id, name, payload"),
        ("'llm'", "session_id, step, digest"),
    ):
        rows = [
            query_rows(sdbctl, f"SELECT {cols} FROM events WHERE run_id = '{run}' AND kind IN ({kinds})")
            for run in (one, other)
        ]
        assert rows[0] == rows[1] and (rows[0] or kinds == "'state'"), kinds


def test_export_chat_then_import_gives_the_same_run(sdbctl: CLI, tmp_path: Path) -> None:
    import_airline(sdbctl)
    out = ok(sdbctl("export", "air", "--format", "chat", "--out", "x.jsonl"))
    assert "wrote 10 conversations" in out.stderr
    lines = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    noah = next(c for c in lines if c["id"] == "0" and c.get("repeat") == 1)  # session 0#r1
    assert noah["outcome"] == 1 and noah["model"] == "gpt-4o-2024-08-06" and noah["tools"]
    tools = [m for m in noah["messages"] if m["role"] == "tool"]
    assert [m.get("is_error", False) for m in tools] == [False, False, False, True, False]
    assert noah["messages"][-1]["role"] == "assistant" and noah["messages"][-1]["content"].startswith("Done:")
    assert "repeat" not in next(c for c in lines if c["id"] == "0" and "repeat" not in c)
    # the defaults read what the export writes: no map needed
    ok(sdbctl("import", "chat", "x.jsonl", "--run-id", "back"))
    _same_run(sdbctl, "air", "back")
    # to stdout too
    assert [json.loads(line) for line in ok(sdbctl("export", "air", "-f", "chat")).stdout.splitlines()] == lines


def _proxied(store: Path, cwd: Path) -> None:
    """A run as the recording proxy writes it: each call's request holds the whole history again."""
    rec = Recorder(store, {"mode": "record"}, run_id="proxied", handle_signals=False, recorder="proxy")
    conv = ConversationRecorder(rec, load_redactor(cwd))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]

    def call(messages: list[dict[str, Any]], message: dict[str, Any]) -> dict[str, Any]:
        request = {"model": "gpt-4o-mini", "messages": list(messages), "tools": tools}
        session = conv.session_for(None, request)
        conv.request(session, request)
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        response = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5},
        }
        conv.answer(session, request, response, model="openai:gpt-4o-mini", latency_ms=3.0)
        return message

    def weather(city: str) -> dict[str, Any]:  # the framework numbers its calls per turn: call_0 again
        args = json.dumps({"city": city})
        fn = {"name": "get_weather", "arguments": args}
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_0", "type": "function", "function": fn}],
        }

    for cities in (["Paris", "Lyon"], ["Oslo"]):
        history: list[dict[str, Any]] = [
            {"role": "system", "content": "You tell the weather."},
            {"role": "user", "content": f"Weather in {' and '.join(cities)}?"},
        ]
        for i, city in enumerate(cities):
            history.append(call(history, weather(city)))
            history.append({"role": "tool", "tool_call_id": "call_0", "content": json.dumps({"c": 10 + i})})
        history.append(call(history, {"role": "assistant", "content": "Mild everywhere."}))
    rec.close()


def test_a_proxied_run_exported_and_imported_back_gives_the_same_actions(sdbctl: CLI, tmp_path: Path) -> None:
    _proxied(tmp_path / ".sdb", tmp_path)
    events = by_session(shown_events(sdbctl, "proxied"))
    paris = next(ev for ev in events.values() if len([e for e in ev if e["kind"] == "llm"]) == 3)
    calls = [e for e in paris if e["kind"] == "action" and e["name"] == "get_weather"]
    effects = [e for e in paris if e["kind"] == "effect"]
    # the request of call 3 holds both results with id call_0: the k-th answers the k-th call, once
    assert [e["parent"] for e in effects] == [c["seq"] for c in calls] and len(effects) == 2
    assert [e["payload"]["result"]["content"] for e in effects] == [{"c": 10}, {"c": 11}]
    ok(sdbctl("export", "proxied", "--format", "chat", "--out", "p.jsonl"))
    ok(sdbctl("import", "chat", "p.jsonl", "--run-id", "p-back"))
    _same_run(sdbctl, "proxied", "p-back")
    diff = json.loads(ok(sdbctl("diff", "proxied", "p-back", "--json")).stdout)  # closed loop, by commit
    assert diff["summary"]["comparison"] == "commit" and diff["divergences"] == []
    assert diff["summary"]["by_layer"]["write"]["steps_compared"] > 0
