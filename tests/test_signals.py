"""A recording process that dies: SIGTERM and SIGINT lose nothing; SIGKILL loses at most the unflushed tail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sdbctl.sdb.events import read_events
from sdbctl.sdb.store import Store

AGENT = textwrap.dedent(
    """
    import sys, time
    from sdbctl.recorders.sdk import Recorder
    mode, store, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rec = Recorder(store=store, run_id="victim", flush_interval=float(sys.argv[4]), flush_events=10**9)
    s = rec.session("s")
    if mode == "wait":           # record n events, say so, then idle until a signal arrives
        for i in range(n):
            s.action("tick", {"i": i})
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
    else:                        # record forever, a little at a time
        i = 0
        while True:
            s.action("tick", {"i": i}); i += 1
            if i % 500 == 0:
                print(i, flush=True)
                time.sleep(0.01)
    """
)


def _start(tmp_path: Path, mode: str, n: int, interval: float) -> subprocess.Popen[str]:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen(
        [sys.executable, str(script), mode, str(tmp_path / "store"), str(n), str(interval)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _events(tmp_path: Path) -> list[int]:
    store = Store.open(tmp_path / "store")
    return [int(s) for s in read_events(store.part_paths("victim")).column("seq").to_pylist() if s is not None]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_lose_nothing(tmp_path: Path, signum: signal.Signals) -> None:
    # a flush interval of an hour: only the signal handler can have written the events
    proc = _start(tmp_path, "wait", 5000, 3600)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signum)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert sorted(_events(tmp_path)) == list(range(5000))
    manifest = Store.open(tmp_path / "store").manifest("victim")
    assert manifest.status == "partial" and manifest.events == 5000
    assert manifest.interrupted == signum.name


def test_sigkill_leaves_readable_parts_and_a_partial_run(tmp_path: Path) -> None:
    proc = _start(tmp_path, "loop", 0, 0.05)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if int(proc.stdout.readline()) >= 20_000 and Store.open(tmp_path / "store").manifest("victim").parts >= 3:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    manifest = Store.open(tmp_path / "store").manifest("victim")
    assert manifest.status == "partial" and manifest.parts >= 3
    seqs = sorted(_events(tmp_path))
    # every flushed part is readable, and what was lost is only a tail: the kept seqs are a prefix
    assert len(seqs) >= manifest.events > 0
    assert seqs == list(range(len(seqs)))
    leftovers = [p.name for p in (tmp_path / "store" / "runs" / "victim").iterdir() if p.name.endswith(".tmp")]
    assert all(name.startswith(".") for name in leftovers)


def test_sigterm_while_flushing_writes_each_event_once(tmp_path: Path) -> None:
    # flushing every 10 ms while recording: the signal often lands inside a flush, which must finish
    # before the handler closes the run; a duplicate or a hole in seq would show here
    proc = _start(tmp_path, "loop", 0, 0.01)
    assert proc.stdout is not None
    while int(proc.stdout.readline()) < 30_000:
        pass
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    seqs = _events(tmp_path)
    assert len(seqs) >= 30_000 and sorted(seqs) == list(range(len(seqs)))
    manifest = Store.open(tmp_path / "store").manifest("victim")
    assert (manifest.status, manifest.events, manifest.interrupted) == ("partial", len(seqs), "SIGTERM")


def test_recorders_closed_out_of_order_leave_ctrl_c_a_keyboard_interrupt(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal, time
        from sdbctl.recorders.sdk import Recorder
        r1 = Recorder(store={str(tmp_path)!r}, run_id="a")
        r2 = Recorder(store={str(tmp_path)!r}, run_id="b")
        r1.close(); r2.close()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)  # a KeyboardInterrupt cuts it short at once; only a lost signal waits it out
            print("no interrupt")
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "KeyboardInterrupt", (out.returncode, out.stderr)
