"""Hostile input, from a security review: each case once crashed with a traceback, or changed a value
silently. Now each is refused — one line naming the file and line, or the option, exit code 2, and no
run written — or, for a recording in process, a PayloadError in the caller that takes no seq."""

from __future__ import annotations

import decimal
import json
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sdbctl.fixtures.sample_run import record_sample
from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.errors import PayloadError, SdbError, UsageError
from sdbctl.sdb.events import canonical
from sdbctl.sdb.gate import load_thresholds
from sdbctl.sdb.replay.engine import ReplayOptions
from sdbctl.sdb.store.layout import Store
from sdbctl.sdb.store.views import connect, query_arrow
from tests.conftest import CLI

DEEP = "[" * 10_000 + "]" * 10_000
HUGE = "9" * 400  # a 400-digit integer


def _refused(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, one line on stderr holding every needle, no traceback; returns the line."""
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


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
    _refused(sdbctl("import", "jsonl", "log.jsonl", "--map", "map.toml"), "log.jsonl:2:", reason)
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
    _refused(sdbctl("import", "otel", "traces.jsonl"), "traces.jsonl:2:", reason)
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
    _refused(sdbctl("import", "chat", "chats.jsonl"), "chats.jsonl:2:", reason)
    _no_run(tmp_path)
    skipped = sdbctl("import", "chat", "chats.jsonl", "--skip-bad", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout)["skipped"] == 1 and json.loads(skipped.stdout)["sessions"] == 1


def test_import_chat_refuses_a_hostile_element_of_an_array_as_file_index(sdbctl: CLI, tmp_path: Path) -> None:
    both = [_conversation("c1"), _conversation("c2", outcome=float("nan"))]
    (tmp_path / "chats.json").write_text(json.dumps(both))  # json.dumps writes NaN
    _refused(sdbctl("import", "chat", "chats.json"), "chats.json[1]:", "nan is not a JSON number")
    _no_run(tmp_path)


# -- 2: the in-process recorder --------------------------------------------------------------------

REFUSED: list[tuple[Any, str]] = [
    (float("nan"), "nan is not a JSON number"),
    (float("inf"), "inf is not a JSON number"),
    ({"deep": [{"x": float("-inf")}], "n": None}, "-inf is not a JSON number"),
    (np.array([1.5, np.nan]), "nan is not a JSON number"),
    ({"d": decimal.Decimal("NaN")}, "nan is not a JSON number"),
    ({1: "a", "1": "b"}, "keys 1 and '1' are both written as '1'"),
    ({"k": [{True: 1, "true": 2}]}, "keys True and 'true' are both written as 'true'"),
]
REFUSED_IDS = ["nan", "infinity", "nested-minus-infinity", "numpy-nan", "decimal-nan", "1-and-'1'", "True-and-'true'"]


@pytest.mark.parametrize(("value", "reason"), REFUSED, ids=REFUSED_IDS)
def test_canonical_json_refuses_nan_infinities_and_keys_written_as_one_text(value: Any, reason: str) -> None:
    for write in (canonical.canonical_bytes, canonical._canonical_bytes):  # the C function and the Python one
        with pytest.raises(PayloadError, match="not JSON-serialisable") as error:
            write(value)
        assert reason in str(error.value)


def test_canonical_json_still_writes_non_string_keys_nulls_and_the_text_null() -> None:
    assert canonical.canonical_json({1: "a", "b": None, 2.5: 1.0}) == '{"1":"a","2.5":1,"b":null}'
    assert canonical.canonical_json({"text": "null", "n": None}) == '{"n":null,"text":"null"}'


def _methods(s: Any, value: Any) -> list[Callable[[], int]]:
    """Every recording method with ``value`` in its payload: the public one (C, when built) and the
    pure-Python one it hands over to."""
    out: list[Callable[[], int]] = []
    for form in ("{}", "_{}_py"):
        action, input_, state, effect, gate, llm = (
            getattr(s, form.format(kind)) for kind in ("action", "input", "state", "effect", "gate", "llm")
        )
        out += [
            partial(action, "propose_offer", value),
            partial(action, "propose_offer", {"a": 1}, call_id="c", error=value),
            partial(input_, "contract", value),
            partial(state, "offer_sent", value),
            partial(effect, "send", value),
            partial(gate, "policy", value),
            partial(gate, "policy", "allow", value),
            partial(llm, {"q": 1}, {"choices": [value]}, model="m"),
            partial(llm, {"q": value}, {}, model="m"),
            partial(llm, {"q": 1}, {}, model="m", variables={"v": value}),
        ]
    out.append(partial(s.error, "provider", "timeout", detail=value))
    return out


@pytest.mark.parametrize(("value", "reason"), REFUSED, ids=REFUSED_IDS)
def test_recorder_refuses_nan_infinities_and_clashing_keys_in_the_caller_without_a_seq(
    store: Path, value: Any, reason: str
) -> None:
    with Recorder(store=store, run_id="r", handle_signals=False) as rec:
        s = rec.session("s")
        assert s.state("before", {"a": 1}) == 0
        for call in _methods(s, value):
            with pytest.raises(PayloadError) as error:
                call()
            assert reason in str(error.value)
        assert s.state("after", {"a": 2}) == 1  # no seq was taken by a refused call
    rows = query_arrow(connect(Store.open(store), "r"), "SELECT seq, name, payload FROM events ORDER BY seq")
    assert rows.to_pylist() == [
        {"seq": 0, "name": "before", "payload": '{"a":1}'},
        {"seq": 1, "name": "after", "payload": '{"a":2}'},
    ]


@pytest.mark.parametrize("name", [5, "n\ud800"], ids=["not-a-string", "lone-surrogate"])
def test_recorder_refuses_a_name_that_is_not_utf8_text_as_a_payload_error(store: Path, name: Any) -> None:
    """Once a TypeError (C), an AttributeError or a UnicodeEncodeError (Python), from the digest."""
    with Recorder(store=store, handle_signals=False) as rec:
        s = rec.session("s")
        calls: list[Callable[[], Any]] = [
            lambda: s.input(name, {}),
            lambda: s.state(name, {}),
            lambda: s.gate(name, True),
            lambda: s.effect(name, {}),
            lambda: s.llm({}, {}, model="m", name=name),
            lambda: s.error(name, "timeout"),
        ]
        for call in calls:
            with pytest.raises(PayloadError, match="name"):
                call()
        assert s.state("after", {}) == 0


# -- 3: a garbage manifest in one run --------------------------------------------------------------


def test_a_garbage_manifest_leaves_its_run_out_with_a_warning_and_the_others_work(sdbctl: CLI, tmp_path: Path) -> None:
    record_sample(str(tmp_path / ".sdb"), 3, run_id="a")
    record_sample(str(tmp_path / ".sdb"), 3, run_id="b")
    (tmp_path / ".sdb" / "runs" / "x").mkdir()
    (tmp_path / ".sdb" / "runs" / "x" / "run.json").write_text("garbage\n")
    listed = sdbctl("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["a", "b"]
    warning = listed.stderr.strip().splitlines()
    assert len(warning) == 1 and "x/run.json" in warning[0] and "warning" in warning[0], listed.stderr
    counted = sdbctl("query", "SELECT count(DISTINCT run_id) AS n FROM events", "--json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == [{"n": 2}] and "x/run.json" in counted.stderr
    diffed = sdbctl("diff", "a", "b", "--json")
    assert diffed.returncode == 0, diffed.stderr
    assert json.loads(diffed.stdout)["divergences"] == []
    assert sdbctl("show", "@latest", "--json").returncode == 0
    _refused(sdbctl("show", "x"), "x/run.json", "not a valid run manifest")  # asked for by id: its error


# -- 4: query --json of what orjson cannot write as it is ------------------------------------------


def test_query_prints_128_bit_integers_as_json_numbers_and_maps_keyed_by_text(sdbctl: CLI, sample_run: str) -> None:
    big = 170141183460469231731687303715884105727
    out = sdbctl("query", f"SELECT {big}::HUGEINT AS x", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"x": big}]
    sql = f"SELECT MAP {{1: 'a'}} AS m, MAP {{1.5: 2}} AS d, [{big}::HUGEINT] AS l, {{'h': {big}::HUGEINT}} AS s"
    out = sdbctl("query", sql, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"m": {"1": "a"}, "d": {"1.5": 2}, "l": [big], "s": {"h": big}}]
    for fmt in ("--csv", "--limit=5"):  # the CSV and the table cells
        out = sdbctl("query", sql, fmt)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert '{"1":"a"}' in out.stdout.replace('""', '"') and str(big) in out.stdout


# -- 5: option values no command can mean ----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("diff", "a", "b", "--resamples", "-1"),
        ("diff", "a", "b", "--resamples", "0"),
        ("replay", "a", "--model", "recorded", "--timeout", "-1"),
        ("replay", "a", "--model", "recorded", "--timeout", "nan"),
        ("replay", "a", "--model", "recorded", "--timeout", "inf"),
        ("replay", "a", "--model", "recorded", "--rpm", "-5"),
        ("replay", "a", "--model", "recorded", "--rpm", "nan"),
        ("replay", "a", "--model", "recorded", "--retries", "-1"),
        ("replay", "a", "--model", "recorded", "--concurrency", "0"),
        ("replay", "a", "--model", "recorded", "--repeat", "0"),
        ("gate", "b", "--base", "a", "--max-step-divergence", "nan"),
        ("gate", "b", "--base", "a", "--max-step-divergence", "inf"),
        ("gate", "b", "--base", "a", "--max-step-divergence", "-1"),
        ("gate", "b", "--base", "a", "--max-error-rate", "nan"),
        ("gate", "b", "--base", "a", "--max-negative-flips", "-inf"),
    ],
    ids=lambda a: " ".join(a[-2:]),
)
def test_a_negative_or_nan_option_value_is_refused_naming_the_option(sdbctl: CLI, tmp_path: Path, args: Any) -> None:
    record_sample(str(tmp_path / ".sdb"), 2, run_id="a")
    record_sample(str(tmp_path / ".sdb"), 2, run_id="b")
    _refused(sdbctl(*args), args[-2], "must be")
    assert sorted(p.name for p in (tmp_path / ".sdb" / "runs").iterdir()) == ["a", "b"]  # no replay was started


@pytest.mark.parametrize(
    "bad",
    [
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"timeout": 0},
        {"rpm": -5.0},
        {"rpm": float("nan")},
        {"rpm": float("inf")},
        {"retries": -1},
        {"concurrency": 0},
        {"repeat": 0},
        {"repeat": 1.5},
        {"concurrency": True},
    ],
    ids=str,
)
def test_replay_options_built_from_python_refuse_the_same_values(bad: dict[str, Any]) -> None:
    """The Ray executor and --resume build them from saved options, with no CLI in between."""
    (name,) = bad
    with pytest.raises(UsageError, match=f"--{name} must be"):
        ReplayOptions(model="recorded", **bad)
    assert ReplayOptions(model="recorded", rpm=30, timeout=5, retries=0).retries == 0


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_gate_thresholds_from_a_config_file_refuse_nan_and_infinity(tmp_path: Path, value: str) -> None:
    (tmp_path / "sdbctl.toml").write_text(f"[gate]\nmax_step_divergence = {value}\n")
    with pytest.raises(SdbError, match=r"sdbctl.toml: gate threshold max_step_divergence must be a number >= 0"):
        load_thresholds(tmp_path)
    with pytest.raises(SdbError, match=r"^--max-session-divergence must be a number >= 0 .*finite"):
        load_thresholds(tmp_path / "none", {"max_session_divergence": float(value)})
