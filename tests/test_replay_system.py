"""``replay RUN --system FILE`` and ``--system-from AGENT=FILE`` (issue 22 item 5): a new system prompt
for recorded and imported traffic, which has no template to re-render; and the one line a step replay
says of a run whose requests carry no tool definitions (issue 22 item 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import xxhash
from openai import OpenAI

from sdbctl.fixtures.agents.weather_agent import ask
from sdbctl.fixtures.agents.weather_model import answer as weather_answer
from sdbctl.recorders.proxy import ConversationRecorder, RecordingProxy
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.redaction import load_redactor
from sdbctl.sdb.replay import ReplayOptions, prepare
from sdbctl.sdb.replay._source import iter_steps
from sdbctl.sdb.replay._system import system_change, system_text, with_system
from sdbctl.sdb.store import Store
from tests.conftest import CLI, assert_one_line_error
from tests.llm_server import LLMServer

OLD = "You are a helpful airline agent."
NEW = "You are a terse airline agent: answer in one sentence."
NO_TOOLS = "carry no tool definitions"


def _text_answer(request: dict[str, Any]) -> dict[str, Any]:
    """A chat completion that answers with text, whatever it is asked."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": str(request.get("model")),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def _conversation(cid: str, system: str | None) -> dict[str, Any]:
    turns = [
        {"role": "user", "content": f"Hi, I am {cid}."},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Move my flight, please."},
        {"role": "assistant", "content": "It is moved."},
    ]
    head = [{"role": "system", "content": system}] if system is not None else []
    return {"id": cid, "model": "gpt-4o", "messages": head + turns}


def _import_chat(sdbctl: CLI, tmp_path: Path) -> None:
    """Run ``imp``: two imported conversations with no tool definitions, one with a system message
    (``OLD``), one without: four model calls."""
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(c) + "\n" for c in (_conversation("c1", OLD), _conversation("c2", None))))
    out = sdbctl("import", "chat", str(log), "--run-id", "imp")
    assert out.returncode == 0, out.stderr


def _requests(store: Path, run_id: str) -> list[dict[str, Any]]:
    """The requests of ``run_id``'s llm events, read back whole, in session and seq order."""
    steps = [s for chunk in iter_steps(Store.open(store), run_id) for s in chunk]
    return [s.request for s in sorted(steps, key=lambda s: (s.session_id, s.seq))]


def _replay_meta(store: Path, run_id: str) -> dict[str, Any]:
    return dict(json.loads((store / "runs" / run_id / "run.json").read_text())["meta"]["replay"])


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_system_replaces_an_imported_runs_system_prompt(sdbctl: CLI, tmp_path: Path, store: Path) -> None:
    _import_chat(sdbctl, tmp_path)
    new = _file(tmp_path, "new.txt", NEW + "\n")
    recorded = _requests(store, "imp")
    with LLMServer(_text_answer) as server:
        out = sdbctl("replay", "imp", "-m", "openai:m", "--base-url", server.url, "--system", str(new), "--run-id", "c")
        assert out.returncode == 0, out.stderr
        assert server.total == 4
        for body in server.bodies:  # the new text, first, once: replaced where there was one, else inserted
            assert body["messages"][0] == {"role": "system", "content": NEW}
            assert [m["role"] for m in body["messages"]].count("system") == 1
        asked = sorted(json.dumps(b["messages"][1:], sort_keys=True) for b in server.bodies)
        kept = sorted(json.dumps([m for m in r["messages"] if m["role"] != "system"], sort_keys=True) for r in recorded)
        assert asked == kept  # the rest of each request is the recorded one
    # the candidate's llm events hold the request as asked
    assert [r["messages"][0] for r in _requests(store, "c")] == [{"role": "system", "content": NEW}] * 4
    assert _replay_meta(store, "c")["system"] == {
        "system": {"file": str(new), "xxh3": xxhash.xxh3_64_hexdigest(new.read_bytes())},
        "system_from": [],
    }
    lines = out.stderr.splitlines()
    assert sum(NO_TOOLS in line for line in lines) == 1  # said once, on one line
    assert "run imp's requests carry no tool definitions: the candidate can answer only with text" in out.stderr
    assert any("4 requests" in line and f"--system {new}" in line for line in lines)


def _record_through_the_proxy(tmp_path: Path, store: Path, upstream: str) -> None:
    """Run ``prox``: the weather agent (tools in every request) recorded through the proxy."""
    rec = Recorder(store, run_id="prox", handle_signals=False, recorder="proxy")
    proxy = RecordingProxy(upstream, ConversationRecorder(rec, load_redactor(tmp_path))).start()
    try:
        client = OpenAI(base_url=proxy.url, api_key="sk-test")
        with (tmp_path / "agent.log").open("w") as log:
            for city in ("Paris", "Oslo"):
                ask(client, "gpt-4o-mini", city, False, log)
    finally:
        proxy.stop()
        rec.close()


def test_system_replaces_a_proxied_runs_system_prompt(sdbctl: CLI, tmp_path: Path, store: Path) -> None:
    new = _file(tmp_path, "weather.txt", "You are a weather bot. Always use the tool.")
    with LLMServer(weather_answer) as upstream:
        _record_through_the_proxy(tmp_path, store, upstream.url)
        assert {system_text(r) for r in _requests(store, "prox")} == {
            "You answer weather questions with the get_weather tool."
        }
        before = upstream.total
        out = sdbctl(
            "replay", "prox", "-m", "openai:gpt-4o-mini", "--base-url", upstream.url, "--system", str(new),
            "--run-id", "cand", "--json",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        bodies = upstream.bodies[before:]
        assert len(bodies) == 4 and all(b["messages"][0]["content"] == new.read_text() for b in bodies)
        assert all(b["tools"] for b in bodies)
    assert {system_text(r) for r in _requests(store, "cand")} == {new.read_text()}
    assert _replay_meta(store, "cand")["system"]["system"]["xxh3"] == xxhash.xxh3_64_hexdigest(new.read_bytes())
    assert NO_TOOLS not in out.stderr  # its requests carry the tools
    assert json.loads(out.stdout)["divergences"] == 0  # the simulated model ignores the system prompt


def _two_agents(store: Path) -> None:
    """Run ``two``: a planner and a writer, each with its own system prompt, in two sessions."""
    with Recorder(store, run_id="two", handle_signals=False) as rec:
        for sid in ("s1", "s2"):
            session = rec.session(sid)
            for actor, system in (("planner", "Plan the trip."), ("writer", "Write the e-mail.")):
                request = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": sid}]}
                session.llm(request, _text_answer(request), model="openai:m", actor=actor)


def test_system_from_by_actor_and_by_old_prompt_file(sdbctl: CLI, tmp_path: Path, store: Path) -> None:
    _two_agents(store)
    plan = _file(tmp_path, "plan.txt", "Plan the trip, cheaply.")
    old_writer = _file(tmp_path, "old-writer.txt", "Write the e-mail.\n")
    write = _file(tmp_path, "write.txt", "Write the e-mail, politely.")
    with LLMServer(_text_answer) as server:
        out = sdbctl(
            "replay", "two", "-m", "openai:m", "--base-url", server.url, "--run-id", "c",
            "--system-from", f"planner={plan}", "--system-from", f"{old_writer}={write}",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        got = sorted((b["messages"][1]["content"], b["messages"][0]["content"]) for b in server.bodies)
        assert got == [
            ("s1", "Plan the trip, cheaply."),
            ("s1", "Write the e-mail, politely."),
            ("s2", "Plan the trip, cheaply."),
            ("s2", "Write the e-mail, politely."),
        ]
        counted = [line for line in out.stderr.splitlines() if "requests" in line and "--system-from" in line]
        assert len(counted) == 1
        assert f"2 by --system-from planner={plan}" in counted[0]
        assert f"2 by --system-from {old_writer}={write}" in counted[0]
        saved = _replay_meta(store, "c")["system"]["system_from"]
        assert [(r["agent"], r["file"], r["old_xxh3"] is not None) for r in saved] == [
            ("planner", str(plan), False),
            (str(old_writer), str(write), True),
        ]
        # a rule that matches no request: one line naming it and the run's actors; nothing asked
        asked = server.total
        out = sdbctl("replay", "two", "-m", "openai:m", "--base-url", server.url, "--system-from", f"critic={plan}")
        assert_one_line_error(out, f"--system-from critic={plan}", "matches no request", "planner, writer")
        stale = _file(tmp_path, "stale.txt", "An old prompt nobody uses.")
        out = sdbctl("replay", "two", "-m", "openai:m", "--base-url", server.url, "--system-from", f"{stale}={plan}")
        assert_one_line_error(out, f"--system-from {stale}={plan}", "matches no request", "planner, writer")
        assert server.total == asked


def _partial_replay(store: Path, run_id: str, opts: ReplayOptions) -> None:
    """A replay run of ``imp`` interrupted before its first step, its manifest saying ``opts``."""
    meta = prepare(store, "imp", opts).replayer.manifest_meta()
    Recorder(store=store, run_id=run_id, meta=meta, recorder="replay", handle_signals=False).close("partial")


def test_resume_with_another_or_no_system_file_is_refused(sdbctl: CLI, tmp_path: Path, store: Path) -> None:
    _import_chat(sdbctl, tmp_path)
    new = _file(tmp_path, "new.txt", NEW)
    other = _file(tmp_path, "other.txt", "Another prompt.")
    with LLMServer(_text_answer) as server:
        common = ("replay", "--resume", "r", "-m", "openai:m", "--base-url", server.url)
        _partial_replay(
            store, "r", ReplayOptions(model="openai:m", base_url=server.url, system=system_change(str(new), []))
        )
        digest = xxhash.xxh3_64_hexdigest(new.read_bytes())
        out = sdbctl(*common, "--system", str(other))
        assert_one_line_error(out, f"--system {other}", str(new), digest, "differs from run 'r'")
        out = sdbctl(*common)  # missing: refused too, never the store's file
        assert_one_line_error(out, "--system (none) differs from run 'r'", str(new), digest)
        assert server.total == 0
        # the same text under another name is the same prompt: the resume completes the run
        moved = _file(tmp_path, "moved.txt", NEW)
        out = sdbctl(*common, "--system", str(moved))
        assert out.returncode == 0, out.stderr
        assert server.total == 4 and all(b["messages"][0]["content"] == NEW for b in server.bodies)
    # a run replayed without --system is not resumed with one
    with LLMServer(_text_answer) as server:
        _partial_replay(store, "r2", ReplayOptions(model="openai:m", base_url=server.url))
        out = sdbctl("replay", "--resume", "r2", "-m", "openai:m", "--base-url", server.url, "--system", str(new))
        assert_one_line_error(out, f"--system {new}", "differs from run 'r2'", "(none)")
        # nor a --system-from rule with another file
        opts = ReplayOptions(model="openai:m", base_url=server.url, system=system_change(None, [f"agent={new}"]))
        _partial_replay(store, "r3", opts)
        out = sdbctl(
            "replay", "--resume", "r3", "-m", "openai:m", "--base-url", server.url, "--system-from", f"agent={other}"
        )
        assert_one_line_error(out, f"--system-from agent={other}", f"replayed with --system-from agent={new}")
        assert server.total == 0


def test_a_bad_system_file_is_one_line(sdbctl: CLI, tmp_path: Path) -> None:
    _import_chat(sdbctl, tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Vous êtes un agent.".encode("latin-1"))
    empty = _file(tmp_path, "empty.txt", "\n\n")
    for path, why in ((tmp_path / "missing.txt", "no such file"), (bad, "not UTF-8"), (empty, "empty")):
        out = sdbctl("replay", "imp", "-m", "openai:m", "--base-url", "http://127.0.0.1:9/v1", "--system", str(path))
        assert_one_line_error(out, f"--system {path}", why)
        out = sdbctl(
            "replay", "imp", "-m", "openai:m", "--base-url", "http://127.0.0.1:9/v1", "--system-from", f"agent={path}"
        )
        assert_one_line_error(out, f"--system-from {path}", why)
    out = sdbctl("replay", "imp", "-m", "openai:m", "--system-from", "agent")
    assert_one_line_error(out, "--system-from 'agent'", "AGENT=FILE")
    assert sorted(p.name for p in (tmp_path / ".sdb" / "runs").iterdir()) == ["imp"]  # no run made


def test_system_in_session_mode_or_with_the_recorded_answers_is_refused(sdbctl: CLI, tmp_path: Path) -> None:
    _import_chat(sdbctl, tmp_path)
    new = _file(tmp_path, "new.txt", NEW)
    out = sdbctl("replay", "imp", "-m", "openai:m", "--mode", "session", "--system", str(new))
    assert_one_line_error(out, "--system", "step mode", "--prompt")
    out = sdbctl("replay", "imp", "-m", "recorded", "--system", str(new))
    assert_one_line_error(out, "--system", "recorded answers")


def test_system_alone_asks_the_runs_own_model_on_the_server_named(sdbctl: CLI, tmp_path: Path, store: Path) -> None:
    _import_chat(sdbctl, tmp_path)
    new = _file(tmp_path, "new.txt", NEW)
    out = sdbctl("replay", "imp", "--system", str(new))  # the store never chooses the endpoint
    assert_one_line_error(out, "--system", "--base-url", "--model")
    with LLMServer(_text_answer) as server:
        out = sdbctl("replay", "imp", "--system", str(new), "--base-url", server.url, "--run-id", "own")
        assert out.returncode == 0, out.stderr
        assert server.total == 4 and {b["model"] for b in server.bodies} == {"gpt-4o"}
        assert {b["messages"][0]["content"] for b in server.bodies} == {NEW}
    assert _replay_meta(store, "own")["model"] == "openai:gpt-4o"


def test_the_no_tools_line_is_said_only_when_a_model_is_asked(sdbctl: CLI, tmp_path: Path) -> None:
    _import_chat(sdbctl, tmp_path)
    out = sdbctl("replay", "imp", "-m", "recorded")
    assert out.returncode == 0, out.stderr
    assert NO_TOOLS not in out.stderr
    with LLMServer(_text_answer) as server:
        out = sdbctl("replay", "imp", "-m", "openai:m", "--base-url", server.url)
        assert out.returncode == 0, out.stderr
        assert out.stderr.count(NO_TOOLS) == 1 and server.total == 4


def test_with_system_reads_each_api_shape() -> None:
    chat: dict[str, Any] = {
        "messages": [{"role": "developer", "content": [{"type": "text", "text": "old"}]}, {"role": "user"}]
    }
    assert system_text(chat) == "old"
    assert with_system(chat, "new")["messages"] == [{"role": "developer", "content": "new"}, {"role": "user"}]
    assert chat["messages"][0]["content"] == [{"type": "text", "text": "old"}]  # the recorded one is untouched
    responses = {"input": "hi", "instructions": "old"}
    assert system_text(responses) == "old" and with_system(responses, "new") == {"input": "hi", "instructions": "new"}
    assert with_system({"input": "hi"}, "new") == {"input": "hi", "instructions": "new"}  # added when missing
    anthropic = {"system": "old", "messages": [{"role": "user", "content": "hi"}]}
    assert system_text(anthropic) == "old" and with_system(anthropic, "new")["system"] == "new"
    bare = {"messages": [{"role": "user", "content": "hi"}]}
    assert system_text(bare) is None
    assert with_system(bare, "new")["messages"][0] == {"role": "system", "content": "new"}
