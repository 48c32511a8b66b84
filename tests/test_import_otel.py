"""``sdbctl import otel``: real GenAI traces (openai-v2 instrumentation, OTLP/JSON file exporter),
with and without content; the older conventions; OTLP/JSON variants; malformed input."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdbctl.fixtures.agents.weather_model import answer as weather_answer
from sdbctl.sdb.store import Store, connect, query_arrow
from tests.conftest import CLI, assert_one_line_error
from tests.helpers import with_requests_whole
from tests.llm_server import LLMServer

REPO = Path(__file__).resolve().parent.parent


def _traces(tmp_path: Path, content: str) -> Path:
    out = tmp_path / f"traces-{content}.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "tests.otel_traces", str(out), content],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The exported trace files' text, content captured and not (generated once: a subprocess each)."""
    tmp = tmp_path_factory.mktemp("otel")
    return {content: _traces(tmp, content).read_text() for content in ("on", "off")}


def _rows(tmp_path: Path, run_id: str) -> list[dict[str, Any]]:
    con = connect(Store.open(tmp_path / ".sdb"), run_id)
    rows = query_arrow(
        con, "SELECT session_id, seq, parent, kind, actor, name, step, payload FROM events ORDER BY session_id, seq"
    ).to_pylist()
    whole = {(r["session_id"], r["seq"]): body for r, body, _ in with_requests_whole(rows)}
    for row in rows:
        row["payload"] = whole.get((row["session_id"], row["seq"])) or json.loads(row["payload"])
    return rows


def test_real_traces_with_content_import_and_replay_with_zero_divergence(
    sdbctl: CLI, tmp_path: Path, traces: dict[str, str]
) -> None:
    (tmp_path / "on.jsonl").write_text(traces["on"])
    out = sdbctl("import", "otel", "on.jsonl", "--run-id", "traced", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"run_id": "traced", "events": 12, "sessions": 2, "skipped": 0}
    rows = _rows(tmp_path, "traced")
    assert {r["actor"] for r in rows} == {"weather-agent"}  # named by the invoke_agent span
    by_seq = {(r["session_id"], r["seq"]): r for r in rows}
    actions = [r for r in rows if r["kind"] == "action"]
    assert sorted(r["name"] for r in actions) == ["get_weather", "get_weather", "message", "message"]
    assert sorted(r["payload"]["args"].get("city", "") for r in actions) == ["", "", "Oslo", "Paris"]
    for action in actions:  # each action hangs off the llm call that proposed it, in the same step
        llm = by_seq[(action["session_id"], action["parent"])]
        assert llm["kind"] == "llm" and llm["step"] == action["step"]
    for effect in (r for r in rows if r["kind"] == "effect"):  # the execute_tool span, linked to its call
        call = by_seq[(effect["session_id"], effect["parent"])]
        assert call["payload"]["call_id"] == effect["payload"]["result"]["call_id"]
        assert effect["payload"]["result"]["content"]["city"] == call["payload"]["args"]["city"]
    assert "[REDACTED:email]" in json.dumps(rows)  # imported payloads are redacted too
    assert "jane.doe@example.com" not in json.dumps(rows)

    same = json.loads(sdbctl("replay", "traced", "--model", "recorded", "--json").stdout)
    assert same["divergences"] == 0 and same["steps"] == 4 and same["errors"] == 0
    with LLMServer(weather_answer) as model:  # the same (simulated) model asked again
        again = sdbctl(
            "replay", "traced", "--model", "openai:gpt-4o-mini", "--base-url", model.url, "--run-id", "again", "--json",
            env={"OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["divergences"] == 0 and model.total == 4
    diff = json.loads(sdbctl("diff", "traced", "again", "--json").stdout)
    layers = diff["summary"]["by_layer"]
    assert diff["divergences"] == [] and diff["summary"]["steps_compared"] == 2  # the headline counts writes
    assert layers["write"]["steps_compared"] == 2 and layers["speech"]["steps_compared"] == 2


def test_real_traces_without_content_import_marked_missing(sdbctl: CLI, tmp_path: Path, traces: dict[str, str]) -> None:
    (tmp_path / "off.jsonl").write_text(traces["off"])
    out = sdbctl("import", "otel", "off.jsonl", "--run-id", "bare", "--json")
    assert out.returncode == 0, out.stderr
    rows = _rows(tmp_path, "bare")
    llm = [r for r in rows if r["kind"] == "llm"]
    assert len(llm) == 4 and all(r["payload"]["content"] == "missing" for r in llm)
    assert all(r["payload"]["request"] == {"model": "gpt-4o-mini"} for r in llm)
    assert [r for r in rows if r["kind"] == "action"] == []  # nothing to guess actions from
    assert all(r["payload"]["result"]["content_missing"] for r in rows if r["kind"] == "effect")
    replayed = json.loads(sdbctl("replay", "bare", "--model", "recorded", "--json").stdout)
    assert replayed["divergences"] == 0 and replayed["steps"] == 0 and replayed["steps_without_content"] == 4


def _protobuf_style(doc: Any) -> Any:
    """protobuf's JSON mapping: snake_case names and base64 ids (what some exporters write)."""
    if isinstance(doc, list):
        return [_protobuf_style(v) for v in doc]
    if not isinstance(doc, dict):
        return doc
    out = {}
    for key, value in doc.items():
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
        if key in ("traceId", "spanId", "parentSpanId") and value:
            value = base64.b64encode(bytes.fromhex(value)).decode()
        out[snake] = _protobuf_style(value)
    return out


def test_single_object_files_and_protobuf_spelling_import_the_same(
    sdbctl: CLI, tmp_path: Path, traces: dict[str, str]
) -> None:
    requests = [json.loads(line) for line in traces["on"].splitlines()]
    merged = {"resourceSpans": [rs for r in requests for rs in r["resourceSpans"]]}
    (tmp_path / "one.json").write_text(json.dumps(merged, indent=2))
    (tmp_path / "proto.json").write_text(json.dumps(_protobuf_style(merged)))
    (tmp_path / "lines.jsonl").write_text(traces["on"])
    digests = {}
    for name in ("lines.jsonl", "one.json", "proto.json"):
        out = sdbctl("import", "otel", name, "--run-id", name.replace(".", "-"))
        assert out.returncode == 0, out.stderr
        digests[name] = sorted(
            (r["session_id"], r["seq"], r["kind"], r["name"]) for r in _rows(tmp_path, name.replace(".", "-"))
        )
    assert digests["lines.jsonl"] == digests["one.json"] == digests["proto.json"]
    assert len(digests["lines.jsonl"]) == 12


def _otlp(spans: list[dict[str, Any]]) -> str:
    return json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]})


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _span(
    span_id: str, attrs: dict[str, Any], events: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": span_id,
        "name": "chat gpt-4",
        "kind": 3,
        "startTimeUnixNano": str(1_700_000_000_000_000_000 + int(span_id, 16)),
        "endTimeUnixNano": str(1_700_000_000_500_000_000 + int(span_id, 16)),
        "attributes": [_attr(k, v) for k, v in attrs.items()],
        "events": events or [],
        **extra,
    }


def test_older_conventions_import(sdbctl: CLI, tmp_path: Path) -> None:
    indexed = _span(
        "00000000000000a1",
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "refund order 42",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "c1",
            "gen_ai.completion.0.tool_calls.0.name": "refund",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"order": 42}',
            "gen_ai.usage.prompt_tokens": 9,
        },
    )
    evented = _span(
        "00000000000000a2",
        {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4"},
        events=[
            {"name": "gen_ai.user.message", "attributes": [_attr("content", "and notify me")]},
            {
                "name": "gen_ai.choice",
                "attributes": [
                    _attr("finish_reason", "tool_calls"),
                    _attr(
                        "message",
                        json.dumps({"tool_calls": [{"id": "c2", "function": {"name": "notify", "arguments": "{}"}}]}),
                    ),
                ],
            },
        ],
    )
    (tmp_path / "old.jsonl").write_text(_otlp([indexed, evented]) + "\n")
    out = sdbctl("import", "otel", "old.jsonl", "--run-id", "old", "--json")
    assert out.returncode == 0, out.stderr
    rows = _rows(tmp_path, "old")
    assert [(r["kind"], r["name"]) for r in rows] == [
        ("llm", "chat"),
        ("action", "refund"),
        ("llm", "chat"),
        ("action", "notify"),
    ]
    assert (
        rows[1]["payload"]["args"] == {"order": 42}
        and rows[0]["payload"]["request"]["messages"][0]["content"] == "refund order 42"
    )
    same = json.loads(sdbctl("replay", "old", "--model", "recorded", "--json").stdout)
    assert same["divergences"] == 0 and same["steps"] == 2


def test_malformed_traces_name_the_line_and_write_no_run(sdbctl: CLI, tmp_path: Path) -> None:
    good = _otlp([_span("00000000000000b1", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})])
    no_trace = json.loads(good)
    del no_trace["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]
    bad_attrs = json.loads(good)
    bad_attrs["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = "gen_ai.operation.name=chat"
    bad_time = json.loads(good)
    bad_time["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"] = "yesterday"
    bad_bool = json.loads(good)  # read as true before: bool("false")
    bad_bool["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
        {"key": "gen_ai.request.stream", "value": {"boolValue": "false"}}
    )
    cases = {
        "truncated": (good[:-7], "not valid JSON"),
        "no-trace": (json.dumps(no_trace), "no traceId"),
        "wrong-type": (json.dumps(bad_attrs), "attributes must be a list"),
        "bad-time": (json.dumps(bad_time), "startTimeUnixNano 'yesterday'"),
        "bad-bool": (json.dumps(bad_bool), "boolValue 'false' is not true or false"),
        "not-otlp": (json.dumps({"spans": []}), "no resourceSpans"),
    }
    for label, (bad, reason) in cases.items():
        (tmp_path / f"{label}.jsonl").write_text(good + "\n" + bad + "\n")
        assert_one_line_error(sdbctl("import", "otel", f"{label}.jsonl"), f"{label}.jsonl:2:", reason)
    (tmp_path / "binary.jsonl").write_bytes(good.encode() + b"\n\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    assert_one_line_error(sdbctl("import", "otel", "binary.jsonl"), "binary.jsonl:2:", "binary")
    (tmp_path / "empty.jsonl").write_text(_otlp([]) + "\n")
    assert_one_line_error(sdbctl("import", "otel", "empty.jsonl"), "no GenAI spans")
    # several files are all or nothing too: a good one followed by a bad one writes nothing
    (tmp_path / "good.jsonl").write_text(good + "\n")
    assert_one_line_error(sdbctl("import", "otel", "good.jsonl", "truncated.jsonl"), "truncated.jsonl:2:")
    assert not (tmp_path / ".sdb" / "runs").exists() or not any((tmp_path / ".sdb" / "runs").iterdir())
    skipped = sdbctl("import", "otel", "no-trace.jsonl", "--skip-bad", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout)["skipped"] == 1 and json.loads(skipped.stdout)["events"] == 1


@pytest.mark.parametrize(
    ("name", "steps"), [("openllmetry-0.62.4-content.jsonl", 4), ("openllmetry-0.62.4-no-content.jsonl", 0)]
)
def test_openllmetry_golden_traces_import_and_replay(sdbctl: CLI, tmp_path: Path, name: str, steps: int) -> None:
    out = sdbctl("import", "otel", str(REPO / "fixtures" / "traces" / name), "--run-id", "ollm", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sessions"] == 2  # one trace per conversation
    rows = _rows(tmp_path, "ollm")
    if steps:
        tools = [r for r in rows if r["kind"] == "action" and r["name"] == "get_weather"]
        assert sorted(r["payload"]["args"]["city"] for r in tools) == ["Oslo", "Paris"]
        llm = next(r for r in rows if r["kind"] == "llm")
        assert llm["payload"]["request"]["tools"][0]["function"]["name"] == "get_weather"  # gen_ai.tool.definitions
    same = json.loads(sdbctl("replay", "ollm", "--model", "recorded", "--json").stdout)
    assert same["divergences"] == 0 and same["steps"] == steps and same["steps_without_content"] == 4 - steps


def test_embedding_spans_are_not_steps_and_finish_reasons_are_kept(sdbctl: CLI, tmp_path: Path) -> None:
    embedding = _span(
        "00000000000000c1",
        {"llm.request.type": "embedding", "gen_ai.system": "openai", "gen_ai.prompt.0.content": "some text"},
    )
    output = json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": "done"}], "finish_reason": "stop"}]
    )
    chat = _span(
        "00000000000000c2",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m",
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
            "gen_ai.output.messages": output,
        },
    )
    short = _span(
        "00000000000000c3",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m",
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "again"}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}]),
            "gen_ai.response.finish_reasons": "length",  # a plain string, not a list
        },
    )
    (tmp_path / "mixed.jsonl").write_text(_otlp([embedding, chat, short]) + "\n")
    assert sdbctl("import", "otel", "mixed.jsonl", "--run-id", "mixed").returncode == 0
    llm = [r for r in _rows(tmp_path, "mixed") if r["kind"] == "llm"]
    assert [r["step"] for r in llm] == ["call-001", "call-002"]  # the embedding is no step
    reasons = [r["payload"]["response"]["choices"][0]["finish_reason"] for r in llm]
    assert reasons == ["stop", "length"]


@pytest.mark.parametrize(
    ("where", "value", "reason"),
    [
        ("gen_ai.response.finish_reasons", 5, "finish_reasons must be a list of strings, not 5"),
        ("gen_ai.output.messages", '[{"role": "assistant", "tool_calls": 5}]', "output message 0: tool_calls must"),
        ("gen_ai.output.messages", '[{"role": "assistant", "tool_calls": ["a", 1]}]', "output message 0: tool_calls"),
        ("gen_ai.input.messages", '[{"role": "user", "content": "hi", "tool_calls": 5}]', "input message 0: tool"),
    ],
)
def test_a_wrong_type_inside_a_spans_messages_is_one_line_naming_the_span(
    sdbctl: CLI, tmp_path: Path, where: str, value: Any, reason: str
) -> None:
    """Types inside the message JSON, not only the OTLP envelope's: a traceback (exit 1) before."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "gen_ai.input.messages": '[{"role": "user", "content": "hi"}]',
        "gen_ai.output.messages": '[{"role": "assistant", "content": "hello"}]',
        where: value,
    }
    (tmp_path / "typed.jsonl").write_text(_otlp([_span("00000000000000c1", attrs)]) + "\n")
    assert_one_line_error(sdbctl("import", "otel", "typed.jsonl"), "typed.jsonl:1: span 'chat gpt-4'", reason)
    assert not (tmp_path / ".sdb" / "runs").exists() or not any((tmp_path / ".sdb" / "runs").iterdir())


def test_azure_sdks_event_content_attribute_is_read(sdbctl: CLI, tmp_path: Path) -> None:
    """Azure's AI Inference and AI Agents SDKs put each event's fields in `gen_ai.event.content` (JSON):
    before, every message imported with no content, and not marked missing either."""

    def event(name: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "timeUnixNano": "1", "attributes": [_attr("gen_ai.event.content", json.dumps(fields))]}

    events = [
        event("gen_ai.system.message", {"role": "system", "content": "You are terse."}),
        event("gen_ai.user.message", {"role": "user", "content": "How many feet in a mile?"}),
        event("gen_ai.choice", {"message": {"content": "5280 feet."}, "finish_reason": "stop", "index": 0}),
    ]
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.system": "az.ai.inference", "gen_ai.request.model": "gpt-4o"}
    (tmp_path / "azure.jsonl").write_text(_otlp([_span("00000000000000d1", attrs, events)]) + "\n")
    assert sdbctl("import", "otel", "azure.jsonl", "--run-id", "az").returncode == 0
    llm = next(r for r in _rows(tmp_path, "az") if r["kind"] == "llm")
    assert llm["payload"]["request"]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "How many feet in a mile?"},
    ]
    assert llm["payload"]["response"]["choices"][0]["message"]["content"] == "5280 feet."
