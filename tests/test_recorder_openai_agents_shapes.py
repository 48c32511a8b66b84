"""The OpenAI Agents SDK recorder on the shapes a probe of real programs found recorded wrong: one tool
called twice in one answer (the calls finish out of order), an agent with an ``output_type`` (its
response format is part of the request), and a tool that returns a dict (the model is given its
``str()``). The program runs as a process of its own against the local server, through Chat
Completions and the Responses API, then runs again in session mode with the recorded answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, cli_env
from tests.helpers import run_events
from tests.llm_server import LLMServer, chat_completion

pytest.importorskip("agents", reason="needs the OpenAI Agents SDK: pip install openai-agents")

AGENT = '''
import asyncio
import os

from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, function_tool
from openai import AsyncOpenAI
from pydantic import BaseModel

from sdbctl.recorders.openai_agents import OpenAIAgentsAgent


class Summary(BaseModel):
    city: str
    total: float


@function_tool
async def weather(city: str) -> str:
    """The weather of a city (Paris answers last)."""
    await asyncio.sleep(0.3 if city == "Paris" else 0.0)
    return f"weather in {city}: sunny"


@function_tool
def get_order(order_id: str) -> dict:
    """An order, as a dict: the SDK gives the model its str()."""
    return {"order_id": order_id, "total": 42.5, "paid": True}


def make(api="chat", url="http://127.0.0.1:9/v1"):
    client = AsyncOpenAI(api_key="unused", base_url=url, max_retries=0)
    kind = OpenAIChatCompletionsModel if api == "chat" else OpenAIResponsesModel
    agent = Agent(
        name="Trip",
        instructions="You plan trips.",
        tools=[weather, get_order],
        output_type=Summary,
        model=kind("gpt-4o-mini", client),
    )
    return OpenAIAgentsAgent(agent, {"trace_trip": "Paris or Oslo? And order A-1?"}, name="trip")


workload = make(os.environ.get("TRIP_API", "chat"))
'''

RECORD = """
import sys

from agents import RunConfig, Runner, set_trace_processors

from sdbctl.recorders.openai_agents import SdbTracingProcessor
import trip_agent

workload = trip_agent.make(sys.argv[1], sys.argv[2])
set_trace_processors([SdbTracingProcessor(store=".sdb", run_id="trip", agents=[workload.agent])])
for trace_id, text in workload.inputs.items():
    print(Runner.run_sync(workload.agent, text, run_config=RunConfig(trace_id=trace_id)).final_output)
"""


def trip_model(request: dict[str, Any]) -> dict[str, Any]:
    """Asks both cities' weather and the order in one answer, then answers with the summary."""
    message: dict[str, Any] = {"role": "assistant", "content": json.dumps({"city": "Oslo", "total": 42.5})}
    if request["messages"][-1]["role"] == "user":
        calls = [("weather", {"city": "Paris"}), ("weather", {"city": "Oslo"}), ("get_order", {"order_id": "A-1"})]
        tool_calls = [
            {"id": f"call_{k}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for k, (name, args) in enumerate(calls)
        ]
        message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return chat_completion(message, request.get("model"))


def given_to_model(body: dict[str, Any]) -> dict[str, str]:
    """The tool results a request gave the model, by call id (chat messages or Responses items)."""
    if "messages" in body:
        return {m["tool_call_id"]: m["content"] for m in body["messages"] if m.get("role") == "tool"}
    return {i["call_id"]: i["output"] for i in body["input"] if i.get("type") == "function_call_output"}


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_parallel_calls_dict_results_and_output_types_are_recorded_as_the_model_saw_them(
    sdbctl_process: CLI, tmp_path: Path, api: str
) -> None:
    (tmp_path / "trip_agent.py").write_text(AGENT)
    (tmp_path / "record.py").write_text(RECORD)
    with LLMServer(trip_model) as server:
        out = subprocess.run(
            [sys.executable, "record.py", api, server.url],
            cwd=tmp_path,
            env=cli_env({"PYTHONPATH": str(tmp_path)}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        sent = server.bodies
    assert len(sent) == 2
    rows = run_events(tmp_path / ".sdb", "trip", payloads=True)
    by_seq = {r["seq"]: r for r in rows}
    effects = [r for r in rows if r["kind"] == "effect"]
    # each result is its own call's, though Paris's call, made first, finished last
    got = {e["payload"]["result"]["call_id"]: e["payload"]["result"]["content"] for e in effects}
    for effect in effects:
        action = by_seq[effect["parent"]]
        assert effect["payload"]["result"]["call_id"] == action["payload"]["call_id"]
        if action["name"] == "weather":
            assert effect["payload"]["result"]["content"] == f"weather in {action['payload']['args']['city']}: sunny"
    # every result as the text the model was given (the dict: its str())
    assert got == given_to_model(sent[1]) and got["call_2"] == str({"order_id": "A-1", "total": 42.5, "paid": True})
    # the output type's response format is in each recorded request
    asked = [r["payload"]["request"] for r in rows if r["kind"] == "llm"]
    if api == "chat":
        assert [a["response_format"] for a in asked] == [b["response_format"] for b in sent]
    else:
        fmt = sent[0]["text"]["format"]
        assert all(a["response_format"] == {"type": "json_schema", "json_schema": {
            "name": fmt["name"], "schema": fmt["schema"], "strict": fmt["strict"]}} for a in asked)  # fmt: skip
    assert asked[0]["response_format"]["json_schema"]["schema"]["required"] == ["city", "total"]

    # run again with the recorded answers: every tool call served its own result, nothing diverges
    replay = sdbctl_process(
        "replay", "trip", "--mode", "session", "--agent", "trip_agent.py:workload", "--model", "recorded",
        "--run-id", "again", "--json", env={"TRIP_API": api},
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    summary = json.loads(replay.stdout)
    assert summary["divergences"] == 0 and summary["stopped_sessions"] == 0, summary
