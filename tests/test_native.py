"""The C hot path (sdb/_native.c) against the pure-Python one: same bytes, same errors, same runs."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.errors import PayloadError
from sdbctl.sdb.events import canonical
from sdbctl.sdb.events.queue import ListQueue, new_queue
from sdbctl.sdb.native import NATIVE, native
from tests.conftest import require

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _needs_the_extension() -> None:
    """Every test here compares the C path with the Python one: without a compiler at install time
    there is no C path (the recorder runs in pure Python), so outside CI they skip, saying so."""
    require(
        native is not None, "the C extension sdbctl.sdb._native", "a C compiler (apt-get install gcc), pip install -e ."
    )


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.floats(-1e6, 1e6).map(float.__floor__).map(float)  # integral floats, often
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5), children, max_size=5)
        | st.dictionaries(st.text(max_size=2) | st.integers(-3, 12) | st.booleans(), children, max_size=4)
    ),
    max_leaves=25,
)


def _outcome(write: Any, value: Any) -> bytes | str:
    """What a canonical JSON function does with ``value``: its bytes, or the message of its error."""
    try:
        return bytes(write(value))
    except PayloadError as exc:
        return f"PayloadError: {exc}"


def test_the_c_extension_is_built_and_in_use() -> None:
    """The install (pip install -e .) compiles it; the suite must exercise it, not the fallback."""
    from sdbctl.sdb.recording import Session

    assert NATIVE and native is not None
    assert type(Session.__dict__.get("action", Session.action)).__name__ == "method_descriptor"


@given(values)
@settings(max_examples=400)
def test_c_canonical_json_is_the_python_functions(value: Any) -> None:
    """Same bytes, or the same refusal (NaN, infinities, keys such as 1 and "1" that are one text)."""
    assert native is not None
    assert _outcome(native.canonical_bytes, value) == _outcome(canonical._canonical_bytes, value)


@pytest.mark.parametrize(
    "value",
    [
        {"x": object()},
        {"n": 2**64},
        [1, {2, object()}],
        {"nan": float("nan")},
        [{"deep": [float("-inf")]}],
        {1: "a", "1": "b"},
        {"k": {True: 1, "true": 2}},
        {"n": None, "x": float("inf")},
    ],
)
def test_c_canonical_json_raises_the_python_functions_error(value: Any) -> None:
    assert native is not None
    with pytest.raises(PayloadError) as c_error:
        native.canonical_bytes(value)
    with pytest.raises(PayloadError) as py_error:
        canonical._canonical_bytes(value)
    assert str(c_error.value) == str(py_error.value)


rows = st.lists(
    st.tuples(
        st.sampled_from(["s1", "s2", "s3"]),
        st.integers(0, 2**40),
        st.none() | st.sampled_from(["day-1/offer", "day-2/close"]),
        st.none() | st.integers(0, 100),
        st.integers(0, 2**62),
        st.sampled_from(["input", "llm", "action", "gate", "effect", "state", "error"]),
        st.sampled_from(["agent", "reviewer"]),
        st.sampled_from(["", "approval"]),
        st.text(min_size=1, max_size=8),
        st.none() | st.sampled_from(["m1", "m2"]),
        st.none() | st.just("offer@v2"),
        st.text(max_size=30).map(lambda t: json.dumps(t).encode()),
        st.integers(0, 2**64 - 1),
        st.sampled_from(["ok", "gated", "error"]),
        st.none() | st.floats(0, 1e6),
        st.none() | st.integers(0, 10**6),
        st.none() | st.integers(0, 10**6),
    ),
    min_size=1,
    max_size=40,
)


@given(rows, st.integers(0, 40))
@settings(max_examples=150)
def test_c_queue_gives_the_list_queues_batches(queued: list[tuple[Any, ...]], cut: int) -> None:
    """Same rows in, same record batch out; and dropping a published prefix keeps the rest."""
    c_queue, py_queue = new_queue(10**6, lambda: None, print), ListQueue(10**6, lambda: None, print)
    assert type(c_queue) is not ListQueue
    for row in queued:
        c_queue.append(row)
        py_queue.append(row)
    n, c_batch = c_queue.batch("r")
    assert (n, c_batch) == py_queue.batch("r") and c_batch is not None
    cut = min(cut, n)
    c_queue.drop(cut)
    py_queue.drop(cut)
    assert len(c_queue) == len(py_queue) == n - cut
    assert c_queue.batch("r") == py_queue.batch("r")


def test_a_wake_is_asked_once_when_the_queue_reaches_its_size() -> None:
    woken: list[int] = []
    queue = new_queue(3, lambda: woken.append(1), print)
    row = ("s", 0, None, None, 0, "state", "agent", "", "n", None, None, b"{}", 1, "ok", None, None, None)
    for _ in range(5):
        queue.append(row)
    assert woken == [1]  # not once per event beyond the size: the writer keeps going while it is full
    queue.drop(5)
    for _ in range(3):
        queue.append(row)
    assert woken == [1, 1]


def _record(store: Path, native_on: bool) -> tuple[str, pa.Table]:
    env = {k: v for k, v in os.environ.items() if k != "SDB_NATIVE"}
    if not native_on:
        env["SDB_NATIVE"] = "0"
    out = subprocess.run(
        [sys.executable, "-m", "tests.native_script", str(store)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    parts = sorted((store / "runs" / "same").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    return out, table.sort_by([("session_id", "ascending"), ("seq", "ascending")])


def test_a_recording_is_the_same_with_and_without_the_c_extension(tmp_path: Path) -> None:
    """Every method, fast path and hand-over, errors, a unit block and a closed recorder: the two
    runs are equal column for column (times come from the same fake clock), and say the same errors."""
    c_out, c_table = _record(tmp_path / "c", True)
    py_out, py_table = _record(tmp_path / "py", False)
    assert c_out.splitlines()[0] == "native" and py_out.splitlines()[0] == "python"
    assert c_out.splitlines()[1:] == py_out.splitlines()[1:]
    assert "got an unexpected keyword argument 'unknown'" in c_out and "Session.action()" in c_out
    assert c_table.num_rows > 90
    assert c_table.equals(py_table)


def test_sessions_and_counters_are_not_tracked_by_the_garbage_collector(tmp_path: Path) -> None:
    """One counter per session lives as long as the recorder: a million of them must not make every
    collection of the agent's process slower."""
    with Recorder(store=tmp_path, handle_signals=False) as rec:
        session = rec.session("s")
        assert not gc.is_tracked(session._next_seq)
        assert [session.state("n", {}) for _ in range(3)] == [0, 1, 2]


def test_recording_leaves_every_reference_count_as_it_found_it(tmp_path: Path) -> None:
    """The C code takes and releases references by hand: after a recording (fast paths, hand-overs to
    Python, events held by unit blocks) is flushed and closed, every object it saw is referenced
    exactly as often as before, so none was freed while in use and none leaks."""
    fresh = ["".join(["x", str(i)]) for i in range(6)]  # new string objects, counted from 2
    name, step, actor, pattern, model, prompt = fresh[0], fresh[1], fresh[2], fresh[3], fresh[4], fresh[5] + "@v1"
    args, payload = {"a": 1.5}, {"b": [1, 2.0]}
    watched = [name, step, actor, pattern, model, prompt, args, payload]
    before = [sys.getrefcount(o) for o in watched]

    def record(s: Any) -> None:
        s.action(name, args, step=step, actor=actor, pattern=pattern, parent=0)
        s.action(name, args, step=step, call_id="c")  # handed to Python
        s.input(name, payload, step=step, actor=actor)
        s.state(name, payload, pattern=pattern)
        s.effect(name, payload, step=step)
        s.gate(name, "allow", step, step=step, actor=actor)
        s.llm(payload, {"usage": {"prompt_tokens": 1}}, model=model, prompt=prompt, step=step, actor=actor)

    rec = Recorder(store=tmp_path, handle_signals=False, flush_events=7)
    session = rec.session("s", actor=actor, pattern=pattern)
    for _ in range(20):
        record(session)
        with rec.unit():
            record(session)
    rec.close()
    del session, rec
    gc.collect()  # the recorder and its queue refer to each other
    assert [sys.getrefcount(o) for o in watched] == before


def test_a_flush_over_the_text_limit_of_a_part_writes_several_parts_and_loses_nothing(tmp_path: Path) -> None:
    """An Arrow string column holds under 2 GiB: a flush with more text than that cuts the queue into
    parts that fit. Shown with a limit of 2 kB instead of 2 GiB."""
    from sdbctl.sdb.events.queue import NativeQueue

    original = NativeQueue.text_limit
    NativeQueue.text_limit = 2_000
    try:
        with Recorder(store=tmp_path, run_id="cut", handle_signals=False, flush_interval=60) as rec:
            s = rec.session("s")
            for i in range(40):
                s.state("note", {"text": "x" * 200, "i": i})
    finally:
        NativeQueue.text_limit = original
    parts = sorted((tmp_path / "runs" / "cut").glob("*.parquet"))
    assert len(parts) >= 4
    seqs = pa.concat_tables([pq.read_table(p) for p in parts]).column("seq").to_pylist()
    assert seqs == list(range(40))


def test_the_c_queue_stays_the_list_queue_through_cycles_of_appends_flushes_and_drops() -> None:
    """A drop only moves the queue's start; the rows are moved to the front when the arrays fill.
    Through many such cycles (the arrays start at 1,024 rows and 64 KiB of payload, so both kinds of
    compaction happen), the C queue's batches stay the pure-Python queue's."""
    import random

    rng = random.Random(7)
    c_queue, py_queue = new_queue(10**6, lambda: None, print), ListQueue(10**6, lambda: None, print)
    seq = 0
    for _ in range(40):
        for _ in range(rng.randrange(1, 900)):
            text = json.dumps("x" * rng.randrange(0, 300)).encode()
            row = (f"s{seq % 7}", seq, None, seq - 1 if seq else None, seq * 1000, "state", "agent", "", "n", None,
                   None, text, seq, "ok", None, None, None)  # fmt: skip
            c_queue.append(row)
            py_queue.append(row)
            seq += 1
        n, c_batch = c_queue.batch("r")
        assert (n, c_batch) == py_queue.batch("r")
        cut = rng.randrange(0, n + 1)
        c_queue.drop(cut)
        py_queue.drop(cut)
        assert len(c_queue) == len(py_queue)
