"""The OpenAI Agents SDK recorder, with the real SDK: a two-agent program (an input guardrail, two
function tools, a handoff) runs as a user's process against a local OpenAI-compatible server on
127.0.0.1, through the Responses API and through Chat Completions; its run replays in step mode."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sdbctl.sdb.errors import SdbError
from tests.conftest import CLI, cli_env
from tests.helpers import run_events
from tests.llm_server import LLMServer, chat_completion

pytest.importorskip("agents", reason="needs the OpenAI Agents SDK: pip install openai-agents")

API_KEY = "sk-proj-TESTKEY0123456789abcdefghijklmnop"

# The user's program, unchanged but for the two lines marked: run as a process of its own, so that the
# SDK's own shutdown at exit is what closes the run.
PROGRAM = '''
import asyncio
import json
import sys

from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrailTripwireTriggered,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    input_guardrail,
    set_trace_processors,
)
from openai import APIStatusError, AsyncOpenAI

from sdbctl.recorders.openai_agents import SdbTracingProcessor  # line 1


@function_tool
def lookup_order(order_id: str) -> str:
    """Look an order up by its id."""
    if order_id == "X-0":
        raise RuntimeError("order service is down")
    return json.dumps({"order_id": order_id, "total": 42.5, "email": "jane.doe@example.com"})


@function_tool
def refund(order_id: str, amount: float) -> str:
    """Refund an amount of an order."""
    return f"refunded {amount} on {order_id}"


@input_guardrail
def no_passwords(ctx, agent, text):
    """Refuse a message that gives a password away."""
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="password" in json.dumps(text))


client = AsyncOpenAI(max_retries=0)  # OPENAI_BASE_URL: the local server
kind = OpenAIChatCompletionsModel if sys.argv[1] == "chat" else OpenAIResponsesModel
billing = Agent(
    name="Billing",
    instructions="You refund orders.",
    tools=[refund],
    model=kind("gpt-4o-mini", client),
    model_settings=ModelSettings(temperature=0.2),
)
triage = Agent(
    name="Triage",
    instructions="You route customers.",
    tools=[lookup_order],
    handoffs=[billing],
    input_guardrails=[no_passwords],
    model=kind("gpt-4o-mini", client),
)
set_trace_processors([SdbTracingProcessor(store=".sdb", run_id=sys.argv[2], agents=[triage])])  # line 2
mode = sys.argv[4] if len(sys.argv) > 4 else ""
config = RunConfig(trace_include_sensitive_data=mode != "no-content")


async def streamed():
    result = Runner.run_streamed(triage, sys.argv[3], run_config=config)
    async for _ in result.stream_events():
        pass
    return result.final_output


try:
    if mode == "stream":
        print(asyncio.run(streamed()))
    else:
        print(Runner.run_sync(triage, sys.argv[3], run_config=config).final_output)
except InputGuardrailTripwireTriggered:
    print("refused")
except APIStatusError as exc:
    print(f"failed: {exc.status_code}")
'''


def support_model(factor: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A model for the program: triage looks the order up and hands off, billing refunds ``factor`` of
    the order's total and then says it is done (or says sorry when the lookup failed)."""

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        messages = request["messages"]
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        last = messages[-1]

        def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
            fn = {"name": name, "arguments": json.dumps(args)}
            tool_call = {"id": f"call_{len(messages)}", "type": "function", "function": fn}
            return {"role": "assistant", "content": None, "tool_calls": [tool_call]}

        if "route" in system:
            order = re.search(r"[A-Z]-\d+", str(last["content"])) if last["role"] == "user" else None
            message = call("lookup_order", {"order_id": order.group(0)}) if order else call("transfer_to_billing", {})
        else:
            looked = [m["content"] for m in messages if m["role"] == "tool" and '"total"' in str(m["content"])]
            if last["role"] == "tool" and str(last["content"]).startswith("refunded"):
                message = {"role": "assistant", "content": "Done: " + last["content"]}
            elif looked:
                order = json.loads(looked[0])
                message = call("refund", {"order_id": order["order_id"], "amount": order["total"] * factor})
            else:
                message = {"role": "assistant", "content": "Sorry, I could not find that order."}
        return chat_completion(message, request.get("model"))

    return answer


def run_program(tmp_path: Path, server: LLMServer, api: str, run_id: str, text: str, mode: str = "") -> str:
    """Run the program as a process in ``tmp_path`` (``mode``: ``stream``, ``no-content``, or
    ``failing``: the SDK logs the failure); its output."""
    program = tmp_path / "support_agent.py"
    program.write_text(PROGRAM)
    env = cli_env({"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": server.url})
    out = subprocess.run(
        [sys.executable, str(program), api, run_id, text, mode],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "sdbctl" not in out.stderr and (out.stderr == "" or mode == "failing"), out.stderr  # we print nothing
    return out.stdout.strip()


def events(store: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's events in order (one session), payloads parsed, each llm event's request whole."""
    rows = run_events(store, run_id, payloads=True)
    for row in rows:
        if row["kind"] == "llm":
            row["request"] = row["payload"]["request"]
    return rows


def one(rows: list[dict[str, Any]], **where: Any) -> dict[str, Any]:
    found = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, [(r["kind"], r["name"]) for r in rows])
    return found[0]


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_a_two_agent_program_is_recorded_and_replays(
    sdbctl: CLI, sdbctl_process: CLI, tmp_path: Path, api: str
) -> None:
    with LLMServer(support_model(1.0)) as server:
        said = run_program(tmp_path, server, api, "support", "Please refund order A-17")
        assert said == "Done: refunded 42.5 on A-17"
        # each model call went through the API asked for
        assert server.total == 4 and all(("input" in b) == (api == "responses") for b in server.bodies)
        sent = [json.loads(json.dumps(b).replace("jane.doe@example.com", "[REDACTED:email]")) for b in server.bodies]
    store = tmp_path / ".sdb"
    manifest = json.loads((store / "runs" / "support" / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["recorder"] == "openai-agents"  # closed at the SDK's exit
    rows = events(store, "support")
    assert len({r["session_id"] for r in rows}) == 1  # one trace, one session
    assert [(r["kind"], r["name"], r["actor"]) for r in rows] == [
        ("gate", "no_passwords", "Triage"),
        ("llm", "chat", "Triage"),
        ("action", "lookup_order", "Triage"),
        ("effect", "lookup_order", "Triage"),
        ("llm", "chat", "Triage"),
        ("action", "transfer_to_billing", "Triage"),
        ("action", "handoff", "Triage"),
        ("llm", "chat", "Billing"),
        ("action", "refund", "Billing"),
        ("effect", "refund", "Billing"),
        ("llm", "chat", "Billing"),
        ("action", "message", "Billing"),
    ]
    by_seq = {r["seq"]: r for r in rows}
    gate = one(rows, kind="gate")
    assert gate["status"] == "ok" and gate["payload"]["decision"] == "allow"
    # the full request: instructions, the input, tools (Responses: as the server echoed them), settings
    first, third = (r for r in rows if r["kind"] == "llm" and r["step"] in ("call-001", "call-003"))
    assert first["request"]["messages"][:2] == [
        {"role": "system", "content": "You route customers."},
        {"role": "user", "content": "Please refund order A-17"},
    ]
    assert first["model"] == "openai:gpt-4o-mini" and third["request"]["temperature"] == 0.2
    assert third["request"]["messages"][0] == {"role": "system", "content": "You refund orders."}
    tools = {t["function"]["name"] for t in third["request"].get("tools", [])}
    assert tools == {"refund"}
    assert {t["function"]["name"] for t in first["request"].get("tools", [])} == {"lookup_order", "transfer_to_billing"}
    asked = [r["request"] for r in rows if r["kind"] == "llm"]
    if api == "chat":  # what the SDK sent, whole (tools from agents=, as the SDK's converter makes them)
        assert asked == sent
    else:  # the Responses request in chat form: instructions, every input item, the tools, as sent
        for request, body in zip(asked, sent, strict=True):
            assert request["messages"][0] == {"role": "system", "content": body["instructions"]}
            assert len(request["messages"]) == 1 + len(body["input"])
            assert request["tools"] == [
                {"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters", "strict")}}
                for t in body["tools"]
            ]
    # tool calls are actions of their llm call; each function span is its call's effect
    for effect in (r for r in rows if r["kind"] == "effect"):
        action = by_seq[effect["parent"]]
        assert action["kind"] == "action" and action["name"] == effect["name"]
        assert effect["payload"]["result"]["call_id"] == action["payload"]["call_id"]
        assert by_seq[action["parent"]]["kind"] == "llm" and effect["status"] == "ok"
    # the text the tool gave the model, kept as text: its JSON written back would be other text
    looked = one(rows, kind="effect", name="lookup_order")["payload"]["result"]["content"]
    assert looked == '{"order_id": "A-17", "total": 42.5, "email": "[REDACTED:email]"}'
    # the handoff: an action of its own, under the call that asked for it (not a step of its own)
    handoff = one(rows, kind="action", name="handoff")
    assert handoff["payload"]["args"] == {"from_agent": "Triage", "to_agent": "Billing"}
    assert by_seq[handoff["parent"]]["name"] == "transfer_to_billing"
    assert one(rows, kind="action", name="refund")["payload"]["args"] == {"order_id": "A-17", "amount": 42.5}
    # no secret anywhere in the store
    for path in store.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"TESTKEY" not in data and b"jane.doe@example.com" not in data, path

    # step mode with the recorded answers: zero divergence (the CLI as a process)
    same = sdbctl_process("replay", "support", "--model", "recorded", "--run-id", "same", "--json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["divergences"] == 0 and json.loads(same.stdout)["steps"] == 4
    diff = sdbctl("diff", "support", "same", "--json")
    assert diff.returncode == 0, diff.stderr
    summary = json.loads(diff.stdout)["summary"]
    assert summary["divergences"] == 0 and summary["steps_compared"] == 3  # the three tool-calling steps

    # another answer set: billing refunds half; that step diverges, and only it
    with LLMServer(support_model(0.5)) as other:
        again = sdbctl_process(
            "replay", "support", "--model", "openai:gpt-4o-mini", "--base-url", other.url, "--run-id", "half",
            "--json", env={"OPENAI_API_KEY": API_KEY},
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert other.total == 4  # every step asked once
    assert json.loads(again.stdout)["divergences"] == 1
    diff = sdbctl("diff", "support", "half", "--json")
    assert diff.returncode == 0, diff.stderr
    found = json.loads(diff.stdout)["divergences"]
    assert [(d["step"], d["reason"], d["action"]["base"]) for d in found] == [("call-003", "args_changed", "refund")]
    assert found[0]["fields"] == [{"path": "amount", "old": 42.5, "new": 21.25}]


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_a_tool_that_raises_is_a_failed_effect(tmp_path: Path, api: str) -> None:
    with LLMServer(support_model(1.0)) as server:
        said = run_program(tmp_path, server, api, "down", "Please refund order X-0")
    assert said == "Sorry, I could not find that order."
    rows = events(tmp_path / ".sdb", "down")
    failed = one(rows, kind="effect", name="lookup_order")
    assert failed["status"] == "error"
    assert "order service is down" in json.dumps(failed["payload"]) or "error" in json.dumps(failed["payload"])
    action = next(r for r in rows if r["seq"] == failed["parent"])
    assert action["name"] == "lookup_order" and action["payload"]["args"] == {"order_id": "X-0"}


def test_a_tripped_guardrail_is_a_gated_gate(tmp_path: Path) -> None:
    with LLMServer(support_model(1.0)) as server:
        said = run_program(tmp_path, server, "responses", "tripped", "my password is hunter2, refund A-17")
    assert said == "refused"
    gate = one(events(tmp_path / ".sdb", "tripped"), kind="gate")
    assert (gate["name"], gate["status"], gate["actor"]) == ("no_passwords", "gated", "Triage")
    assert gate["payload"]["decision"] == "deny"


def test_a_streamed_chat_run_records_what_a_plain_one_does(tmp_path: Path) -> None:
    """Streamed, the SDK traces the Response it assembled from the chunks: the same events."""
    with LLMServer(support_model(1.0)) as server:
        assert run_program(tmp_path, server, "chat", "plain", "Refund A-17") == "Done: refunded 42.5 on A-17"
        assert (
            run_program(tmp_path, server, "chat", "streamed", "Refund A-17", "stream") == "Done: refunded 42.5 on A-17"
        )
        assert [b.get("stream", False) for b in server.bodies] == [False] * 4 + [True] * 4

    def shape(run_id: str) -> list[Any]:
        return [
            (r["kind"], r["name"], r["actor"], r["status"], r["payload"].get("args"), r.get("request"))
            for r in events(tmp_path / ".sdb", run_id)
        ]

    plain, streamed = shape("plain"), shape("streamed")
    assert [row[:5] for row in streamed] == [row[:5] for row in plain] and len(plain) == 12
    assert [row[5] for row in streamed] == [row[5] for row in plain]  # the requests too


def test_a_failed_model_call_is_an_error_and_untraced_content_is_marked_missing(tmp_path: Path) -> None:
    with LLMServer(support_model(1.0)) as server:
        server.faults.append(("500", 0))
        assert run_program(tmp_path, server, "responses", "failed", "Refund A-17", "failing") == "failed: 500"
        assert run_program(tmp_path, server, "responses", "blind", "Refund A-17", "no-content").startswith("Done")
    failed = events(tmp_path / ".sdb", "failed")
    error = one(failed, kind="error")
    assert error["actor"] == "Triage" and "Error getting response" in error["payload"]["message"]
    assert not [r for r in failed if r["kind"] == "llm"]
    blind = [r for r in events(tmp_path / ".sdb", "blind") if r["kind"] == "llm"]
    assert len(blind) == 4 and all(r["payload"].get("content") == "missing" for r in blind)
    assert all(r["request"] in ({}, None) for r in blind)


def test_bad_arguments_are_one_line_errors_and_failures_never_reach_the_agent(tmp_path: Path) -> None:
    from sdbctl.recorders.openai_agents import OpenAIAgentsAgent, SdbTracingProcessor

    with pytest.raises(SdbError) as bad:
        SdbTracingProcessor(store=tmp_path / ".sdb", run_id="no/such id")
    assert "\n" not in str(bad.value) and "no/such id" in str(bad.value)
    with pytest.raises(SdbError, match=r"agents=: 'Triage' is not an agents\.Agent"):
        SdbTracingProcessor(store=tmp_path / ".sdb", agents=["Triage"])
    with pytest.raises(SdbError, match=r"^OpenAIAgentsAgent: 'Triage' is not an agents\.Agent$"):
        OpenAIAgentsAgent("Triage", {})
    assert not (tmp_path / ".sdb" / "runs").exists() or not any((tmp_path / ".sdb" / "runs").iterdir())

    processor = SdbTracingProcessor(store=tmp_path / ".sdb", run_id="broken")
    processor.recorder.close()  # the run is gone from under it: spans keep coming

    class Span:
        trace_id, span_id, parent_id, error = "trace_1", "span_1", None, None
        started_at = ended_at = None

        class span_data:
            type = "guardrail"
            name, triggered = "g", False

    processor.on_span_start(Span())
    processor.on_span_end(Span())  # no exception into the agent
    processor.on_span_end(Span())
    processor.shutdown()
    processor.shutdown()


# Session mode: the same two agents in a module the replay loads (``--agent support_agent.py:workload``),
# recorded by a program that names each trace, so that its session id is the workload's input key.
AGENT = '''
import json
import os
from pathlib import Path

from agents import (
    Agent,
    GuardrailFunctionOutput,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    function_tool,
    input_guardrail,
)
from openai import AsyncOpenAI

from sdbctl.recorders.openai_agents import OpenAIAgentsAgent


def ran(name):
    with Path("ran.log").open("a") as log:  # the tools that really ran
        log.write(name + "\\n")


@function_tool
def lookup_order(order_id: str) -> str:
    """Look an order up by its id."""
    ran("lookup_order")
    return json.dumps({"order_id": order_id, "total": 42.5, "email": "jane.doe@example.com"})


@function_tool
def refund(order_id: str, amount: float) -> str:
    """Refund an amount of an order."""
    ran("refund")
    return f"refunded {amount} on {order_id}"


@input_guardrail
def no_passwords(ctx, agent, text):
    """Refuse a message that gives a password away."""
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="password" in json.dumps(text))


def make(api="chat", url="http://127.0.0.1:9/v1"):
    client = AsyncOpenAI(api_key="unused", base_url=url, max_retries=0)
    kind = OpenAIChatCompletionsModel if api == "chat" else OpenAIResponsesModel
    billing = Agent(
        name="Billing",
        instructions="You refund orders.",
        tools=[refund],
        model=kind("gpt-4o-mini", client),
        model_settings=ModelSettings(temperature=0.2),
    )
    triage = Agent(
        name="Triage",
        instructions="You route customers.",
        tools=[lookup_order],
        handoffs=[billing],
        input_guardrails=[no_passwords],
        model=kind("gpt-4o-mini", client),
    )
    inputs = {"trace_a17": "Please refund order A-17", "trace_b5": "Refund order B-5, please"}
    return OpenAIAgentsAgent(triage, inputs, name="support")


workload = make(os.environ.get("SUPPORT_API", "chat"))  # what `--agent support_agent.py:workload` runs again
'''

RECORD = """
import sys

from agents import RunConfig, Runner, set_trace_processors

from sdbctl.recorders.openai_agents import SdbTracingProcessor
import support_agent

workload = support_agent.make(sys.argv[1], sys.argv[2])
set_trace_processors([SdbTracingProcessor(store=".sdb", run_id=sys.argv[3], agents=[workload.agent])])
for trace_id, text in workload.inputs.items():  # each trace named: the session id the replay runs again
    print(Runner.run_sync(workload.agent, text, run_config=RunConfig(trace_id=trace_id)).final_output)
"""


def no_lookup(answer: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``answer``, from a model that does not see the order in the customer's words: triage hands off
    at once, and billing, with no order looked up, says sorry."""

    def other(request: dict[str, Any]) -> dict[str, Any]:
        messages = [{**m, "content": "hello"} if m["role"] == "user" else m for m in request["messages"]]
        return answer({**request, "messages": messages})

    return other


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_session_mode_runs_the_agents_again_serving_recorded_tool_results(
    sdbctl: CLI, sdbctl_process: CLI, tmp_path: Path, api: str
) -> None:
    (tmp_path / "support_agent.py").write_text(AGENT)
    (tmp_path / "record.py").write_text(RECORD)
    with LLMServer(support_model(1.0)) as server:
        out = subprocess.run(
            [sys.executable, "record.py", api, server.url, "support"],
            cwd=tmp_path,
            env=cli_env({"PYTHONPATH": str(tmp_path)}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert out.returncode == 0 and out.stdout.split("\n")[:2] == [
        "Done: refunded 42.5 on A-17",
        "Done: refunded 42.5 on B-5",
    ], out.stderr
    ran = tmp_path / "ran.log"
    assert ran.read_text().split() == ["lookup_order", "refund"] * 2
    ref = "support_agent.py:workload"

    def replay(run_id: str, *model: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        done = sdbctl_process(
            "replay", "support", "--mode", "session", "--agent", ref, *model, "--run-id", run_id, "--json",
            env={"SUPPORT_API": api, **(env or {})},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary: dict[str, Any] = json.loads(done.stdout)
        return summary

    same = replay("again", "--model", "recorded")
    assert same["divergences"] == 0 and same["stopped_sessions"] == 0 and same["model_calls"] == 0, same
    assert sorted((s["session_id"], s["status"], s["steps"]) for s in same["sessions"]) == [
        ("trace_a17", "complete", 4),
        ("trace_b5", "complete", 4),
    ]
    assert ran.read_text().split() == ["lookup_order", "refund"] * 2  # served, never run again
    diff = sdbctl("diff", "support", "again", "--json")
    assert diff.returncode == 0 and json.loads(diff.stdout)["divergences"] == [], diff.stdout
    shape = [(r["kind"], r["name"], r["actor"], r["payload"].get("args")) for r in events(tmp_path / ".sdb", "support")]
    replayed = [
        (r["kind"], r["name"], r["actor"], r["payload"].get("args"))
        for r in events(tmp_path / ".sdb", "again")
        if r["kind"] != "state" and r["name"] != "replay"
    ]
    assert sorted(replayed, key=str) == sorted(shape, key=str)  # the same events: handoffs, gates, effects
    recorded = [r["payload"] for r in events(tmp_path / ".sdb", "support") if r["kind"] == "effect"]
    assert [r["payload"] for r in events(tmp_path / ".sdb", "again") if r["kind"] == "effect"] == recorded

    key = {"OPENAI_API_KEY": API_KEY}
    # another model hands off without looking the order up: each session diverges there, none stops
    with LLMServer(no_lookup(support_model(1.0))) as other:
        summary = replay("blind", "--model", "openai:gpt-4o-mini", "--base-url", other.url, env=key)
    assert summary["divergences"] == 2 and summary["stopped_sessions"] == 0, summary
    diff = sdbctl("diff", "support", "blind", "--json")
    assert diff.returncode == 0, diff.stderr
    found = json.loads(diff.stdout)["divergences"]
    writes = sorted(
        (d["session_id"], d["step"], d["reason"], d["action"]["base"]) for d in found if d["layer"] == "write"
    )
    assert writes == [
        (session, step, "missing", name)
        for session in ("trace_a17", "trace_b5")
        for step, name in (("call-001", "lookup_order"), ("call-003", "refund"))
    ], found
    # another refunds half: a tool call the record has no result for, where each session stops
    with LLMServer(support_model(0.5)) as other:
        summary = replay("half", "--model", "openai:gpt-4o-mini", "--base-url", other.url, env=key)
    assert summary["stopped_sessions"] == 2 and summary["divergences"] == 2, summary
    assert {s["reason"].split(" (")[0] for s in summary["sessions"]} == {"no recorded effect for refund"}
    assert ran.read_text().split() == ["lookup_order", "refund"] * 2  # no tool ever ran again
