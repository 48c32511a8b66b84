"""``sdbctl import otel`` on the spans the agent frameworks emit themselves: a real PydanticAI agent
(instrumentation versions 2 and 3) against the local OpenAI-compatible server, and a real Google ADK
agent (its telemetry schema 1, whose content is in the ``gcp.vertex.agent.*`` attributes, and schema 2
with content on the span) against a local server speaking the Gemini API to ADK's own ``Gemini``
model class. Each agent has two tools; each run asks about two cities (two traces, two sessions).

The spans are made in a process of their own (the OpenTelemetry tracer provider is global and ADK
reads its settings from the environment), exported by the OTLP/JSON file exporter:

    python -m tests.test_import_otel_frameworks pydantic-ai 2|3 OUT.jsonl
    python -m tests.test_import_otel_frameworks adk 1|2 OUT.jsonl
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sdbctl.sdb.store import Store, connect, query_arrow
from tests.conftest import CLI, assert_one_line_error
from tests.helpers import with_requests_whole
from tests.llm_server import LLMServer

REPO = Path(__file__).resolve().parent.parent
CITIES = ("Paris", "Oslo")
INSTRUCTIONS = "Answer in one sentence."


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """A SIMULATED model (OpenAI chat shape): the weather, then the local time, then one sentence."""
    messages = request.get("messages") or []
    results = [m for m in messages if m.get("role") == "tool"]
    asked = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
    city = next((c for c in CITIES if c in asked), "Nowhere")
    if len(results) < 2:
        name = ("get_weather", "local_time")[len(results)]
        call = {
            "id": f"call_{name}_{city.lower()}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps({"city": city})},
        }
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
    else:
        message = {"role": "assistant", "content": f"It is sunny in {city} at noon."}
    return {
        "id": f"chatcmpl-{len(messages)}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": str(request.get("model", "sim")),
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if len(results) < 2 else "stop"}],
        "usage": {"prompt_tokens": 10 * len(messages), "completion_tokens": 7, "total_tokens": 10 * len(messages) + 7},
    }


def get_weather(city: str) -> dict[str, str]:
    """The weather in a city."""
    return {"city": city, "sky": "sunny"}


def local_time(city: str) -> str:
    """The local time in a city."""
    return "12:00"


class GeminiServer:
    """A local server speaking the Gemini API's ``generateContent`` to ADK's ``Gemini`` model class:
    each request read as OpenAI chat messages and answered by :func:`answer`; the messages kept, so a
    test can compare them with what the import rebuilt."""

    def __init__(self) -> None:
        self.asked: list[list[dict[str, Any]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                data = json.dumps(server.generate(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        for content in body.get("contents", []):
            for part in content.get("parts", []):
                if "text" in part:
                    messages.append(
                        {"role": "assistant" if content["role"] == "model" else "user", "content": part["text"]}
                    )
                elif "functionCall" in part:
                    call = part["functionCall"]
                    fn = {"name": call["name"], "arguments": json.dumps(call.get("args", {}))}
                    messages.append({"role": "assistant", "tool_calls": [{"id": call["id"], "function": fn}]})
                elif "functionResponse" in part:
                    response = part["functionResponse"]
                    messages.append({"role": "tool", "tool_call_id": response["id"], "content": response["response"]})
        self.asked.append(messages)
        message = answer({"model": "gemini", "messages": messages})["choices"][0]["message"]
        parts = [{"text": message["content"]}] if message.get("content") else []
        for call in message.get("tool_calls") or []:
            fn = call["function"]
            parts.append({"functionCall": {"id": call["id"], "name": fn["name"], "args": json.loads(fn["arguments"])}})
        return {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 7, "totalTokenCount": 17},
            "modelVersion": "gemini-2.0-flash",
        }

    def __enter__(self) -> GeminiServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _roles(messages: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """A conversation's shape: each message's role and the tool call it answers."""
    return [(str(m["role"]), m.get("tool_call_id")) for m in messages if m["role"] != "system"]


def make_pydantic_ai(version: int, out: str) -> list[list[tuple[str, str | None]]]:
    """A real PydanticAI agent with two tools, instrumented with ``version``, asked about each city."""
    import warnings

    from opentelemetry.exporter.otlp.json.file import FileSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from pydantic_ai import Agent
    from pydantic_ai.capabilities.instrumentation import Instrumentation
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(out)))
    with warnings.catch_warnings():  # versions 2 and 3 are deprecated, and still what many users run
        warnings.simplefilter("ignore")
        settings = InstrumentationSettings(tracer_provider=provider, version=version)  # type: ignore[arg-type]
    with LLMServer(answer) as server:
        model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=server.url, api_key="sk-test"))
        agent = Agent(model, name="weather-agent", instructions=INSTRUCTIONS, capabilities=[Instrumentation(settings)])
        agent.tool_plain(get_weather)
        agent.tool_plain(local_time)
        for city in CITIES:
            agent.run_sync(f"What is the weather in {city}, and the time there?")
        asked = [_roles(body["messages"]) for body in server.bodies]
    provider.shutdown()
    return asked


def make_adk(schema: int, out: str) -> list[list[tuple[str, str | None]]]:
    """A real Google ADK agent with two tools, traced by ADK itself under telemetry ``schema``."""
    os.environ["ADK_TELEMETRY_SCHEMA_VERSION_OPT_IN"] = str(schema)
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_ONLY"  # schema 2's content
    os.environ["GOOGLE_API_KEY"] = "not-a-real-key"
    os.environ["GOOGLE_GENAI_USE_VERTEXAI"] = "false"
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.json.file import FileSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(out)))
    trace.set_tracer_provider(provider)  # ADK traces through the global provider
    from google.adk.agents import LlmAgent
    from google.adk.models.google_llm import Gemini
    from google.adk.runners import InMemoryRunner
    from google.genai import types

    async def run(server: GeminiServer) -> None:
        agent = LlmAgent(
            name="weather_agent",
            model=Gemini(model="gemini-2.0-flash", base_url=server.url),
            instruction=INSTRUCTIONS,
            tools=[get_weather, local_time],
        )
        runner = InMemoryRunner(agent=agent, app_name="weather")
        for city in CITIES:
            session = await runner.session_service.create_session(app_name="weather", user_id="u")
            question = types.Content(role="user", parts=[types.Part(text=f"What is the weather in {city}?")])
            async for _ in runner.run_async(user_id="u", session_id=session.id, new_message=question):
                pass

    with GeminiServer() as server:
        asyncio.run(run(server))
    provider.shutdown()
    return [_roles(messages) for messages in server.asked]


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Any]]]:
    """Each framework's trace file and the conversations its model was asked, made once (a process each)."""
    tmp = tmp_path_factory.mktemp("frameworks")
    made = {}
    for framework, variant in (("pydantic-ai", 2), ("pydantic-ai", 3), ("adk", 1), ("adk", 2)):
        out = tmp / f"{framework}-{variant}.jsonl"
        done = subprocess.run(
            [sys.executable, "-m", "tests.test_import_otel_frameworks", framework, str(variant), str(out)],
            cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        made[f"{framework}-{variant}"] = (out, json.loads(done.stdout.splitlines()[-1]))
    return made


def _rows(tmp_path: Path, run_id: str) -> list[dict[str, Any]]:
    con = connect(Store.open(tmp_path / ".sdb"), run_id)
    rows = query_arrow(
        con, "SELECT session_id, seq, parent, kind, actor, name, step, payload FROM events ORDER BY session_id, seq"
    ).to_pylist()
    whole = {(r["session_id"], r["seq"]): body for r, body, _ in with_requests_whole(rows)}
    for row in rows:
        row["payload"] = whole.get((row["session_id"], row["seq"])) or json.loads(row["payload"])
    return rows


@pytest.mark.parametrize("name", ["pydantic-ai-2", "pydantic-ai-3", "adk-1", "adk-2"])
def test_framework_spans_import_with_tools_arguments_and_results_and_replay(
    sdbctl: CLI, sdbctl_process: CLI, tmp_path: Path, traces: dict[str, tuple[Path, list[Any]]], name: str
) -> None:
    path, asked = traces[name]
    out = sdbctl_process("import", "otel", str(path), "--run-id", "framework", "--json")
    assert out.returncode == 0, out.stderr
    _check_import(sdbctl, tmp_path, out.stdout, asked, pydantic=name.startswith("pydantic"))


@pytest.mark.parametrize("name", ["pydantic-ai-2.78-v2.jsonl", "google-adk-2.13-schema1.jsonl"])
def test_golden_traces_of_the_deprecated_formats_import_and_replay(sdbctl: CLI, tmp_path: Path, name: str) -> None:
    """PydanticAI's version 2 and ADK's schema 1, kept as files (made by this module's generator) for
    when the frameworks stop writing them."""
    out = sdbctl("import", "otel", str(REPO / "fixtures" / "traces" / name), "--run-id", "framework", "--json")
    assert out.returncode == 0, out.stderr
    _check_import(sdbctl, tmp_path, out.stdout, None, pydantic=name.startswith("pydantic"))


def _check_import(sdbctl: CLI, tmp_path: Path, summary: str, asked: list[Any] | None, *, pydantic: bool) -> None:
    """The run ``framework`` holds each call whole, each tool call and result, and replays."""
    assert json.loads(summary)["sessions"] == len(CITIES)  # one trace per question
    rows = _rows(tmp_path, "framework")
    by_seq = {(r["session_id"], r["seq"]): r for r in rows}
    llm = [r for r in rows if r["kind"] == "llm"]
    assert len(llm) == 3 * len(CITIES)  # one llm event per model call, none twice
    if asked is not None:  # each request's conversation as the model was asked it (the calls answered, in order)
        assert sorted(_roles(r["payload"]["request"]["messages"]) for r in llm) == sorted(
            [tuple(m) for m in conversation] for conversation in asked
        )
    for row in llm:
        request = row["payload"]["request"]
        assert row["payload"].get("content") != "missing"
        assert INSTRUCTIONS in request["messages"][0]["content"] and request["messages"][0]["role"] == "system"
        tools = {t["function"]["name"]: t["function"] for t in request["tools"]}
        assert sorted(tools) == ["get_weather", "local_time"]
        assert all("city" in json.dumps(t.get("parameters")) for t in tools.values())
        assert tools["get_weather"]["description"] == "The weather in a city."
    actions = [r for r in rows if r["kind"] == "action"]
    assert sorted((r["name"], r["payload"]["args"].get("city")) for r in actions if r["name"] != "message") == sorted(
        (tool, city) for city in CITIES for tool in ("get_weather", "local_time")
    )
    assert sorted(r["payload"]["args"]["content"] for r in actions if r["name"] == "message") == sorted(
        f"It is sunny in {city} at noon." for city in CITIES
    )
    assert {r["actor"] for r in rows} == {"weather-agent" if pydantic else "weather_agent"}
    effects = [r for r in rows if r["kind"] == "effect"]
    assert len(effects) == 2 * len(CITIES)
    for effect in effects:  # the tool's own result, linked to the call that asked for it
        call = by_seq[(effect["session_id"], effect["parent"])]
        result = effect["payload"]["result"]
        assert call["kind"] == "action" and call["payload"]["call_id"] == result["call_id"]
        assert not result.get("content_missing"), result
        city = call["payload"]["args"]["city"]
        expected = get_weather(city) if call["name"] == "get_weather" else local_time(city)
        assert result["content"] in (expected, {"result": expected})  # ADK wraps a result that is no object

    same = json.loads(sdbctl("replay", "framework", "--model", "recorded", "--json").stdout)
    assert same["divergences"] == 0 and same["errors"] == 0
    assert same["steps"] == 3 * len(CITIES) and same["steps_without_content"] == 0
    if pydantic:  # the requests are whole: the same model asked again answers the same
        with LLMServer(answer) as model:
            again = sdbctl(
                "replay", "framework", "--model", "openai:gpt-4o-mini", "--base-url", model.url, "--json",
                env={"OPENAI_API_KEY": "sk-test"},
            )  # fmt: skip
            assert again.returncode == 0, again.stderr
            assert json.loads(again.stdout)["divergences"] == 0 and model.total == 3 * len(CITIES)


def _otlp(spans: list[dict[str, Any]]) -> str:
    return json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]})


def _span(span_id: str, name: str, attrs: dict[str, str], parent: str | None = None) -> dict[str, Any]:
    return {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": span_id,
        **({"parentSpanId": parent} if parent else {}),
        "name": name,
        "startTimeUnixNano": str(1_700_000_000_000_000_000 + int(span_id, 16)),
        "endTimeUnixNano": str(1_700_000_001_000_000_000 - int(span_id, 16)),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
    }


def test_adk_content_that_cannot_be_read_imports_marked_missing(sdbctl: CLI, tmp_path: Path) -> None:
    """ADK writes ``<not serializable>`` (or ``{}``, content capture off) where it could not write the
    request: the call still imports, marked missing; so does a tool's ``{}`` result; a tool's unreadable
    arguments are kept as text."""
    spans = [
        _span(
            "00000000000000a1", "invoke_agent a", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}
        ),
        _span(
            "00000000000000a2",
            "call_llm",
            {
                "gen_ai.system": "gcp.vertex.agent",
                "gen_ai.request.model": "gemini-2.0-flash",
                "gcp.vertex.agent.llm_request": "{}",
                "gcp.vertex.agent.llm_response": "<not serializable>",
            },
            parent="00000000000000a1",
        ),
        _span(
            "00000000000000a3",
            "execute_tool t",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "t",
                "gen_ai.tool.call.id": "c1",
                "gcp.vertex.agent.tool_call_args": "{not json",
                "gcp.vertex.agent.tool_response": '{"result": "ok"}',
            },
            parent="00000000000000a1",
        ),
        _span(
            "00000000000000a4",
            "execute_tool u",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "u",
                "gen_ai.tool.call.id": "c2",
                "gcp.vertex.agent.tool_call_args": "{}",  # content capture off
                "gcp.vertex.agent.tool_response": "{}",
            },
            parent="00000000000000a1",
        ),
    ]
    (tmp_path / "adk.jsonl").write_text(_otlp(spans) + "\n")
    out = sdbctl("import", "otel", "adk.jsonl", "--run-id", "adk", "--json")
    assert out.returncode == 0, out.stderr
    rows = _rows(tmp_path, "adk")
    llm = [r for r in rows if r["kind"] == "llm"]
    assert len(llm) == 1 and llm[0]["payload"]["content"] == "missing"
    effect, off = (r for r in rows if r["kind"] == "effect")
    assert effect["payload"]["result"]["content"] == {"result": "ok"}
    assert off["payload"]["result"]["content_missing"] and off["payload"]["result"]["content"] is None
    action = next(r for r in rows if r["kind"] == "action" and r["name"] == "t")  # known from its tool span only
    assert action["payload"]["args"] == {"(arguments)": "{not json"} and effect["parent"] == action["seq"]
    damaged = {"contents": 5, "config": {"tools": [3, {"function_declarations": "x"}], "system_instruction": 7}}
    spans[1]["attributes"][2]["value"]["stringValue"] = json.dumps(damaged)  # the llm_request
    (tmp_path / "damaged.jsonl").write_text(_otlp(spans) + "\n")
    assert sdbctl("import", "otel", "damaged.jsonl", "--run-id", "damaged").returncode == 0
    (tmp_path / "bad.jsonl").write_text(_otlp(spans)[:-9] + "\n")
    assert_one_line_error(sdbctl("import", "otel", "bad.jsonl"), "bad.jsonl:1:", "not valid JSON")


def test_adk_request_in_camel_case_imports_whole(sdbctl: CLI, tmp_path: Path) -> None:
    """An ``LlmRequest`` dumped by alias (camelCase, a system instruction as a ``Content``) reads as the
    snake_case dump does: messages, system, tools, settings and the answer's call."""
    request = {
        "model": "gemini-2.0-flash",
        "config": {
            "systemInstruction": {"role": "user", "parts": [{"text": "Be brief."}]},
            "tools": [{"functionDeclarations": [{"name": "refund", "parametersJsonSchema": {"type": "object"}}]}],
            "maxOutputTokens": 50,
            "temperature": 0.2,
        },
        "contents": [{"role": "user", "parts": [{"text": "refund order 42"}, {"text": "why", "thought": True}]}],
    }
    response = {
        "content": {
            "role": "model",
            "parts": [{"functionCall": {"id": "c1", "name": "refund", "args": {"order": 42}}}],
        },
        "finishReason": "STOP",
    }
    attrs = {
        "gen_ai.system": "gcp.vertex.agent",
        "gen_ai.request.model": "gemini-2.0-flash",
        "gcp.vertex.agent.llm_request": json.dumps(request),
        "gcp.vertex.agent.llm_response": json.dumps(response),
    }
    (tmp_path / "camel.jsonl").write_text(_otlp([_span("00000000000000d1", "call_llm", attrs)]) + "\n")
    assert sdbctl("import", "otel", "camel.jsonl", "--run-id", "camel").returncode == 0
    llm, action = _rows(tmp_path, "camel")
    sent = llm["payload"]["request"]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "refund order 42"},  # the model's thought is not part of it
    ]
    assert sent["tools"] == [{"type": "function", "function": {"name": "refund", "parameters": {"type": "object"}}}]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.2
    assert (action["name"], action["payload"]["args"], action["payload"]["call_id"]) == ("refund", {"order": 42}, "c1")
    assert llm["payload"]["response"]["choices"][0]["finish_reason"] == "stop"


def test_a_model_call_traced_twice_imports_once_with_its_content(sdbctl: CLI, tmp_path: Path) -> None:
    """A framework's inference span around an instrumented client's is one call: the span holding the
    content is the one kept, whichever of the two it is."""
    asked = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}])
    said = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "hello"}]}])
    bare = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    full = {**bare, "gen_ai.input.messages": asked, "gen_ai.output.messages": said}
    for label, outer, inner in (("inner", bare, full), ("outer", full, bare), ("both", full, full)):
        spans = [
            _span("00000000000000b1", "chat m", outer),
            _span("00000000000000b2", "chat m", inner, "00000000000000b1"),
        ]
        (tmp_path / f"{label}.jsonl").write_text(_otlp(spans) + "\n")
        assert sdbctl("import", "otel", f"{label}.jsonl", "--run-id", label).returncode == 0
        llm = [r for r in _rows(tmp_path, label) if r["kind"] == "llm"]
        assert len(llm) == 1 and llm[0]["payload"]["response"]["choices"][0]["message"]["content"] == "hello"


if __name__ == "__main__":
    FRAMEWORK, VARIANT, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    made = make_pydantic_ai(VARIANT, OUT) if FRAMEWORK == "pydantic-ai" else make_adk(VARIANT, OUT)
    print(json.dumps(made))
