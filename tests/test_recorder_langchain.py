"""``sdbctl.recorders.langchain``: the real LangGraph and LangChain (``ChatOpenAI`` bound to two tools)
against a local chat-completions server, recorded by the callback handler; the runs replayed in step
mode through the CLI as a process, with the recorded answers (zero divergence) and under another
answer set (the divergences expected); a tool that raises is a failed effect; one session per thread
id, else per root run; no secret stored; a recording failure never reaches the agent."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import pytest

pytest.importorskip("langgraph")  # in the dev extra: a missing LangGraph fails CI's "no skips" check

from langchain_core.messages import AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import SecretStr
from typing_extensions import TypedDict

from sdbctl.recorders.langchain import AsyncSdbCallbackHandler, SdbCallbackHandler
from sdbctl.sdb.store import Store, connect, query_arrow
from tests.conftest import CLI
from tests.llm_server import Answer, LLMServer
from tests.test_readme import _run_block, _the_block

API_KEY = "sk-proj-LCTESTKEY0123456789abcdefghijklmnop"
SECRET = "password=hunter2-LCSECRET"
CELSIUS = {"paris": 14, "oslo": -3}


@tool
def get_weather(city: str) -> str:
    """The temperature of a city, in degrees Celsius."""
    if city not in CELSIUS:
        raise ValueError(f"no weather station in {city}")
    return json.dumps({"city": city, "celsius": CELSIUS[city], "note": SECRET})


@tool
def to_fahrenheit(celsius: float) -> str:
    """Degrees Celsius in Fahrenheit."""
    return json.dumps({"fahrenheit": round(celsius * 9 / 5 + 32, 1)})


def _reply(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-lc",
        "object": "chat.completion",
        "model": "gpt-x",
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def _call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def weather_model(*, convert: bool = True, offset: int = 0) -> Answer:
    """A model that looks the city up, converts to Fahrenheit (``convert``; else answers in Celsius at
    once; ``offset`` degrees off), then answers; a failed lookup is apologised for. It answers only
    when both tools are bound."""

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        assert sorted(t["function"]["name"] for t in request["tools"]) == ["get_weather", "to_fahrenheit"]
        messages = request["messages"]
        city = str(messages[0]["content"]).split()[-1].strip("?").lower()
        last = messages[-1]
        if last["role"] == "user":
            return _reply(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [_call("get_weather", {"city": city}, f"call-w-{city}")],
                }
            )
        if "error" in str(last["content"]).lower():
            return _reply({"role": "assistant", "content": f"I could not find the weather in {city}."})
        result = json.loads(last["content"])
        if "celsius" in result and convert:
            return _reply(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [_call("to_fahrenheit", {"celsius": result["celsius"] + offset}, f"call-f-{city}")],
                }
            )
        if "celsius" in result:
            return _reply({"role": "assistant", "content": f"It is {result['celsius']} C in {city}."})
        return _reply({"role": "assistant", "content": f"It is {result['fahrenheit']} F in {city}."})

    return answer


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def weather_graph(url: str) -> Any:
    """A LangGraph agent: a model node (``ChatOpenAI`` bound to two tools) and a tool node that turns a
    tool's exception into an error message for the model."""
    model = ChatOpenAI(model="gpt-x", base_url=url, api_key=SecretStr(API_KEY), max_retries=0).bind_tools(
        [get_weather, to_fahrenheit]
    )

    def agent(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([get_weather, to_fahrenheit], handle_tool_errors=True))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "agent")
    return graph.compile()


async def tool_loop(url: str, city: str, handler: Any) -> str:
    """A plain LangChain tool-calling loop, async: the model, its tool calls run, until it answers."""
    model = ChatOpenAI(model="gpt-x", base_url=url, api_key=SecretStr(API_KEY), max_retries=0).bind_tools(
        [get_weather, to_fahrenheit]
    )
    tools = {"get_weather": get_weather, "to_fahrenheit": to_fahrenheit}
    config: Any = {"callbacks": [handler], "metadata": {"thread_id": f"loop-{city.lower()}"}}
    messages: list[Any] = [HumanMessage(f"Weather in {city}?")]
    while True:
        answer = await model.ainvoke(messages, config=config)
        messages.append(answer)
        if not answer.tool_calls:
            return str(answer.content)
        for call in answer.tool_calls:
            try:
                messages.append(await tools[call["name"]].ainvoke(call, config=config))
            except ValueError as exc:
                messages.append(ToolMessage(f"Error: {exc}", tool_call_id=call["id"], status="error"))


def _events(store: Path, run_id: str) -> list[dict[str, Any]]:
    con = connect(Store.open(store), run_id)
    rows = query_arrow(
        con,
        "SELECT session_id, seq, step, parent, kind, actor, name, status, model, payload FROM events "
        "ORDER BY session_id, seq",
    ).to_pylist()
    for row in rows:
        row["payload"] = json.loads(row["payload"])
    return rows


def _json(out: Any) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _replays(sdbctl: CLI, run: str, other: LLMServer) -> set[tuple[str, str | None]]:
    """``run`` replayed in step mode by the CLI: with its recorded answers it diffs empty; under
    ``other``'s answers, the (session, step) of each divergence."""
    same = _json(sdbctl("replay", run, "--model", "recorded", "--run-id", f"{run}-same", "--json"))
    assert same["divergences"] == 0 and same["errors"] == 0 and same["steps"] > 0
    assert _json(sdbctl("diff", run, f"{run}-same", "--json"))["divergences"] == []
    again = sdbctl(
        "replay", run, "--model", "openai:gpt-x", "--base-url", other.url, "--run-id", f"{run}-other", "--json",
        env={"OPENAI_API_KEY": API_KEY},
    )  # fmt: skip
    assert _json(again)["errors"] == 0
    diff = _json(sdbctl("diff", run, f"{run}-other", "--json"))
    return {(d["session_id"], d["step"]) for d in diff["divergences"]}


def _no_secret(store: Path) -> None:
    for path in store.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"LCTESTKEY" not in data and b"hunter2" not in data, path


def test_a_langgraph_agent_is_recorded_and_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sdbctl: CLI
) -> None:
    monkeypatch.chdir(tmp_path)
    with LLMServer(weather_model()) as server:
        app = weather_graph(server.url)
        with SdbCallbackHandler(store=tmp_path / ".sdb", run_id="graph") as handler:
            for city in ("Paris", "Oslo", "Atlantis"):
                config: Any = {"callbacks": [handler], "configurable": {"thread_id": city.lower()}}
                final = app.invoke({"messages": [("user", f"Weather in {city}?")]}, config=config)
                assert "weather" in final["messages"][-1].content or " F in " in final["messages"][-1].content
        assert handler.run_id == "graph" and server.total == 3 + 3 + 2
    events = _events(tmp_path / ".sdb", "graph")
    assert sorted({e["session_id"] for e in events}) == ["atlantis", "oslo", "paris"]  # one per thread id
    paris = [e for e in events if e["session_id"] == "paris"]
    assert [(e["kind"], e["actor"], e["name"], e["step"]) for e in paris] == [
        ("input", "agent", "invoke", None),  # what the graph was invoked with
        ("llm", "agent", "chat", "call-001/agent/s1"),
        ("action", "agent", "get_weather", "call-001/agent/s1"),
        ("effect", "tools", "get_weather", "call-001/agent/s1"),
        ("llm", "agent", "chat", "call-002/agent/s3"),
        ("action", "agent", "to_fahrenheit", "call-002/agent/s3"),
        ("effect", "tools", "to_fahrenheit", "call-002/agent/s3"),
        ("llm", "agent", "chat", "call-003/agent/s5"),
        ("action", "agent", "message", "call-003/agent/s5"),
    ]
    assert paris[0]["payload"] == {"messages": [{"role": "user", "content": "Weather in Paris?"}]}
    first = paris[1]
    request = first["payload"]["request"]  # the OpenAI chat shape, with the bound tools as OpenAI tools JSON
    assert request["messages"] == [{"role": "user", "content": "Weather in Paris?"}] and request["model"] == "gpt-x"
    assert request["tools"] == server.bodies[0]["tools"] and first["model"] == "openai:gpt-x"
    assert first["payload"]["response"]["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "paris"}',
    }
    assert paris[2]["payload"] == {"args": {"city": "paris"}, "call_id": "call-w-paris"} and paris[2]["parent"] == 1
    effect = paris[3]["payload"]["result"]  # the tool's output as it returned it, linked to its call
    assert paris[3]["parent"] == 2 and effect["call_id"] == "call-w-paris"
    assert json.loads(effect["content"]) == {"city": "paris", "celsius": 14, "note": "password=[REDACTED:form_secret]"}
    failed = [e for e in events if e["session_id"] == "atlantis" and e["kind"] == "effect"]
    assert [(e["name"], e["status"]) for e in failed] == [("get_weather", "error")]  # the tool raised
    assert "no weather station in atlantis" in json.dumps(failed[0]["payload"])
    # its result is the text the tool node gave the model for the exception (what a session replay serves)
    given = [m["content"] for b in server.bodies for m in b["messages"] if m.get("tool_call_id") == "call-w-atlantis"]
    assert given and failed[0]["payload"]["result"]["content"] == given[0]
    _no_secret(tmp_path / ".sdb")

    # converting is skipped under the other answer set: the second call of each city that had weather
    with LLMServer(weather_model(convert=False)) as other:
        assert _replays(sdbctl, "graph", other) == {
            ("paris", "call-002/agent/s3"),
            ("oslo", "call-002/agent/s3"),
        }


def test_a_plain_langchain_tool_loop_is_recorded_async_and_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sdbctl: CLI
) -> None:
    monkeypatch.chdir(tmp_path)

    async def run(url: str) -> list[str]:
        async with asyncio.timeout(60):
            with AsyncSdbCallbackHandler(store=tmp_path / ".sdb", run_id="loop") as handler:
                return [await tool_loop(url, city, handler) for city in ("Oslo", "Atlantis")]

    with LLMServer(weather_model()) as server:
        answers = asyncio.run(run(server.url))
    assert answers == ["It is 26.6 F in oslo.", "I could not find the weather in atlantis."]
    events = _events(tmp_path / ".sdb", "loop")
    assert sorted({e["session_id"] for e in events}) == ["loop-atlantis", "loop-oslo"]
    oslo = [e for e in events if e["session_id"] == "loop-oslo"]
    assert [(e["kind"], e["name"], e["step"], e["parent"]) for e in oslo] == [
        ("llm", "chat", "call-001", None),
        ("action", "get_weather", "call-001", 0),
        ("effect", "get_weather", "call-001", 1),
        ("llm", "chat", "call-002", None),
        ("action", "to_fahrenheit", "call-002", 3),
        ("effect", "to_fahrenheit", "call-002", 4),
        ("llm", "chat", "call-003", None),
        ("action", "message", "call-003", 6),
    ]
    assert oslo[5]["payload"]["result"] == {"call_id": "call-f-oslo", "content": '{"fahrenheit": 26.6}'}
    failed = [e for e in events if e["kind"] == "effect" and e["session_id"] == "loop-atlantis"]
    assert [e["status"] for e in failed] == ["error"]  # raised out of the tool: the loop handled it
    _no_secret(tmp_path / ".sdb")
    with LLMServer(weather_model(convert=False)) as other:
        assert _replays(sdbctl, "loop", other) == {("loop-oslo", "call-002")}


def test_sessions_are_thread_ids_else_root_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with LLMServer(weather_model()) as server, SdbCallbackHandler(tmp_path / ".sdb", "roots") as handler:
        app = weather_graph(server.url)
        for thread in ("t-1", "t-2"):
            app.invoke(
                {"messages": [("user", "Weather in Paris?")]},
                config={"callbacks": [handler], "configurable": {"thread_id": thread}},
            )
        for _ in range(2):  # no thread id: each invocation is a session, named after its root run
            app.invoke({"messages": [("user", "Weather in Oslo?")]}, config={"callbacks": [handler]})
    events = _events(tmp_path / ".sdb", "roots")
    sessions = sorted({e["session_id"] for e in events})
    assert len(sessions) == 4 and sessions[-2:] == ["t-1", "t-2"]
    for sid in sessions:  # each session is one whole conversation: three calls, numbered from 1
        steps = [e["step"] for e in events if e["session_id"] == sid and e["kind"] == "llm"]
        assert [s.split("/")[0] for s in steps] == ["call-001", "call-002", "call-003"], sid


def test_a_recording_failure_is_logged_once_and_the_agent_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with LLMServer(weather_model()) as server, SdbCallbackHandler(tmp_path / ".sdb", "broken") as handler:

        def broken(*args: Any, **kwargs: Any) -> int:
            raise OSError("disk full")

        monkeypatch.setattr(handler._rec.conversations, "answer", broken)
        app = weather_graph(server.url)
        with caplog.at_level(logging.WARNING, logger="sdbctl.recorders.langchain"):
            final = app.invoke({"messages": [("user", "Weather in Paris?")]}, config={"callbacks": [handler]})
    assert final["messages"][-1].content == "It is 57.2 F in paris."  # the agent finished
    warnings = [r for r in caplog.records if r.name == "sdbctl.recorders.langchain"]
    assert len(warnings) == 1 and "disk full" in warnings[0].getMessage()


def test_the_manual_example_writes_the_session_it_describes(tmp_path: Path) -> None:
    run_id = _run_block(_the_block("SdbCallbackHandler(store="), tmp_path).strip()
    events = _events(tmp_path / ".sdb", run_id)
    assert [(e["session_id"], e["kind"], e["name"]) for e in events] == [
        ("paris", "input", "invoke"),
        ("paris", "llm", "chat"),
        ("paris", "action", "get_weather"),
        ("paris", "effect", "get_weather"),
        ("paris", "llm", "chat"),
        ("paris", "action", "message"),
    ]


AGENT = '''
import json
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from typing_extensions import TypedDict

from sdbctl.recorders.langchain import LangGraphAgent

RAN = []  # the tools that really ran


@tool
def get_weather(city: str) -> str:
    """The temperature of a city, in degrees Celsius."""
    RAN.append("get_weather")
    return json.dumps({"city": city, "celsius": {"paris": 14, "oslo": -3}[city]})


@tool
def to_fahrenheit(celsius: float) -> str:
    """Degrees Celsius in Fahrenheit."""
    RAN.append("to_fahrenheit")
    return json.dumps({"fahrenheit": round(celsius * 9 / 5 + 32, 1)})


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build(model, wrap_tool_call):
    bound = model.bind_tools([get_weather, to_fahrenheit])
    graph = StateGraph(State)
    graph.add_node("agent", lambda state: {"messages": [bound.invoke(state["messages"])]})
    graph.add_node("tools", ToolNode([get_weather, to_fahrenheit], wrap_tool_call=wrap_tool_call))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "agent")
    return graph.compile()


def make(url="http://127.0.0.1:9/v1"):
    model = ChatOpenAI(model="gpt-x", base_url=url, api_key="unused", temperature=0, max_retries=0)
    inputs = {city: {"messages": [("user", f"Weather in {city}?")]} for city in ("paris", "oslo")}
    return LangGraphAgent(build, model, inputs, name="weather-graph")


workload = make()  # what `--agent weather_agent.py:workload` runs again
'''


def test_session_mode_runs_the_graph_again_serving_recorded_tool_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sdbctl: CLI, sdbctl_process: CLI
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weather_agent.py").write_text(AGENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    weather_agent: Any = importlib.import_module("weather_agent")  # the agent's own program, recording

    with LLMServer(weather_model()) as server, SdbCallbackHandler(tmp_path / ".sdb", "graph") as handler:
        agent = weather_agent.make(server.url)
        for thread, data in agent.inputs.items():
            agent.graph().invoke(data, config={"callbacks": [handler], "configurable": {"thread_id": thread}})
    assert weather_agent.RAN == ["get_weather", "to_fahrenheit"] * 2
    ref = "weather_agent.py:workload"
    same = _json(sdbctl_process("replay", "graph", "--mode", "session", "--agent", ref, "--model", "recorded",
                                "--run-id", "again", "--json"))  # fmt: skip
    assert same["divergences"] == 0 and same["stopped_sessions"] == 0 and same["model_calls"] == 0, same
    assert sorted((s["session_id"], s["status"], s["steps"]) for s in same["sessions"]) == [
        ("oslo", "complete", 3),
        ("paris", "complete", 3),
    ]
    assert _json(sdbctl("diff", "graph", "again", "--json"))["divergences"] == []
    replayed = [e for e in _events(tmp_path / ".sdb", "again") if e["kind"] == "effect"]
    assert [(e["name"], e["actor"]) for e in replayed] == [("get_weather", "tools"), ("to_fahrenheit", "tools")] * 2
    recorded = [e for e in _events(tmp_path / ".sdb", "graph") if e["kind"] == "effect"]
    assert [e["payload"] for e in replayed] == [e["payload"] for e in recorded]  # served as recorded

    def session_replay(model: Answer, run_id: str) -> dict[str, Any]:
        with LLMServer(model) as other:
            summary: dict[str, Any] = _json(sdbctl_process(
                "replay", "graph", "--mode", "session", "--agent", ref, "--model", "openai:gpt-x",
                "--base-url", other.url, "--run-id", run_id, "--json", env={"OPENAI_API_KEY": API_KEY},
            ))  # fmt: skip
        return summary

    # another model answers in Celsius at once: both sessions diverge, no tool call lacks its result
    summary = session_replay(weather_model(convert=False), "celsius")
    assert summary["divergences"] == 2 and summary["stopped_sessions"] == 0, summary
    diverged = {d["session_id"] for d in _json(sdbctl("diff", "graph", "celsius", "--json"))["divergences"]}
    assert diverged == {"paris", "oslo"}
    # another converts a degree off: a tool call the record has no result for, where each session stops
    summary = session_replay(weather_model(offset=1), "off")
    assert summary["stopped_sessions"] == 2, summary
    assert {s["reason"].split(" (")[0] for s in summary["sessions"]} == {"no recorded effect for to_fahrenheit"}
