"""``sdbctl import chat``, through the real CLI: the airline fixtures (reused call ids,
failed-then-retried calls, parallel calls, Anthropic blocks, trials, rewards), replay with zero
divergence, bad input (one line, exit 2, no run), ``--skip-bad``, and redaction. The export and its
round trips are in ``test_export_chat.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.chat_runs import MAP, TRIALS, by_session, import_airline, ok, query_rows, shown_events
from tests.conftest import CLI, assert_one_line_error

WRITES = {"update_reservation_flights", "cancel_reservation", "book_reservation"}


def _committed(session: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The committed writes of a session: write actions whose effect succeeded, in order."""
    succeeded = {e["parent"] for e in session if e["kind"] == "effect" and e["status"] == "ok"}
    return [
        (e["name"], e["digest"])
        for e in session
        if e["kind"] == "action" and e["name"] in WRITES and e["seq"] in succeeded
    ]


def test_the_airline_fixtures_import_as_sessions_trials_effects_and_outcomes(sdbctl: CLI, tmp_path: Path) -> None:
    assert import_airline(sdbctl) == {"run_id": "air", "events": 124, "sessions": 10, "skipped": 0}
    manifest = json.loads((tmp_path / ".sdb" / "runs" / "air" / "run.json").read_text())
    assert manifest["recorder"] == "chat" and manifest["mode"] == "record" and manifest["repeat"] == 2
    assert manifest["meta"]["fields"]["session"] == "task_id" and manifest["meta"]["skipped"] == 0
    assert "openai_key" in manifest["meta"]["redaction"] and manifest["meta"]["map"] == MAP
    sessions = by_session(shown_events(sdbctl, "air"))
    assert sorted(sessions) == ["0", "0#r1", "1", "1#r1", "2", "2#r1", "3", "3#r1", "4", "4#r1"]  # trial 1 is #r1
    for events in sessions.values():
        assert [e["seq"] for e in events] == list(range(len(events)))
        for e in events:  # every action is linked to its llm event, every effect to its action, same step
            if e["kind"] in ("action", "effect"):
                parent = events[e["parent"]]
                assert parent["kind"] == ("llm" if e["kind"] == "action" else "action") and parent["step"] == e["step"]
        steps = [e["step"] for e in events if e["kind"] == "llm"]
        assert steps == [f"call-{i:03d}" for i in range(1, len(steps) + 1)]

    # reused ids (call_0 every turn): each result answers the earliest unanswered call with its id,
    # so the failed update is linked to the first update and the retry's success to the second
    noah = sessions["0#r1"]
    actions = [e for e in noah if e["kind"] == "action" and e["name"] != "message"]
    effects = [e for e in noah if e["kind"] == "effect"]
    assert {a["payload"]["call_id"] for a in actions} == {"call_0"} and len(actions) == len(effects) == 5
    assert [e["parent"] for e in effects] == [a["seq"] for a in actions]  # one result each, none dropped
    assert [(e["name"], e["status"]) for e in effects][-2:] == [
        ("update_reservation_flights", "error"),  # effect_error = "^Error" matched
        ("update_reservation_flights", "ok"),
    ]
    assert effects[-2]["payload"]["result"] == {"call_id": "call_0", "content": "Error: payment method not found"}
    assert actions[-2]["payload"]["args"]["payment_id"] == "credit_card_4412"

    # parallel tool calls: two actions of one llm event, each effect linked to its own call
    first = [e for e in sessions["1"] if e["step"] == "call-001"]
    assert [(e["kind"], e["name"]) for e in first] == [
        ("llm", "chat"),
        ("action", "get_user_details"),
        ("action", "get_reservation_details"),
        ("effect", "get_user_details"),
        ("effect", "get_reservation_details"),
    ]
    assert first[3]["parent"] == first[1]["seq"] and first[4]["parent"] == first[2]["seq"]

    # Anthropic content blocks: tool_use blocks are calls, tool_result blocks effects (is_error honoured)
    claude = sessions["3#r1"]
    assert [(e["kind"], e["name"], e["status"]) for e in claude if e["kind"] != "llm"] == [
        ("action", "get_reservation_details", "ok"),
        ("effect", "get_reservation_details", "error"),
        ("action", "get_reservation_details", "ok"),
        ("effect", "get_reservation_details", "ok"),
        ("action", "get_user_details", "ok"),
        ("effect", "get_user_details", "ok"),
        ("action", "message", "ok"),
        ("state", "outcome", "ok"),
    ]
    llm = [e for e in claude if e["kind"] == "llm"]
    assert llm[0]["model"] == "openai:claude-3-5-sonnet-20241022"
    history = llm[-1]["payload"]["request"]["messages"]
    assert [m["role"] for m in history] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    assert history[2]["tool_calls"][0]["function"] == {
        "name": "get_reservation_details",
        "arguments": '{"reservation_id":"H8TQ1I"}',
    }
    assert history[2]["content"] == "Let me look up the reservation." and history[3]["tool_call_id"] == "toolu_01Hq"
    assert llm[-1]["payload"]["request"]["tools"][0]["function"]["name"] == "get_user_details"  # input_schema converted
    reply = llm[-1]["payload"]["response"]["choices"][0]
    assert reply["finish_reason"] == "stop" and reply["message"]["content"].startswith("As a gold member")

    # the outcome of every session, as a state event after its messages
    outcomes = {s: [e for e in ev if e["kind"] == "state"] for s, ev in sessions.items()}
    assert {s: [(o["name"], o["payload"]) for o in found] for s, found in outcomes.items()} == {
        s: [("outcome", {"value": 0 if s in ("2#r1", "4#r1") else 1})] for s in sessions
    }
    assert all(found[0]["seq"] == len(sessions[s]) - 1 for s, found in outcomes.items())

    # task 0: the conversations differ (an extra lookup, a failed-then-retried write), the committed
    # writes do not; task 2: one write argument differs, and the reward flipped
    assert len(sessions["0"]) != len(sessions["0#r1"])
    assert _committed(sessions["0"]) == _committed(sessions["0#r1"]) != []
    books = [
        [e for e in sessions[s] if e["name"] == "book_reservation" and e["kind"] == "action"] for s in ("2", "2#r1")
    ]
    a, b = books[0][0]["payload"]["args"], books[1][0]["payload"]["args"]
    assert {k for k in a if a[k] != b[k]} == {"cabin"} and (a["cabin"], b["cabin"]) == ("economy", "basic_economy")


def test_an_imported_run_replays_with_zero_divergence(sdbctl: CLI) -> None:
    import_airline(sdbctl)
    same = json.loads(ok(sdbctl("replay", "air", "--model", "recorded", "--run-id", "again", "--json")).stdout)
    assert same["divergences"] == 0 and same["steps"] == 42 and same["errors"] == 0
    both = json.loads(ok(sdbctl("diff", "air", "again", "--json")).stdout)  # two trials: ID and ID#r1 sessions
    assert both["divergences"] == [] and both["summary"]["sessions_compared"] == 10  # 5 tasks x 2 trials
    # one trial (no session repeats), replayed and diffed
    ok(sdbctl("import", "chat", TRIALS[1], "--map", MAP, "--run-id", "b"))
    ok(sdbctl("replay", "b", "--model", "recorded", "--run-id", "b-again"))
    diff = json.loads(ok(sdbctl("diff", "b", "b-again", "--json")).stdout)
    assert diff["divergences"] == [] and diff["summary"]["steps_compared"] > 0


GOOD = {
    "id": "t1",
    "messages": [
        {"role": "user", "content": "cancel ABC123"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "cancel", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ],
}


def _with(**changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(GOOD)), **changes}


def _bad_call(call: dict[str, Any]) -> dict[str, Any]:
    return _with(id="t2", messages=[GOOD["messages"][0], {"role": "assistant", "tool_calls": [call]}])


BAD_LINES = {
    "truncated": (json.dumps(GOOD)[:-9], "not valid JSON"),
    "not-object": ("[1, 2]", "must be a JSON object, not list"),
    "no-messages": (json.dumps({"id": "t2", "turns": []}), "no messages list at 'messages'"),
    "empty-messages": (json.dumps(_with(id="t2", messages=[])), "is empty"),
    "message-not-object": (json.dumps(_with(id="t2", messages=["hi"])), "messages[0]: a message must be an object"),
    "no-role": (json.dumps(_with(id="t2", messages=[{"content": "hi"}])), "messages[0]: a message with no role"),
    "no-function-name": (
        json.dumps(_bad_call({"id": "c", "function": {"arguments": "{}"}})),
        "messages[1].tool_calls[0]: a tool call with no function name",
    ),
    "bad-arguments": (
        json.dumps(_bad_call({"id": "c", "function": {"name": "cancel", "arguments": 42}})),
        "arguments of 'cancel' are a int, neither an object nor a JSON string",
    ),
    "outcome-range": (json.dumps(_with(id="t2", outcome=1.5)), "outcome at 'outcome' must be a boolean or a number"),
    "outcome-text": (json.dumps(_with(id="t2", outcome="pass")), "'pass'"),
    "repeat-text": (json.dumps(_with(id="t2", repeat="first")), "repeat at 'repeat' must be an integer"),
    "duplicate": (json.dumps(GOOD), "session 't1' is also at"),
}


def _runs(sdbctl: CLI) -> list[Any]:
    return list(json.loads(ok(sdbctl("runs", "--json")).stdout))


def test_bad_input_is_one_line_naming_the_place_and_writes_no_run(sdbctl: CLI, tmp_path: Path) -> None:
    good = json.dumps(GOOD)
    (tmp_path / "good.jsonl").write_text(good + "\n")
    ok(sdbctl("import", "chat", "good.jsonl", "--run-id", "first"))
    before = _runs(sdbctl)
    for label, (bad, reason) in BAD_LINES.items():
        (tmp_path / f"{label}.jsonl").write_text(good + "\n" + bad + "\n")
        assert_one_line_error(sdbctl("import", "chat", f"{label}.jsonl"), f"{label}.jsonl:2:", reason)
    assert_one_line_error(sdbctl("import", "chat", "duplicate.jsonl"), "duplicate.jsonl:2:", "duplicate.jsonl:1")
    (tmp_path / "binary.jsonl").write_bytes(good.encode() + b"\n\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    assert_one_line_error(sdbctl("import", "chat", "binary.jsonl"), "binary.jsonl:2:", "binary")
    # a JSON array: FILE[i]; one pretty-printed object: FILE; a broken one: FILE:LINE
    (tmp_path / "array.json").write_text(json.dumps([GOOD, _with(id="t2", messages=3)], indent=2))
    assert_one_line_error(sdbctl("import", "chat", "array.json"), "array.json[1]:", "no messages list")
    (tmp_path / "one.json").write_text(json.dumps(_with(messages=[{"role": 7}]), indent=2))
    assert_one_line_error(sdbctl("import", "chat", "one.json"), "one.json: messages[0]: a message with no role")
    (tmp_path / "broken.json").write_text(json.dumps(GOOD, indent=2)[:-30])
    assert_one_line_error(sdbctl("import", "chat", "broken.json"), "broken.json:", "not valid JSON")
    for empty in ("", "[]", "\n\n"):
        (tmp_path / "empty.jsonl").write_text(empty)
        assert_one_line_error(sdbctl("import", "chat", "empty.jsonl"), "empty.jsonl: no conversation to import")
    assert_one_line_error(sdbctl("import", "chat", "nowhere.jsonl"), "nowhere.jsonl: cannot read")
    # several files are all or nothing: a good one followed by a bad one writes nothing
    assert_one_line_error(sdbctl("import", "chat", "good.jsonl", "truncated.jsonl"), "truncated.jsonl:2:")
    # a bad map: one line naming it
    maps = {
        "unknown.toml": ('sesion = "task_id"\n', "unknown map key(s) sesion"),
        "regex.toml": ('effect_error = "(unclosed"\n', "effect_error '(unclosed' is not a valid regular expression"),
        "broken.toml": ('session = "task_id\n', "not valid TOML"),
        "type.toml": ("outcome = 3\n", "outcome must be a string"),
    }
    for name, (text, reason) in maps.items():
        (tmp_path / name).write_text(text)
        assert_one_line_error(sdbctl("import", "chat", "good.jsonl", "--map", name), f"{name}: ", reason)
    assert_one_line_error(sdbctl("import", "chat", "good.jsonl", "--map", "none.toml"), "none.toml: cannot read")
    assert _runs(sdbctl) == before  # no run written, none touched


def test_skip_bad_imports_the_rest_and_counts(sdbctl: CLI, tmp_path: Path) -> None:
    lines = [json.dumps(GOOD), BAD_LINES["no-role"][0], json.dumps(_with(id="t3")), "{oops", json.dumps(GOOD)]
    (tmp_path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    out = ok(sdbctl("import", "chat", "mixed.jsonl", "--skip-bad", "--run-id", "mixed"))
    assert out.stdout.strip() == "mixed" and "3 bad conversations skipped" in out.stderr  # 2 bad, 1 duplicate
    assert sorted(by_session(shown_events(sdbctl, "mixed"))) == ["t1", "t3"]
    summary = json.loads(ok(sdbctl("import", "chat", "mixed.jsonl", "--skip-bad", "--json")).stdout)
    assert summary["skipped"] == 3 and summary["sessions"] == 2 and summary["events"] == 6


def test_defaults_ids_booleans_models_unknown_results_and_model_parse_failures(sdbctl: CLI, tmp_path: Path) -> None:
    conversations = [
        {  # no id: conv-0; a boolean outcome; a top-level model
            "model": "gpt-4.1-mini",
            "outcome": True,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "nobody", "content": "stray result"},  # answers no call
                {"role": "assistant", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "!"}]},
            ],
        },
        {  # no id, no model; arguments the model wrote as broken JSON: its parse failure, kept
            "outcome": False,
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}],
                },
            ],
        },
    ]
    (tmp_path / "plain.json").write_text(json.dumps(conversations))
    ok(sdbctl("import", "chat", "plain.json", "--run-id", "plain"))
    sessions = by_session(shown_events(sdbctl, "plain"))
    assert sorted(sessions) == ["conv-0", "conv-1"]
    first = [(e["kind"], e["name"], e["status"], e["model"]) for e in sessions["conv-0"]]
    assert first == [
        ("effect", "?", "ok", None),
        ("llm", "chat", "ok", "openai:gpt-4.1-mini"),
        ("action", "message", "ok", None),
        ("state", "outcome", "ok", None),
    ]
    assert sessions["conv-0"][0]["parent"] is None and sessions["conv-0"][2]["payload"]["args"] == {"content": "Hello!"}
    second = sessions["conv-1"]
    assert second[0]["model"] == "chat" and (second[1]["name"], second[1]["status"]) == ("?", "parse_failed")
    assert [e["payload"] for e in second if e["kind"] == "state"] == [{"value": 0}]
    # a repeat map ranks the trials: the lowest is the plain id, then #r1, #r2 (gaps do not matter)
    trials = [_with(id="t", trial=t) for t in (7, 3, 5)]
    (tmp_path / "trials.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trials))
    (tmp_path / "map.toml").write_text('repeat = "trial"\noutcome = ""\n')
    ok(sdbctl("import", "chat", "trials.jsonl", "--map", "map.toml", "--run-id", "trials"))
    assert sorted(by_session(shown_events(sdbctl, "trials"))) == ["t", "t#r1", "t#r2"]
    manifest = json.loads((tmp_path / ".sdb" / "runs" / "trials" / "run.json").read_text())
    assert manifest["repeat"] == 3 and manifest["mode"] == "record"
    rows = query_rows(
        sdbctl,
        "SELECT e.session_id, r.request FROM events e JOIN requests r USING (run_id, session_id, seq) "
        "WHERE e.run_id = 'trials' AND e.step = 'call-001' AND e.kind = 'llm'",
    )
    assert [json.loads(p)["messages"][0]["content"] for _, p in rows] == ["cancel ABC123"] * 3


def test_secrets_never_reach_the_store(sdbctl: CLI, tmp_path: Path) -> None:
    key = "sk-proj-TESTKEY0123456789abcdefghijklmnop"
    leaky = _with(
        id="ticket-jane.doe@example.com",
        messages=[
            {"role": "user", "content": f"my key is {key}, mail me at jane.doe@example.com"},
            {"role": "assistant", "content": f"Noted: {key}"},
            {"role": "tool", "tool_call_id": "x", "content": json.dumps({"token": key})},
        ],
    )
    (tmp_path / "leaky.jsonl").write_text(json.dumps(leaky) + "\n")
    ok(sdbctl("import", "chat", "leaky.jsonl", "--run-id", "leaky"))
    for path in (tmp_path / ".sdb").rglob("*"):
        if path.is_file():
            assert b"TESTKEY" not in path.read_bytes() and b"jane.doe" not in path.read_bytes(), path
    text = ok(sdbctl("export", "leaky")).stdout
    assert "TESTKEY" not in text and "jane.doe" not in text
    assert "[REDACTED:openai_key]" in text and '"session_id":"[REDACTED:email]"' in text
    chat = ok(sdbctl("export", "leaky", "--format", "chat")).stdout
    assert "TESTKEY" not in chat and "[REDACTED:openai_key]" in chat


REACT = 'I will book it: {"action": "book_reservation", "action_input": {"flight": "HAT1", "cabin": "economy"}}'


def _actions(sdbctl: CLI, run: str) -> list[tuple[str, Any]]:
    return [(e["name"], e["payload"]["args"]) for e in shown_events(sdbctl, run) if e["kind"] == "action"]


JSON_TEXT = '[tool.sdbctl.boundary]\nactions = "json_text"\n'
FLIGHT = ("get_flight", {"flight": "HAT1"})


def _react(tmp_path: Path) -> None:
    """``react.jsonl``: a JSON action in a text reply, then a tool call and its result."""
    call = {"id": "c1", "function": {"name": "get_flight", "arguments": '{"flight": "HAT1"}'}}
    conversation = _with(
        id="r",
        messages=[
            {"role": "user", "content": "book HAT1"},
            {"role": "assistant", "content": REACT},
            {"role": "user", "content": "go on"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "HAT1: seats left"},
        ],
    )
    (tmp_path / "react.jsonl").write_text(json.dumps(conversation) + "\n")


def _replayed(sdbctl: CLI, run: str, again: str) -> int:
    """The divergences of ``replay RUN --model recorded --run-id AGAIN`` (step mode, no agent code)."""
    summary = json.loads(ok(sdbctl("replay", run, "--model", "recorded", "--run-id", again, "--json")).stdout)
    assert summary["steps"] == 2
    return int(summary["divergences"])


def test_actions_come_from_tool_calls_and_text_is_speech_unless_the_project_says_json_text(
    sdbctl: CLI, tmp_path: Path
) -> None:
    """A JSON action in a text reply was never run by an environment that runs tool calls: it is what
    the agent said; only the project's ``actions = "json_text"`` makes it an action, with its
    ``action_input``. A map may say the same, never the opposite."""
    _react(tmp_path)
    ok(sdbctl("import", "chat", "react.jsonl", "--run-id", "said"))
    flight = FLIGHT
    assert _actions(sdbctl, "said") == [("message", {"content": REACT}), flight]
    (tmp_path / "react.toml").write_text('actions = "json_text"\n')
    against = sdbctl("import", "chat", "react.jsonl", "--map", "react.toml", "--run-id", "acted")
    assert_one_line_error(against, "react.toml: actions", "json_text", "[tool.sdbctl.boundary]")
    (tmp_path / "pyproject.toml").write_text(JSON_TEXT)
    ok(sdbctl("import", "chat", "react.jsonl", "--map", "react.toml", "--run-id", "acted"))
    assert _actions(sdbctl, "acted") == [("book_reservation", {"flight": "HAT1", "cabin": "economy"}), flight]
    manifest = json.loads((tmp_path / ".sdb" / "runs" / "acted" / "run.json").read_text())
    assert manifest["meta"]["fields"]["actions"] == "json_text"
    (tmp_path / "bad.toml").write_text('actions = "text"\n')
    bad = sdbctl("import", "chat", "react.jsonl", "--map", "bad.toml")
    assert_one_line_error(bad, "bad.toml: actions", "json_text")
    (tmp_path / "pyproject.toml").write_text('[tool.sdbctl.boundary]\nactions = "text"\n')
    bad = sdbctl("import", "chat", "react.jsonl")
    assert_one_line_error(bad, "pyproject.toml: [tool.sdbctl.boundary] actions", "json_text")


def test_a_recorded_replay_of_an_import_reads_its_text_by_the_project_setting(sdbctl: CLI, tmp_path: Path) -> None:
    """``replay --model recorded`` of an import crosses the boundary as the import did: zero
    divergence, JSON text speech by default and an action under ``actions = "json_text"``. The
    setting is the project's: a run recorded under the other one diverges where its text holds an
    action, whatever its manifest says."""
    _react(tmp_path)
    ok(sdbctl("import", "chat", "react.jsonl", "--run-id", "said"))
    assert _replayed(sdbctl, "said", "said-again") == 0
    assert sorted(_actions(sdbctl, "said-again"), key=str) == sorted(_actions(sdbctl, "said"), key=str)
    (tmp_path / "pyproject.toml").write_text(JSON_TEXT)
    ok(sdbctl("import", "chat", "react.jsonl", "--run-id", "acted"))
    booked = ("book_reservation", {"flight": "HAT1", "cabin": "economy"})
    assert _actions(sdbctl, "acted") == [booked, FLIGHT]
    assert _replayed(sdbctl, "acted", "acted-again") == 0
    assert sorted(_actions(sdbctl, "acted-again"), key=str) == sorted([booked, FLIGHT], key=str)
    # its manifest's fields.actions = "tool_calls" is shown, never obeyed: the project's setting reads it
    assert _replayed(sdbctl, "said", "said-under-json-text") == 1


def test_an_id_read_as_the_trial_of_another_session_is_an_error_naming_both_places(sdbctl: CLI, tmp_path: Path) -> None:
    """``{"id": "x", "repeat": 1}`` and ``{"id": "x#r1"}`` would be one session's trials: refused."""
    (tmp_path / "map.toml").write_text('repeat = "trial"\n')
    clash = [_with(id="x", trial=0), _with(id="x", trial=1), _with(id="x#r1")]
    (tmp_path / "clash.jsonl").write_text("".join(json.dumps(c) + "\n" for c in clash))
    out = sdbctl("import", "chat", "clash.jsonl", "--map", "map.toml")
    assert_one_line_error(out, "clash.jsonl:3:", "'x#r1'", "clash.jsonl:1", "'x'")
    (tmp_path / "two.jsonl").write_text(json.dumps(_with(id="x", repeat=1)) + "\n" + json.dumps(_with(id="x#r1")))
    assert_one_line_error(sdbctl("import", "chat", "two.jsonl"), "two.jsonl:2:", "two.jsonl:1")
    assert not list(tmp_path.glob(".sdb/runs/*"))  # nothing written
    out = ok(sdbctl("import", "chat", "clash.jsonl", "--map", "map.toml", "--skip-bad", "--run-id", "kept"))
    assert "1 bad conversation" in out.stderr and sorted(by_session(shown_events(sdbctl, "kept"))) == ["x", "x#r1"]


@pytest.mark.parametrize("command", [("import", "chat"), ("export",)])
def test_help_teaches(sdbctl: CLI, command: tuple[str, ...]) -> None:
    out = ok(sdbctl(*command, "--help")).stdout
    assert "Example" in out and "chat" in out
    if command == ("import", "chat"):
        assert all(key in out for key in ("messages", "session", "repeat", "outcome", "model", "effect_error"))


# a map names a path; one that matches nothing in any conversation would drop what it asks for
NOTHING = {
    "session": 'session = "nosuchkey"',
    "outcome": 'outcome = "nosuch"',
    "repeat": 'repeat = "info.trial"',
    "model": 'model = "info.nomodel"',
}
AIRLINE_KEYS = "has the keys task_id, trial, reward, info, tools, traj"


@pytest.mark.parametrize("key", [*NOTHING, "messages"])
def test_a_map_path_that_matches_nothing_in_any_conversation_is_an_error(sdbctl: CLI, tmp_path: Path, key: str) -> None:
    text = 'messages = "turns"\n' if key == "messages" else f'messages = "traj"\n{NOTHING[key]}\n'
    (tmp_path / "wrong.toml").write_text(text)
    path = text.split(f'{key} = "')[1].split('"')[0]
    for skip in ((), ("--skip-bad",)):
        out = sdbctl("import", "chat", *TRIALS, "--map", "wrong.toml", *skip)
        assert_one_line_error(
            out, "wrong.toml: ", f'{key} = "{path}"', "matches nothing in any of the 10 conversations", AIRLINE_KEYS
        )
    assert not list(tmp_path.glob(".sdb/runs/*"))  # nothing written


def test_a_map_path_found_in_some_conversations_imports(sdbctl: CLI, tmp_path: Path) -> None:
    """Only a path that matches nothing anywhere is refused: a field some conversations lack is data."""
    (tmp_path / "map.toml").write_text('outcome = "reward"\n')
    (tmp_path / "some.jsonl").write_text(json.dumps(_with(reward=1)) + "\n" + json.dumps(_with(id="t2")) + "\n")
    ok(sdbctl("import", "chat", "some.jsonl", "--map", "map.toml", "--run-id", "some"))
    outcomes = [e for e in shown_events(sdbctl, "some") if e["kind"] == "state"]
    assert [(e["session_id"], e["payload"]) for e in outcomes] == [("t1", {"value": 1})]


def test_without_a_map_the_conventional_keys_found_and_not_found_are_said(sdbctl: CLI, tmp_path: Path) -> None:
    (tmp_path / "plain.jsonl").write_text(json.dumps(_with(reward=1, trial=0)) + "\n")
    out = ok(sdbctl("import", "chat", "plain.jsonl", "--run-id", "plain"))
    lines = out.stderr.strip().splitlines()
    assert lines[0] == "import chat: found messages, id; not found: repeat (trial), outcome (reward), model", lines
    assert len(lines) == 2 and "events in 1 sessions" in lines[1]
    # a map that names every path leaves no default to report
    assert "found" not in ok(sdbctl("import", "chat", *TRIALS, "--map", MAP)).stderr
    # one that names some: the defaults it relies on
    (tmp_path / "map.toml").write_text('outcome = "reward"\nrepeat = "trial"\n')
    out = ok(sdbctl("import", "chat", "plain.jsonl", "--map", "map.toml"))
    assert out.stderr.splitlines()[0] == "import chat: found messages, id; not found: model"
    # no messages list at the default path in any conversation: nothing would import; the keys it has
    (tmp_path / "traj.jsonl").write_text(json.dumps({"id": "t", "traj": GOOD["messages"]}) + "\n")
    out = sdbctl("import", "chat", "traj.jsonl", "--skip-bad")
    assert_one_line_error(out, 'the default messages = "messages"', "has the keys id, traj", 'messages = "traj"')


def test_conversations_without_a_model_call_are_refused_and_leave_no_run(sdbctl: CLI, tmp_path: Path) -> None:
    """A greeting alone, a system prompt alone, a user's question unanswered: before, exit 0 and an empty
    run left as `partial`; the importers are all or nothing."""
    lines = [
        {"id": "greeting", "messages": [{"role": "assistant", "content": "hello"}]},
        {"id": "system", "messages": [{"role": "system", "content": "You help."}]},
        {"id": "asked", "messages": [{"role": "user", "content": "hi?"}]},
    ]
    (tmp_path / "none.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert_one_line_error(sdbctl("import", "chat", "none.jsonl"), "none.jsonl: no conversation holds a model call")
    assert json.loads(sdbctl("runs", "--json").stdout or "[]") == []
