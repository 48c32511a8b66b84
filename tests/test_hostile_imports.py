"""Hostile input to the importers, from a security review: each case once crashed with a traceback,
or changed a value silently. Now each is refused: one line naming the file and line (or array element),
exit code 2, and no run written. The rest of the review is ``test_hostile_inputs.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sdbctl.sdb.store import Store, connect, query_arrow
from tests.conftest import CLI, assert_one_line_error

DEEP = "[" * 10_000 + "]" * 10_000
HUGE = "9" * 400  # a 400-digit integer


def _no_run(tmp_path: Path) -> None:
    runs = tmp_path / ".sdb" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), sorted(p.name for p in runs.iterdir())


# -- 1 and 2: the importers ------------------------------------------------------------------------

JSONL_MAP = 'session = "sid"\norder = "seq"\nkind = "type"\nname = "tool"\nargs = "args"\n[kinds]\ncall = "action"\n'
JSONL_GOOD = '{"sid": "s", "seq": 1, "type": "call", "tool": "refund", "args": {"order": 42}}'


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"sid": "s", "seq": 2, "type": "call", "tool": "t", "args": {"x": ' + DEEP + "}}", "nested too deep"),
        ('{"sid": "s", "seq": 2, "type": "call", "tool": "t\\ud800", "args": {}}', "lone surrogate"),
        ('{"sid": "\\udc00", "seq": 2, "type": "call", "tool": "t", "args": {}}', "lone surrogate"),
        ('{"sid": "s", "seq": ' + HUGE + ', "type": "call", "tool": "t", "args": {}}', "outside the 64-bit range"),
        ('{"sid": "s", "seq": 2, "type": "call", "tool": "t", "args": {"n": ' + HUGE + "}}", "64-bit"),
        ('{"sid": "s", "seq": 1e400, "type": "call", "tool": "t", "args": {}}', "inf is not a JSON number"),
        ('{"sid": "s", "seq": 2, "type": "call", "tool": "t", "args": {"x": NaN}}', "nan is not a JSON number"),
        ('{"sid": "s", "seq": 2, "type": "call", "tool": "t", "args": {"x": -Infinity}}', "-inf is not a JSON"),
        ('{"sid": "s", "seq": 2, "type": "call", "tool": "t", "args": {"x": 1, "x": 2}}', "key 'x' twice"),
        ('{"sid": "s", "seq": 2, "type": "call", "tool": "t", "args": "{\\"x\\": NaN}"}', "nan is not a JSON"),
        ('{"sid": "s", "seq": 1700000000000000000, "type": "call", "tool": "t", "args": {}}', "range of a timestamp"),
    ],
    ids=[
        "nested-10000-deep",
        "lone-surrogate-name",
        "lone-surrogate-session",
        "400-digit-order",
        "400-digit-argument",
        "order-1e400",
        "nan",
        "minus-infinity",
        "duplicate-key",
        "nan-in-arguments-text",
        "order-beyond-a-timestamp",
    ],
)
def test_import_jsonl_refuses_a_hostile_line_as_file_line(sdbctl: CLI, tmp_path: Path, line: str, reason: str) -> None:
    (tmp_path / "map.toml").write_text(JSONL_MAP)
    (tmp_path / "log.jsonl").write_text(JSONL_GOOD + "\n" + line + "\n")
    assert_one_line_error(sdbctl("import", "jsonl", "log.jsonl", "--map", "map.toml"), "log.jsonl:2:", reason)
    _no_run(tmp_path)
    skipped = sdbctl("import", "jsonl", "log.jsonl", "--map", "map.toml", "--skip-bad", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout)["skipped"] == 1 and json.loads(skipped.stdout)["events"] == 1


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"key": key, "value": value}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _otlp(attrs: dict[str, Any], **span: Any) -> str:
    raw = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "00000000000000b1",
        "name": "chat gpt-4",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000500000000",
        "attributes": [_attr(k, v) for k, v in attrs.items()],
        **span,
    }
    return json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "t"}, "spans": [raw]}]}]})


CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4",
    "gen_ai.input.messages": json.dumps([{"role": "user", "content": "refund order 42"}]),
    "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": "done"}]),
}


def _tool_call(arguments: str) -> dict[str, Any]:
    call = {"type": "tool_call", "id": "c1", "name": "refund", "arguments": arguments}
    return {**CHAT, "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [call]}])}


@pytest.mark.parametrize("arguments", [DEEP, '{"order": NaN}'], ids=["nested-10000-deep", "holding-nan"])
def test_a_traced_tool_call_with_hostile_arguments_is_a_parse_failure(
    sdbctl: CLI, tmp_path: Path, arguments: str
) -> None:
    """The model's own output that cannot be kept is what the boundary calls it: parse_failed."""
    (tmp_path / "traces.jsonl").write_text(_otlp(_tool_call(arguments)) + "\n")
    out = sdbctl("import", "otel", "traces.jsonl", "--run-id", "t")
    assert out.returncode == 0, out.stderr
    rows = json.loads(sdbctl("query", "SELECT name, status FROM events WHERE kind = 'action'", "--json").stdout)
    assert rows == [{"name": "?", "status": "parse_failed"}]


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (_otlp(CHAT)[:-1] + ', "x": ' + DEEP + "}", "nested too deep"),
        (_otlp(CHAT).replace('"gpt-4"', '"gpt-4\\udc00"'), "lone surrogate"),
        (_otlp({**CHAT, "gen_ai.usage.input_tokens": {"intValue": HUGE}}), "outside the 64-bit range"),
        (_otlp({**CHAT, "gen_ai.usage.input_tokens": 1}).replace('"intValue": "1"', '"intValue": ' + HUGE), "64-bit"),
        (_otlp(CHAT, startTimeUnixNano=HUGE), "startTimeUnixNano '9999"),
        (_otlp({**CHAT, "gen_ai.request.temperature": {"doubleValue": "NaN"}}), "doubleValue 'NaN' is not a finite"),
        (_otlp({**CHAT, "gen_ai.request.temperature": {"doubleValue": 0.5}}).replace("0.5", "Infinity"), "inf is not"),
        (_otlp(CHAT).replace('"name": "t"', '"name": "t", "name": "u"'), "key 'name' twice"),
    ],
    ids=[
        "nested-10000-deep",
        "lone-surrogate",
        "400-digit-intValue-text",
        "400-digit-intValue-number",
        "400-digit-start-time",
        "nan-doubleValue",
        "infinity-literal",
        "duplicate-key",
    ],
)
def test_import_otel_refuses_a_hostile_line_as_file_line(sdbctl: CLI, tmp_path: Path, doc: str, reason: str) -> None:
    (tmp_path / "traces.jsonl").write_text(_otlp(CHAT, spanId="00000000000000a1") + "\n" + doc + "\n")
    assert_one_line_error(sdbctl("import", "otel", "traces.jsonl"), "traces.jsonl:2:", reason)
    _no_run(tmp_path)


def test_otel_content_that_is_not_json_canonical_json_keeps_stays_the_text_it_is(sdbctl: CLI, tmp_path: Path) -> None:
    """A tool result written as Python's json.dumps writes NaN is text, not a value to turn into null."""
    tool = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "mean",
        "gen_ai.tool.call.id": "c1",
        "gen_ai.tool.call.arguments": '{"xs": []}',
        "gen_ai.tool.call.result": '{"mean": NaN}',
    }
    (tmp_path / "traces.jsonl").write_text(_otlp(tool, name="execute_tool mean") + "\n")
    out = sdbctl("import", "otel", "traces.jsonl", "--run-id", "t")
    assert out.returncode == 0, out.stderr
    rows = query_arrow(connect(Store.open(tmp_path / ".sdb"), "t"), "SELECT kind, payload FROM events").to_pylist()
    effect = next(json.loads(r["payload"]) for r in rows if r["kind"] == "effect")
    assert effect["result"]["content"] == '{"mean": NaN}'


def _conversation(cid: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "refund order 42"}, {"role": "assistant", "content": "done"}]
    return {"id": cid, "messages": messages, **extra}


def _called(arguments: str) -> dict[str, Any]:
    call = {"id": "k", "type": "function", "function": {"name": "refund", "arguments": arguments}}
    messages = [{"role": "user", "content": "refund"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    return {"id": "c2", "messages": messages}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (json.dumps(_conversation("c2"))[:-1] + ', "x": ' + DEEP + "}", "nested too deep"),
        (json.dumps(_conversation("c2")).replace("refund order", "\\ud800"), "lone surrogate"),
        (json.dumps(_conversation("c2"))[:-1] + ', "repeat": ' + HUGE + "}", "outside the 64-bit range"),
        (json.dumps(_conversation("c2"))[:-1] + ', "score": NaN}', "nan is not a JSON number"),
        (json.dumps(_conversation("c2"))[:-1] + ', "score": 1e400}', "inf is not a JSON number"),
        (json.dumps(_conversation("c2"))[:-1] + ', "id": "c3"}', "key 'id' twice"),
        (json.dumps(_called(DEEP)), "arguments of 'refund': JSON nested too deep"),
        (json.dumps(_called('{"order": NaN}')), "arguments of 'refund': JSON cannot be kept as it is: nan"),
    ],
    ids=[
        "nested-10000-deep",
        "lone-surrogate",
        "400-digit-repeat",
        "nan",
        "overflow-to-infinity",
        "duplicate-key",
        "tool-arguments-nested-10000-deep",
        "tool-arguments-holding-nan",
    ],
)
def test_import_chat_refuses_a_hostile_line_as_file_line(sdbctl: CLI, tmp_path: Path, line: str, reason: str) -> None:
    (tmp_path / "chats.jsonl").write_text(json.dumps(_conversation("c1")) + "\n" + line + "\n")
    assert_one_line_error(sdbctl("import", "chat", "chats.jsonl"), "chats.jsonl:2:", reason)
    _no_run(tmp_path)
    skipped = sdbctl("import", "chat", "chats.jsonl", "--skip-bad", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout)["skipped"] == 1 and json.loads(skipped.stdout)["sessions"] == 1


def test_import_chat_refuses_a_hostile_element_of_an_array_as_file_index(sdbctl: CLI, tmp_path: Path) -> None:
    both = [_conversation("c1"), _conversation("c2", outcome=float("nan"))]
    (tmp_path / "chats.json").write_text(json.dumps(both))  # json.dumps writes NaN
    assert_one_line_error(sdbctl("import", "chat", "chats.json"), "chats.json[1]:", "nan is not a JSON number")
    _no_run(tmp_path)
