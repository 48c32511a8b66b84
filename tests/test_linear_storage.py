"""Linear storage of llm requests (issue 22, item 1): every request read back, by every reader, is
byte for byte the request the recorder was given (what was stored whole before), on recorded,
proxied, OpenTelemetry-imported and chat-imported runs; a long conversation stores what is new, not
its history again; stores written before (schema version 1) stay readable."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from hypothesis import given as hypothesis_given
from hypothesis import settings
from hypothesis import strategies as st

import sdbctl.fixtures.workloads
from sdbctl.recorders.importers import import_chat, import_otel
from sdbctl.sdb.errors import PayloadError, SchemaError
from sdbctl.sdb.events import _linear, canonical_bytes, session_requests
from sdbctl.sdb.query import read_only_query
from sdbctl.sdb.recording import _session
from sdbctl.sdb.redaction import load_redactor
from sdbctl.sdb.replay._source import iter_steps
from sdbctl.sdb.store import Store, event_dicts, run_events
from tests.conftest import CLI, assert_one_line_error
from tests.helpers import record_run
from tests.llm_server import LLMServer

REPO = Path(__file__).resolve().parent.parent
Given = dict[tuple[str, int], bytes]
sdbctl.fixtures.workloads.register_all()


@pytest.fixture
def given(monkeypatch: pytest.MonkeyPatch) -> Iterator[Given]:
    """The canonical JSON of every request handed to ``Session.llm``, by (session, seq): what an llm
    event stored whole before linear storage."""
    seen: Given = {}
    original = _session.Session.llm

    def llm(self: _session.Session, request: Any, response: Any, **kw: Any) -> int:
        seq = original(self, request, response, **kw)
        seen[(self.session_id, seq)] = canonical_bytes(request)
        return seq

    monkeypatch.setattr(_session.Session, "llm", llm)
    yield seen


def read_back(store: Path, run: str) -> dict[str, Given]:
    """Every llm request of ``run`` as each reader gets it: the timeline (``show --full``, export),
    the step replay's source, and the ``requests`` view of ``sdbctl query``."""
    s = Store.open(store)
    timeline = {
        (e["session_id"], e["seq"]): canonical_bytes(e["payload"]["request"])
        for e in event_dicts(run_events(s, run), whole=True)
        if e["kind"] == "llm"
    }
    steps = {(st.session_id, st.seq): canonical_bytes(st.request) for batch in iter_steps(s, run) for st in batch}
    rows = read_only_query(s, "SELECT session_id, seq, request FROM requests", run)[1]
    view = {(sid, seq): text.encode() for sid, seq, text in rows}
    return {"timeline": timeline, "steps": steps, "view": view}


def assert_identical(store: Path, run: str, expected: Given) -> None:
    assert expected
    for reader, got in read_back(store, run).items():
        assert got == expected, reader


def stored_request_bytes(store: Path, run: str) -> tuple[int, int]:
    """(bytes of the llm payloads as stored, how many of them hold a delta)."""
    rows = read_only_query(Store.open(store), "SELECT payload FROM events WHERE kind = 'llm'", run)[1]
    return sum(len(p) for (p,) in rows), sum('"request_delta"' in p for (p,) in rows)


def conversation(calls: int) -> dict[str, Any]:
    """A tool-using conversation of ``calls`` assistant messages (a tool result of ~600 bytes each)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are an airline agent. " * 40},
        {"role": "user", "content": "Change my flight, user mia_li_3668, e-mail mia@example.com."},
    ]
    for k in range(calls):
        if k % 4 == 3:
            messages.append({"role": "assistant", "content": f"Step {k} is done."})
            messages.append({"role": "user", "content": f"ok {k}, flag {k % 2 == 0}"})
            continue
        args = json.dumps({"reservation_id": f"R{k:05d}", "ok": k % 2 == 0})
        call = {"id": f"call_{k}", "type": "function", "function": {"name": "get_reservation", "arguments": args}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        result = {"flights": [{"n": f"HAT{k}{i}", "price": 100.5 + i, "ok": True} for i in range(8)]}
        messages.append({"role": "tool", "tool_call_id": f"call_{k}", "content": json.dumps(result)})
    return {"id": "long", "model": "gpt-4o", "messages": messages, "outcome": 1}


def test_a_workload_recorded_through_the_sdk_reads_back_identical(store: Path, given: Given) -> None:
    record_run(store, "contract-renewal", "rec", sessions=4)
    assert_identical(store, "rec", given)
    _, deltas = stored_request_bytes(store, "rec")
    assert deltas > 0  # the agents' calls share their system prompts and handed-back history


def test_chat_imports_read_back_identical_and_store_what_is_new(tmp_path: Path, given: Given) -> None:
    store = tmp_path / ".sdb"
    chat = REPO / "fixtures" / "chat"
    import_chat(store, [chat / "trial-a.jsonl", chat / "trial-b.jsonl"], chat / "map.toml", run_id="air")
    assert_identical(store, "air", given)
    given.clear()
    long = tmp_path / "long.json"
    long.write_text(json.dumps(conversation(300)))
    import_chat(store, [long], run_id="long")
    assert_identical(store, "long", given)
    stored, deltas = stored_request_bytes(store, "long")
    whole = sum(len(b) for b in given.values())
    assert deltas == 299  # every call after the first
    assert stored < 3 * long.stat().st_size < whole / 30  # linear in the log, not in the square of it
    assert b"[REDACTED:email]" in next(iter(given.values()))  # redacted as before, once per message


def test_an_otel_import_reads_back_identical(tmp_path: Path, given: Given) -> None:
    store = tmp_path / ".sdb"
    import_otel(store, [REPO / "fixtures" / "traces" / "openllmetry-0.62.4-content.jsonl"], run_id="otel")
    assert_identical(store, "otel", given)


AGENT = """
import json, os, sys, httpx
url = os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions"
messages = [{"role": "system", "content": "You answer briefly. " * 30}]
for k in range(int(sys.argv[1])):
    messages.append({"role": "user", "content": f"question {k}: is {k} even? {k % 2 == 0}"})
    body = {"model": "gpt-4o-mini", "messages": messages, "temperature": 0.5}
    answer = httpx.post(url, json=body, headers={"Authorization": "Bearer sk-x"}, timeout=30).json()
    messages.append(answer["choices"][0]["message"])
"""


def test_a_proxied_conversation_reads_back_as_the_upstream_received_it(sdbctl_process: CLI, tmp_path: Path) -> None:
    def reply(request: dict[str, Any]) -> dict[str, Any]:
        n = len(request["messages"])
        message = {"role": "assistant", "content": f"answer {n}: " + "words " * 30}
        return {"id": f"c{n}", "object": "chat.completion", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}  # fmt: skip

    (tmp_path / "agent.py").write_text(AGENT)
    with LLMServer(reply) as upstream:
        env = {"OPENAI_BASE_URL": upstream.url, "OPENAI_API_KEY": "sk-x"}
        out = sdbctl_process("record", "--run-id", "proxied", "--", sys.executable, "agent.py", "40", env=env)
        assert out.returncode == 0, out.stderr
        received = list(upstream.bodies)
    assert len(received) == 40
    redact = load_redactor().redact
    expected = [canonical_bytes(redact(body)) for body in received]
    store = tmp_path / ".sdb"
    for reader, got in read_back(store, "proxied").items():
        assert [got[k] for k in sorted(got, key=lambda k: k[1])] == expected, reader
    _, deltas = stored_request_bytes(store, "proxied")
    assert deltas == 39


def test_a_request_that_differs_only_by_a_boolean_for_an_integer_is_never_confused(store: Path) -> None:
    """``True == 1`` in Python: a history that changes ``1`` into ``true`` still reads back as asked."""
    from sdbctl.recorders.sdk import Recorder

    asked = [
        {"messages": [{"role": "user", "content": "a", "n": 1}], "temperature": 1.0},
        {"messages": [{"role": "user", "content": "a", "n": True}, {"role": "user", "content": "b"}]},
        {"messages": [{"role": "user", "content": "a", "n": True}, {"role": "user", "content": "b"}], "x": 2.0},
        {"messages": [{"role": "user", "content": "a", "n": 1.0}, {"role": "user", "content": "c"}], "x": 2},
    ]
    with Recorder(store=store, run_id="bools", handle_signals=False) as rec:
        session = rec.session("s")
        for request in asked:
            session.llm(request, {"choices": []}, model="m")
    expected = {("s", seq): canonical_bytes(r) for seq, r in enumerate(asked)}
    assert_identical(store, "bools", expected)


def test_a_delta_that_starts_from_a_missing_event_is_one_line(tmp_path: Path) -> None:
    bodies = [(0, {"request": {"messages": [1]}}), (1, {"request_delta": {"from": 7, "same": ["messages"]}})]
    with pytest.raises(SchemaError, match=r"run r session s seq 1: its request starts from llm event 7"):
        list(session_requests(bodies, "run r session s"))
    bad = [(0, {"request": {"messages": [1]}}), (1, {"request_delta": {"from": 0, "extend": {"messages": [5, []]}}})]
    with pytest.raises(SchemaError, match="extends 'messages' beyond"):
        list(session_requests(bad, "run r session s"))


def test_a_store_written_before_linear_storage_reads_and_replays(sdbctl: CLI, tmp_path: Path) -> None:
    shutil.copytree(REPO / "tests" / "data" / "stores" / "v1", tmp_path / ".sdb")
    part = tmp_path / ".sdb" / "runs" / "air" / "events-00000.parquet"
    assert pq.read_schema(part).metadata[b"sdb.schema_version"] == b"1"
    shown = json.loads(sdbctl("show", "air", "--kind", "llm", "--full", "--json", "--limit", "0").stdout)
    stored = {(e["session_id"], e["seq"]): e["payload"]["request"] for e in shown}
    written = [
        json.loads(p)
        for k, p in zip(*pq.read_table(part, columns=["kind", "payload"]).to_pydict().values(), strict=True)
        if k == "llm"
    ]
    assert sorted(canonical_bytes(r) for r in stored.values()) == sorted(canonical_bytes(w["request"]) for w in written)
    for run in ("air", "base"):
        out = sdbctl("replay", run, "--model", "recorded", "--run-id", f"{run}-again", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["divergences"] == 0
        again = read_back(tmp_path / ".sdb", f"{run}-again")["timeline"]
        before = read_back(tmp_path / ".sdb", run)["timeline"]
        assert sorted(again.values()) == sorted(before.values())  # asked again exactly as recorded
    diff = sdbctl("diff", "air", "air-again", "--json")
    assert diff.returncode == 0 and json.loads(diff.stdout)["divergences"] == []


def test_a_tampered_delta_is_one_line_naming_the_run(sdbctl: CLI, tmp_path: Path) -> None:
    """A store is data: a delta that points nowhere (in a part whose manifest entry was forged to
    match it) is one line naming the run, session and event, exit 2, never a wrong request."""
    chat = REPO / "fixtures" / "chat"
    assert sdbctl("import", "chat", str(chat / "trial-a.jsonl"), "--map", str(chat / "map.toml"), "--run-id", "a")
    run = tmp_path / ".sdb" / "runs" / "a"
    part = next(run.glob("events-*.parquet"))
    table = pq.read_table(part)
    before = table["payload"].to_pylist()
    payloads = [re.sub(r'("request_delta":\{.*?"from":)(\d+)', r"\g<1>9\2", str(p), count=1) for p in before]
    assert payloads != before
    table = table.set_column(table.schema.get_field_index("payload"), "payload", pa.array(payloads, pa.string()))
    pq.write_table(table, part)
    manifest = json.loads((run / "run.json").read_text())
    data = part.read_bytes()
    manifest["part_files"][0].update(size=len(data), xxh3=xxhash.xxh3_64_hexdigest(data))
    (run / "run.json").write_text(json.dumps(manifest))
    for args in (
        ("show", "a", "--full", "--json"),
        ("replay", "a", "--model", "recorded"),
        ("export", "a", "-o", "x.jsonl"),
    ):
        assert_one_line_error(sdbctl(*args), "run a session", "its request starts from llm event 9")
    assert sdbctl("show", "a", "--json").returncode == 0  # the stored events are shown as they are


def test_a_delta_never_starts_from_an_event_another_threads_unit_still_holds(store: Path) -> None:
    """Thread A's llm event held in its unit() block is not queued yet: the main thread's next call
    stores its request whole, so a flush in between leaves a readable run."""
    import threading

    from sdbctl.recorders.sdk import Recorder

    history = [{"role": "user", "content": "a"}]
    inside, release = threading.Event(), threading.Event()
    rec = Recorder(store=store, run_id="u", handle_signals=False)
    session = rec.session("s")

    def in_a_unit() -> None:
        with rec.unit():
            session.llm({"messages": history}, {"choices": []}, model="m")
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=in_a_unit)
    thread.start()
    assert inside.wait(10)
    session.llm({"messages": [*history, {"role": "user", "content": "b"}]}, {"choices": []}, model="m")
    rec.flush()  # the main thread's event is on disk, thread A's is not
    part = read_only_query(Store.open(store), "SELECT seq, payload FROM events", "u")[1]
    assert [seq for seq, _ in part] == [1] and '"request_delta"' not in part[0][1]
    release.set()
    thread.join()
    rec.close()
    assert len(read_back(store, "u")["timeline"]) == 2


def test_a_request_holding_a_numpy_array_records_as_before(store: Path) -> None:
    import numpy as np

    from sdbctl.recorders.sdk import Recorder

    first: list[Any] = [{"role": "user", "content": "a"}]
    asked: list[dict[str, Any]] = [{"messages": first, "embedding": np.arange(3)}]
    asked.append({"messages": [*first, {"role": "user", "content": np.array([1.5])}], "embedding": np.arange(4)})
    with Recorder(store=store, run_id="np", handle_signals=False) as rec:
        session = rec.session("s")
        for request in asked:
            session.llm(request, {"choices": []}, model="m")
    assert_identical(store, "np", {("s", seq): canonical_bytes(r) for seq, r in enumerate(asked)})


@pytest.mark.parametrize(
    ("bodies", "message"),
    [
        ([(0, {"request": {"m": [1]}}), (0, {"request": {"m": [2]}})], "two llm events of the session have seq 0"),
        ([(0, {"request": {"m": [1]}}), (1, {"request": {}, "request_delta": {"from": 0}})], "both a request and"),
        ([(0, {"request": "text"}), (1, {"request_delta": {"from": 0, "same": ["m"]}})], "not an earlier llm event"),
        (
            [(0, {"request": {"m": [1]}}), (1, {"request_delta": {"from": True, "same": ["m"]}})],
            "starts from llm event True",
        ),
    ],
)
def test_a_damaged_chain_is_one_line(bodies: list[tuple[int, Any]], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        list(session_requests(bodies, "run r session s"))


def test_the_requests_view_streams_one_run_or_the_store(sdbctl: CLI, tmp_path: Path) -> None:
    chat = REPO / "fixtures" / "chat"
    for run, trial in (("a", "trial-a.jsonl"), ("b", "trial-b.jsonl")):
        assert sdbctl("import", "chat", str(chat / trial), "--map", str(chat / "map.toml"), "--run-id", run)
    store = tmp_path / ".sdb"
    one = read_only_query(Store.open(store), "SELECT run_id, count(*) FROM requests GROUP BY 1", "a")[1]
    every = dict(read_only_query(Store.open(store), "SELECT run_id, count(*) FROM requests GROUP BY 1")[1])
    assert one == [("a", every["a"])] and set(every) == {"a", "b"}
    assert every == {r: len(read_back(store, r)["timeline"]) for r in ("a", "b")}


# values that == confuses with one another, but canonical JSON does not (or that it rewrites)
_TRICKY = st.sampled_from([1, True, 1.0, 0, False, -0.0, 2.5, float("nan"), "1", None, (1, 2), [1, 2], {"a": 1}])
_VALUE = st.recursive(
    _TRICKY | st.text(alphabet='ab"\\\n', max_size=4) | st.integers(-3, 3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "é"]), inner, max_size=2),
    max_leaves=6,
)
# how the next request comes from the last: a turn added, the history cut or edited, a key set or dropped
_STEP = st.tuples(st.sampled_from(["append", "cut", "edit", "set", "drop", "tuple"]), _VALUE, st.integers(0, 5))


@pytest.mark.parametrize("unchanged", [False, True])
@settings(max_examples=200, deadline=None)
@hypothesis_given(st.lists(_VALUE, min_size=1, max_size=3), st.lists(_STEP, max_size=8))
def test_any_sequence_of_requests_reads_back_as_its_canonical_json(
    unchanged: bool, first: list[Any], steps: list[Any]
) -> None:
    """The writer's deltas, found by comparing texts, read back as each request's canonical JSON byte
    for byte, and the text it gives for the digest is that canonical JSON, whatever the history does
    between calls (``True`` for ``1``, ``1.0``, NaN, tuples, cuts, edits); also when the caller says
    it never changes a value it handed over, so that a list's items that are the previous call's
    objects are not written again."""
    messages: list[Any] = list(first)
    request: dict[str, Any] = {"messages": messages, "model": "m"}
    requests = [request]
    for op, value, k in steps:
        request = dict(request)
        items = list(request.get("messages", []))
        if op == "append":
            items.append(value)
        elif op == "cut":
            items = items[: k % (len(items) + 1)]
        elif op == "edit" and items:
            items[k % len(items)] = value
        elif op == "set":
            request["temperature" if k % 2 else "model"] = value
        elif op == "drop":
            request.pop("model", None)
        request["messages"] = tuple(items) if op == "tuple" else items
        requests.append(request)
    chain = _linear.RequestChain()
    bodies = []
    for seq, given_request in enumerate(requests):
        try:
            expected = canonical_bytes(given_request)
        except PayloadError:  # NaN: not JSON, refused whole as before
            with pytest.raises(PayloadError):
                chain.encode(given_request)
            continue
        member, whole, state = chain.encode(given_request, unchanged=unchanged)
        assert whole == expected
        chain.keep(seq, state)
        bodies.append((seq, json.loads(b"{" + member + b"}")))
    assert len(bodies) == sum(1 for r in requests if "nan" not in repr(r))
    for seq, back in session_requests(bodies, "s"):
        assert canonical_bytes(back) == canonical_bytes(requests[seq])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("unchanged", [False, True])
def test_a_nan_where_the_last_request_had_null_is_refused_not_stored_as_null(bad: float, unchanged: bool) -> None:
    """orjson writes NaN and the infinities as ``null``: a request holding one where the session's last
    request held ``null`` (a key kept, or a history item) is refused as it was before linear
    storage, never stored as that ``null``."""
    item: dict[str, Any] = {"a": None}
    chain = _linear.RequestChain()
    _, _, state = chain.encode({"model": "m", "t": None, "messages": [item]}, unchanged=unchanged)
    chain.keep(1, state)
    with pytest.raises(PayloadError, match="not a JSON number"):
        chain.encode({"model": "m", "t": bad, "messages": [item]}, unchanged=unchanged)
    item["a"] = bad  # the history's item itself (a caller that does change what it handed over)
    with pytest.raises(PayloadError, match="not a JSON number"):
        chain.encode({"model": "m", "t": None, "messages": [{"a": bad}, {"y": 1}]}, unchanged=unchanged)
    with pytest.raises(PayloadError, match="not a JSON number"):
        chain.encode({"model": "m", "t": None, "messages": [item, {"y": 1}]}, unchanged=False)


def test_a_request_that_is_not_a_dict_is_refused_as_the_first_call_of_a_session_is() -> None:
    import types

    chain = _linear.RequestChain()
    _, _, state = chain.encode({"a": 1, "b": [1]})
    chain.keep(1, state)
    with pytest.raises(PayloadError):
        canonical_bytes(types.MappingProxyType({"a": 1, "b": [1, 2]}))
    with pytest.raises(PayloadError):
        chain.encode(types.MappingProxyType({"a": 1, "b": [1, 2]}))
