"""The in-process recorder: nothing lost, seq gap-free, threads and asyncio, flushing by size and time."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.errors import PayloadError, SdbError
from sdbctl.sdb.events import MemorySink, read_events
from sdbctl.sdb.store import Store, connect, run_query
from tests.conftest import wait_until


def test_eight_threads_lose_no_event_and_seq_is_gap_free(store: Path) -> None:
    threads, per_thread = 8, 10_000
    with Recorder(store=store, run_id="mt", flush_events=7_000, flush_interval=0.05) as rec:
        shared = rec.session("shared")

        def work(i: int) -> None:
            own = rec.session(f"own-{i}")
            for n in range(per_thread // 2):
                shared.action("tick", {"thread": i, "n": n})
                own.state("s", {"n": n})

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    con = connect(Store.open(store), "mt")
    _, rows = run_query(
        con, "SELECT session_id, count(*), min(seq), max(seq), count(DISTINCT seq) FROM events GROUP BY 1"
    )
    total = sum(r[1] for r in rows)
    assert total == threads * per_thread
    for session_id, n, lo, hi, distinct in rows:
        assert (lo, hi, distinct) == (0, n - 1, n), session_id
    _, pairs = run_query(con, "SELECT count(DISTINCT (payload)) FROM events WHERE session_id = 'shared'")
    assert pairs == [(threads * per_thread // 2,)]
    assert Store.open(store).manifest("mt").parts > 1


def test_usable_from_asyncio(store: Path) -> None:
    async def episode(rec: Recorder, i: int) -> None:
        async with rec.session(f"s{i}") as s:
            for n in range(100):
                s.action("a", {"n": n})
                await asyncio.sleep(0)

    async def main() -> None:
        async with Recorder(store=store, run_id="aio") as rec:
            await asyncio.gather(*(episode(rec, i) for i in range(20)))

    asyncio.run(main())
    manifest = Store.open(store).manifest("aio")
    assert (manifest.events, manifest.sessions, manifest.status) == (2000, 20, "complete")


def test_flushes_by_time_while_running(store: Path) -> None:
    with Recorder(store=store, run_id="timed", flush_interval=0.05) as rec:
        rec.session("s").input("x", 1)
        wait_until(lambda: Store.open(store).manifest("timed").events > 0, 5, "a flush by time")
        assert Store.open(store).manifest("timed").events == 1
        assert Store.open(store).manifest("timed").status == "partial"
    assert Store.open(store).manifest("timed").status == "complete"


def test_flushes_by_size(store: Path) -> None:
    with Recorder(store=store, run_id="sized", flush_events=100, flush_interval=60) as rec:
        s = rec.session("s")
        for n in range(1000):
            s.state("n", n)
        # flush_interval is 60 s: only the size trigger can write these before we close
        wait_until(lambda: Store.open(store).manifest("sized").events >= 100, 5, "a flush by size")


def test_bad_payload_raises_and_takes_no_seq(store: Path) -> None:
    with Recorder(store=store, run_id="bad") as rec:
        s = rec.session("s")
        assert s.input("a", 1) == 0
        with pytest.raises(PayloadError):
            s.input("b", object())
        with pytest.raises(PayloadError):
            s.action("c", {}, status="weird")
        assert s.input("c", 2) == 1
    seqs = read_events(Store.open(store).part_paths("bad")).column("seq").to_pylist()
    assert seqs == [0, 1]


def test_session_reopened_continues_its_seq(store: Path) -> None:
    with Recorder(store=store, run_id="re") as rec:
        with rec.session("s") as s:
            assert s.input("a", 1) == 0
        with rec.session("s") as s:
            assert s.input("a", 2) == 1


def test_exception_leaves_partial_run_with_everything_recorded(store: Path) -> None:
    with pytest.raises(RuntimeError), Recorder(store=store, run_id="boom") as rec:
        rec.session("s").input("a", 1)
        raise RuntimeError("agent crashed")
    manifest = Store.open(store).manifest("boom")
    assert (manifest.status, manifest.events, manifest.interrupted) == ("partial", 1, "RuntimeError")


def test_run_id_is_given_or_generated(store: Path) -> None:
    with Recorder(store=store) as rec:
        rec.session("s").input("x", 1)  # a run with no event is never complete
        generated = rec.run_id
    assert len(generated) > 10 and Store.open(store).manifest(generated).status == "complete"


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.action("a", {}, step=7),
        lambda s: s.action("a", {}, parent="3"),
        lambda s: s.action(None, {}),
        lambda s: s.state("x", {}, actor=5),
        lambda s: s.llm({}, {}, model="m", tokens_in="12"),
        lambda s: s.llm({}, {}, model="m", latency_ms="x"),
    ],
)
def test_wrongly_typed_fields_are_refused_when_recorded_and_nothing_is_lost(store: Path, call: Any) -> None:
    with Recorder(store=store, run_id="typed") as rec:
        s = rec.session("s")
        s.input("before", 1)
        with pytest.raises(PayloadError):
            call(s)
        s.input("after", 2)
    events = read_events(Store.open(store).part_paths("typed")).to_pylist()
    assert [(e["seq"], e["name"]) for e in events] == [(0, "before"), (1, "after")]
    assert Store.open(store).manifest("typed").status == "complete"


def test_recording_after_close_is_refused(store: Path) -> None:
    rec = Recorder(store=store, run_id="late")
    s = rec.session("s")
    s.input("x", 1)
    rec.close()
    with pytest.raises(SdbError, match="recorder is closed"):
        s.input("y", 2)
    assert Store.open(store).manifest("late").events == 1


def test_a_unit_is_never_split_by_a_flush(store: Path) -> None:
    with Recorder(store=store, run_id="units", flush_events=3, flush_interval=0.001) as rec:
        s = rec.session("s")
        for n in range(200):
            with rec.unit():
                for k in range(5):
                    s.state("k", {"n": n, "k": k})
                    time.sleep(0)  # give the writer every chance to run mid-unit
    parts = Store.open(store).part_paths("units")
    assert len(parts) > 1
    for part in parts:  # every part holds whole units of five events
        seqs = [int(x) for x in read_events([part]).column("seq").to_pylist() if x is not None]
        assert len(seqs) % 5 == 0 and min(seqs) % 5 == 0


DECISIONS = [True, False, None, "allow", " Approved ", "PASSED", "accept", "ok", "deny", "blocked", 1, {"ok": True}]


def test_the_recorder_and_the_memory_sink_read_a_gate_decision_alike(store: Path) -> None:
    """One rule for what a decision allows: the in-memory sink once allowed fewer words than the
    recorder ("passed", "accept" and any other case were gated there)."""
    sink = MemorySink()
    with Recorder(store=store, run_id="g", handle_signals=False) as rec:
        s = rec.session("s")
        for decision in DECISIONS:
            s.gate("policy", decision)
            sink.gate("policy", decision)
    table = read_events(Store.open(store).part_paths("g"))
    recorded = table.sort_by("seq").column("status").to_pylist()
    assert recorded == [e["status"] for e in sink.events]
    assert recorded == ["ok", "gated", "gated", "ok", "ok", "ok", "ok", "ok", "gated", "gated", "gated", "gated"]


@pytest.mark.parametrize("kw", [{"call_id": float("nan")}, {"call_id": "\ud800"}, {"status": ["ok"]}])
def test_a_bad_call_id_or_status_is_a_payload_error_and_takes_no_seq(store: Path, kw: dict[str, Any]) -> None:
    """call_id is written by the canonical-JSON rule too: a NaN was once written as null."""
    with Recorder(store=store, run_id="c", handle_signals=False) as rec:
        s = rec.session("s")
        with pytest.raises(PayloadError):
            s.action("propose_offer", {"a": 1}, **kw)
        assert s.action("propose_offer", {"a": 1}, call_id="c1") == 0
