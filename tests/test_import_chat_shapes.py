"""``sdbctl import chat`` on logs as they are (issue 22): the conversation list inside each file's
object (``conversations``), tool calls in the flat shape, tool results by ``id`` with an error flag
(``tool_error``), tool definitions from the map (``tools``, in the conversation or the file) or from
``--tools FILE``, and a tau2-bench results file (``fixtures/chat/tau2-results.json``) end to end.

The requests are read as ``sdbctl show --json --full`` prints them (``tests.chat_runs.shown_events``:
llm requests whole, however they are stored)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.chat_runs import CHAT, by_session, ok, shown_events
from tests.conftest import CLI, assert_one_line_error

TAU2 = str(CHAT / "tau2-results.json")
TAU2_TOOLS = str(CHAT / "tau2-tools.json")
TAU2_MAP = str(CHAT / "tau2-map.toml")

CANCEL = {"type": "function", "function": {"name": "cancel", "parameters": {"type": "object", "properties": {}}}}


def _conv(cid: str, **extra: Any) -> dict[str, Any]:
    """A small conversation: a user asks, the agent calls ``cancel`` (OpenAI shape), the tool answers."""
    return {
        "id": cid,
        "messages": [
            {"role": "user", "content": "cancel ABC123"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "cancel", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
            {"role": "assistant", "content": "Cancelled."},
        ],
        **extra,
    }


def _llm(sdbctl: CLI, run: str) -> list[dict[str, Any]]:
    return [e for e in shown_events(sdbctl, run) if e["kind"] == "llm"]


def _request(event: dict[str, Any]) -> dict[str, Any]:
    """The whole request of an llm event as ``show --json --full`` prints it."""
    return dict(event["payload"]["request"])


def _manifest(tmp_path: Path, run: str) -> dict[str, Any]:
    return dict(json.loads((tmp_path / ".sdb" / "runs" / run / "run.json").read_text()))


def test_conversations_names_the_list_inside_each_files_object(sdbctl: CLI, tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"info": {}, "runs": [_conv("a"), _conv("b")]}, indent=2))
    (tmp_path / "more.jsonl").write_text(json.dumps({"runs": [_conv("c")]}) + "\n")
    (tmp_path / "map.toml").write_text('conversations = "runs"\n')
    ok(sdbctl("import", "chat", "results.json", "more.jsonl", "--map", "map.toml", "--run-id", "nested"))
    assert sorted(by_session(shown_events(sdbctl, "nested"))) == ["a", "b", "c"]
    # a bad conversation in the list is named by its place in the list
    (tmp_path / "bad.json").write_text(json.dumps({"runs": [_conv("a"), {"id": "b", "messages": 3}]}, indent=2))
    assert_one_line_error(sdbctl("import", "chat", "bad.json", "--map", "map.toml"), "bad.json: runs[1]:", "messages")
    # a file whose object has nothing at the path, or not a list there: one line naming the file and the path
    (tmp_path / "none.json").write_text(json.dumps({"simulations": [_conv("a")]}, indent=2))
    out = sdbctl("import", "chat", "none.json", "--map", "map.toml")
    assert_one_line_error(out, "none.json: ", "'runs'", "simulations")
    (tmp_path / "dict.json").write_text(json.dumps({"runs": {"a": _conv("a")}}, indent=2))
    assert_one_line_error(sdbctl("import", "chat", "dict.json", "--map", "map.toml"), "dict.json: ", "'runs'", "dict")
    # all or nothing: the good file before it wrote nothing; --skip-bad skips the file and counts it
    assert_one_line_error(sdbctl("import", "chat", "results.json", "dict.json", "--map", "map.toml"), "dict.json")
    out = ok(sdbctl("import", "chat", "results.json", "dict.json", "--map", "map.toml", "--skip-bad", "--json"))
    assert json.loads(out.stdout)["sessions"] == 2 and json.loads(out.stdout)["skipped"] == 1


def test_flat_tool_calls_with_object_or_string_arguments(sdbctl: CLI, tmp_path: Path) -> None:
    conv = _conv("flat")
    conv["messages"][1] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "name": "cancel", "arguments": {"reservation_id": "ABC123", "reason": "no", "n": 1.0}},
            {"id": "c2", "name": "notify", "arguments": '{"to": "mia",  "text": "é"}'},
        ],
    }
    conv["messages"].insert(3, {"role": "tool", "tool_call_id": "c2", "content": "sent"})
    (tmp_path / "flat.jsonl").write_text(json.dumps(conv) + "\n")
    ok(sdbctl("import", "chat", "flat.jsonl", "--run-id", "flat"))
    events = shown_events(sdbctl, "flat")
    calls = next(e for e in events if e["kind"] == "llm")["payload"]["response"]["choices"][0]["message"]["tool_calls"]
    assert calls == [  # the OpenAI shape: an object as canonical JSON text, a string as the model wrote it
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "cancel", "arguments": '{"n":1,"reason":"no","reservation_id":"ABC123"}'},
        },
        {"id": "c2", "type": "function", "function": {"name": "notify", "arguments": '{"to": "mia",  "text": "é"}'}},
    ]
    actions = [(e["name"], e["payload"]["args"]) for e in events if e["kind"] == "action" and e["name"] != "message"]
    assert actions == [
        ("cancel", {"n": 1, "reason": "no", "reservation_id": "ABC123"}),
        ("notify", {"to": "mia", "text": "é"}),
    ]
    effects = [(e["name"], e["status"]) for e in events if e["kind"] == "effect"]
    assert effects == [("cancel", "ok"), ("notify", "ok")]
    history = _request(_llm(sdbctl, "flat")[-1])["messages"]
    assert history[1]["tool_calls"] == calls  # the next request holds the same normalised call


def test_a_tool_result_answers_its_call_by_id_and_tool_error_marks_it_failed(sdbctl: CLI, tmp_path: Path) -> None:
    conv = _conv("t")
    conv["messages"][2] = {"role": "tool", "id": "c1", "content": "Error: not found", "error": True}
    (tmp_path / "t.jsonl").write_text(json.dumps(conv) + "\n")
    ok(sdbctl("import", "chat", "t.jsonl", "--run-id", "plain"))
    (effect,) = [e for e in shown_events(sdbctl, "plain") if e["kind"] == "effect"]
    assert (effect["name"], effect["status"]) == ("cancel", "ok")  # linked by its id; the flag is not read unmapped
    assert effect["payload"]["result"] == {"call_id": "c1", "content": "Error: not found"}
    tool = _request(_llm(sdbctl, "plain")[-1])["messages"][2]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "c1" and "id" not in tool  # OpenAI-shaped
    (tmp_path / "map.toml").write_text('tool_error = "error"\n')
    ok(sdbctl("import", "chat", "t.jsonl", "--map", "map.toml", "--run-id", "flagged"))
    (effect,) = [e for e in shown_events(sdbctl, "flagged") if e["kind"] == "effect"]
    assert (effect["name"], effect["status"]) == ("cancel", "error")
    assert _manifest(tmp_path, "flagged")["meta"]["fields"]["tool_error"] == "error"


@pytest.mark.parametrize(
    ("flag", "status"),
    [({"meta": {"failed": "timeout"}}, "error"), ({"meta": {"failed": 0}}, "ok"), ({"meta": {"failed": []}}, "ok")],
)
def test_tool_error_is_a_dotted_path_whose_truthy_value_marks_a_failure(
    sdbctl: CLI, tmp_path: Path, flag: dict[str, Any], status: str
) -> None:
    conv = _conv("t")
    conv["messages"][2].update(flag)
    (tmp_path / "t.jsonl").write_text(json.dumps(conv) + "\n")
    (tmp_path / "map.toml").write_text('tool_error = "meta.failed"\n')
    ok(sdbctl("import", "chat", "t.jsonl", "--map", "map.toml", "--run-id", "r"))
    assert [e["status"] for e in shown_events(sdbctl, "r") if e["kind"] == "effect"] == [status]


def test_a_tool_error_path_no_tool_result_has_is_an_error(sdbctl: CLI, tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text(json.dumps(_conv("t")) + "\n")
    (tmp_path / "map.toml").write_text('tool_error = "eror"\n')
    out = sdbctl("import", "chat", "t.jsonl", "--map", "map.toml")
    assert_one_line_error(out, "map.toml: tool_error", '"eror"', "tool result")


def test_tools_from_the_map_in_the_conversation_or_else_the_file(sdbctl: CLI, tmp_path: Path) -> None:
    notify = {"name": "notify", "description": "Send a note.", "input_schema": {"type": "object"}}  # Anthropic's
    nested = {"spec": {"tools": [CANCEL]}}
    file = {"agent": {"tools": [notify]}, "runs": [_conv("own", **nested), _conv("file")]}
    (tmp_path / "r.json").write_text(json.dumps(file, indent=2))
    (tmp_path / "map.toml").write_text('conversations = "runs"\ntools = "spec.tools"\n')
    (tmp_path / "map2.toml").write_text('conversations = "runs"\ntools = "agent.tools"\n')
    ok(sdbctl("import", "chat", "r.json", "--map", "map.toml", "--run-id", "conv"))
    got = {e["session_id"]: _request(e).get("tools") for e in _llm(sdbctl, "conv")}
    assert got == {"own": [CANCEL], "file": None}
    ok(sdbctl("import", "chat", "r.json", "--map", "map2.toml", "--run-id", "file"))
    converted = {
        "type": "function",
        "function": {"name": "notify", "parameters": {"type": "object"}, "description": "Send a note."},
    }
    assert [_request(e)["tools"] for e in _llm(sdbctl, "file")] == [[converted]] * 4  # every request of both
    assert "agent.tools" in _manifest(tmp_path, "file")["meta"]["tools"]
    # a tools path that matches nothing anywhere is an error, as any path a map names
    (tmp_path / "map3.toml").write_text('conversations = "runs"\ntools = "nowhere"\n')
    assert_one_line_error(sdbctl("import", "chat", "r.json", "--map", "map3.toml"), "map3.toml: tools", "nowhere")


@pytest.mark.parametrize("shape", ["openai", "anthropic", "object"])
def test_tools_file_puts_its_definitions_in_every_request(sdbctl: CLI, tmp_path: Path, shape: str) -> None:
    anthropic = [{"name": "cancel", "description": "Cancel it.", "input_schema": {"type": "object", "properties": {}}}]
    openai = [
        {
            "type": "function",
            "function": {
                "name": "cancel",
                "description": "Cancel it.",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    body: Any = {"openai": openai, "anthropic": anthropic, "object": {"tools": openai, "other": 1}}[shape]
    (tmp_path / "tools.json").write_text(json.dumps(body))
    own = {"type": "function", "function": {"name": "old"}}
    lines = [json.dumps(_conv("a", tools=[own])), json.dumps(_conv("b"))]  # --tools beats the log's own
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    ok(sdbctl("import", "chat", "c.jsonl", "--tools", "tools.json", "--run-id", "t"))
    requests = [_request(e) for e in _llm(sdbctl, "t")]
    assert len(requests) == 4 and all(r["tools"] == openai for r in requests)
    assert _manifest(tmp_path, "t")["meta"]["tools"] == "--tools tools.json"  # where they came from


BAD_TOOLS = {
    "missing.json": (None, "cannot read"),
    "text.json": ("not json", "not valid JSON"),
    "number.json": ("3", "a list of tool definitions"),
    "nokey.json": ('{"functions": []}', "a list of tool definitions"),
    "items.json": ('[{"type": "function", "function": {"name": "a"}}, 7]', "tools[1]"),
    "noname.json": ('[{"description": "what?"}]', "tools[0]"),
    "empty.json": ("[]", "no tool definition"),
}


@pytest.mark.parametrize("name", BAD_TOOLS)
def test_a_bad_tools_file_is_one_line_naming_it(sdbctl: CLI, tmp_path: Path, name: str) -> None:
    text, reason = BAD_TOOLS[name]
    if text is not None:
        (tmp_path / name).write_text(text)
    (tmp_path / "c.jsonl").write_text(json.dumps(_conv("a")) + "\n")
    assert_one_line_error(sdbctl("import", "chat", "c.jsonl", "--tools", name), f"{name}: ", reason)
    assert not list(tmp_path.glob(".sdb/runs/*"))


def test_a_tau2_bench_results_file_imports_with_its_six_line_map(sdbctl: CLI, tmp_path: Path) -> None:
    assert len(Path(TAU2_MAP).read_text().strip().splitlines()) <= 6
    out = ok(sdbctl("import", "chat", TAU2, "--map", TAU2_MAP, "--tools", TAU2_TOOLS, "--run-id", "tau2", "--json"))
    assert json.loads(out.stdout)["sessions"] == 4
    manifest = _manifest(tmp_path, "tau2")
    assert manifest["repeat"] == 2 and manifest["meta"]["tools"] == f"--tools {TAU2_TOOLS}"
    sessions = by_session(shown_events(sdbctl, "tau2"))
    assert sorted(sessions) == ["0", "0#r1", "1", "1#r1"]  # task_id, trial 1 is #r1
    outcomes = {s: [e["payload"]["value"] for e in ev if e["kind"] == "state"] for s, ev in sessions.items()}
    assert outcomes == {"0": [1], "0#r1": [0], "1": [1], "1#r1": [1]}  # reward_info.reward
    # trial 1 of task 0: a mistyped id fails (error: true), the retry succeeds, then the cancellation
    effects = [(e["name"], e["status"]) for e in sessions["0#r1"] if e["kind"] == "effect"]
    assert effects == [
        ("get_user_details", "ok"),
        ("get_reservation_details", "error"),
        ("get_reservation_details", "ok"),
        ("cancel_reservation", "ok"),
    ]
    failed = next(e for e in sessions["0#r1"] if e["kind"] == "effect" and e["status"] == "error")
    assert failed["payload"]["result"] == {"call_id": "call_1b", "content": "Error: Reservation N06JO3 not found"}
    args = [
        e["payload"]["args"]
        for e in sessions["0#r1"]
        if e["kind"] == "action" and e["name"] == "get_reservation_details"
    ]
    assert args == [{"reservation_id": "N06JO3"}, {"reservation_id": "NO6JO3"}]  # flat calls, arguments objects
    # parallel flat calls: two actions of one call, each effect linked to its own
    first = [e for e in sessions["1"] if e["kind"] in ("action", "effect") and e["step"] == "call-001"]
    assert [(e["kind"], e["name"]) for e in first] == [
        ("action", "get_user_details"),
        ("action", "get_reservation_details"),
        ("effect", "get_user_details"),
        ("effect", "get_reservation_details"),
    ]
    assert [e["parent"] for e in first[2:]] == [e["seq"] for e in first[:2]]
    # every request carries the tool definitions and the model of the file (info.agent_info.llm)
    tools = json.loads(Path(TAU2_TOOLS).read_text())
    llm = [e for ev in sessions.values() for e in ev if e["kind"] == "llm"]
    assert llm and all(_request(e)["tools"] == tools for e in llm)
    assert {e["model"] for e in llm} == {"openai:gpt-4.1-mini"}
    # requests hold what a model is sent: tau2-bench's bookkeeping (turn_idx, cost, raw_data ...) is not
    keys = {k for e in llm for m in _request(e)["messages"] for k in m}
    keys |= {k for e in llm for k in e["payload"]["response"]["choices"][0]["message"]}
    assert keys == {"role", "content", "tool_calls", "tool_call_id"}
    # the orchestrator's greeting opens each simulation: history of the first call, not a call
    firsts = [_request(e)["messages"] for e in llm if e["step"] == "call-001"]
    assert len(firsts) == 4 and all([m["role"] for m in h] == ["assistant", "user"] for h in firsts)
    # the tau2 map alone (no --tools): the results file keeps no tool definitions, so the requests have none
    ok(sdbctl("import", "chat", TAU2, "--map", TAU2_MAP, "--run-id", "bare"))
    assert all("tools" not in _request(e) for e in _llm(sdbctl, "bare"))
    assert _manifest(tmp_path, "bare")["meta"]["tools"] is None


def test_an_assistant_message_that_opens_a_conversation_is_history_not_a_call(sdbctl: CLI, tmp_path: Path) -> None:
    """tau2-bench's orchestrator writes the agent's greeting first: no request asked for it (a request
    with no messages is not one a provider takes, nor one a replay could ask)."""
    conv = _conv("g")
    conv["messages"].insert(0, {"role": "assistant", "content": "Hi! How can I help you today?"})
    (tmp_path / "g.jsonl").write_text(json.dumps(conv) + "\n")
    ok(sdbctl("import", "chat", "g.jsonl", "--run-id", "g"))
    llm = _llm(sdbctl, "g")
    assert [e["step"] for e in llm] == ["call-001", "call-002"]
    assert [m["role"] for m in _request(llm[0])["messages"]] == ["assistant", "user"]


def test_a_users_tool_calls_and_their_results_are_not_the_agents(sdbctl: CLI, tmp_path: Path) -> None:
    """tau2-bench's telecom user simulator runs tools on its own phone: a user message's tool calls
    and their results never reached the agent, so they are neither its effects nor in its requests."""
    conv = {
        "id": "phone",
        "messages": [
            {"role": "user", "content": "My phone has no signal."},
            {"role": "assistant", "tool_calls": [{"id": "a1", "name": "get_line", "arguments": {"n": "555"}}]},
            {"role": "tool", "id": "a1", "content": "{}", "requestor": "assistant", "error": False},
            {"role": "assistant", "content": "Please turn airplane mode off."},
            {
                "role": "user",
                "content": None,
                "tool_calls": [{"id": "u1", "name": "toggle_airplane_mode", "arguments": {}}],
            },
            {"role": "tool", "id": "u1", "content": "Airplane mode: off", "requestor": "user", "error": False},
            {"role": "user", "content": "Done, it works.", "tool_calls": None},
            {"role": "assistant", "content": "Great."},
        ],
    }
    (tmp_path / "p.jsonl").write_text(json.dumps(conv) + "\n")
    ok(sdbctl("import", "chat", "p.jsonl", "--run-id", "p"))
    events = shown_events(sdbctl, "p")
    assert [(e["name"], e["status"]) for e in events if e["kind"] == "effect"] == [("get_line", "ok")]
    history = _request(_llm(sdbctl, "p")[-1])["messages"]
    assert [(m["role"], m.get("content")) for m in history][-2:] == [
        ("assistant", "Please turn airplane mode off."),
        ("user", "Done, it works."),
    ]
    assert len(history) == 5 and not any(m.get("tool_calls") for m in history if m["role"] == "user")
