"""Diff two closed-loop runs of 1,000,000 events each by commit (whole-session alignment) and, on the
same runs, with today's per-step differ (``--align step``): wall time, peak memory, ratio.

Each run holds sessions of ten tool calls, each an ``llm`` event, its ``action`` and the ``effect``
of the action (three events per call), written through the recorder; a third of the calls are reads
(``get_*``, declared read-only). In the candidate, ``--diverge`` of the sessions (default half) open
with one extra lookup, which shifts every later step, and change one argument of one write (the
case of the issue: one inserted read, one changed commit). Each diff
runs in a fresh process of its own, so that its peak RSS is its own.

    python -m benchmarks.diff_sessions [--events 1000000] [--diverge 0.5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe
from sdbctl.recorders.sdk import Recorder

CALLS = 10


def _write(store: Path, run_id: str, sessions: int, diverge: float) -> None:
    with Recorder(store=store, run_id=run_id, handle_signals=False) as rec:
        for s in range(sessions):
            sess = rec.session(f"s{s:06d}")
            changed = run_id == "cand" and (s % 100) < diverge * 100
            calls: list[tuple[str, dict[str, object]]] = [("get_account", {"account": f"A-{s}"})] if changed else []
            for k in range(CALLS):
                if k % 3 == 0:
                    calls.append(("get_order", {"order": f"O-{s}-{k}"}))
                else:
                    amount = (s * 7 + k) % 90 + (5 if changed and k == 4 else 0)
                    calls.append(("refund", {"order": f"O-{s}-{k}", "amount": amount}))
            for k, (name, args) in enumerate(calls):
                step = f"call-{k:03d}"
                llm = sess.llm({"messages": [{"role": "user", "content": f"s{s} k{k}"}]}, {}, model="m", step=step)
                act = sess.action(name, args, step=step, parent=llm)
                sess.effect(name, {"ok": True}, parent=act)


def _one(store: str, alignment: str) -> None:
    """In a child process: one diff, its time and its own peak RSS, as JSON."""
    from sdbctl.sdb.diff import DiffConfig, diff_runs
    from sdbctl.sdb.results import as_json
    from sdbctl.sdb.store import Store

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = diff_runs(Store.open(store), "base", "cand", DiffConfig(read_only=("get_*",)), alignment=alignment)
    seconds = time.perf_counter() - t0
    s = result.summary
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "before_mb": before / 1024,
                "comparison": s.comparison,
                "write": as_json(s.by_layer["write"]),
                "divergences": s.divergences,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--diverge", type=float, default=0.5)
    parser.add_argument("--child", nargs=2, metavar=("STORE", "ALIGN"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        _one(*opts.child)
        return
    print(describe())
    sessions = opts.events // (3 * CALLS)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / ".sdb"
        _write(store, "base", sessions, opts.diverge)
        _write(store, "cand", sessions, opts.diverge)
        print(f"runs: {sessions * CALLS * 3:,} events each, {sessions:,} sessions, {opts.diverge:.0%} diverged")
        found = {}
        for alignment in ("auto", "step"):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.diff_sessions", "--child", str(store), alignment],
                capture_output=True,
                text=True,
                check=True,
            )
            found[alignment] = json.loads(out.stdout.strip().splitlines()[-1])
    commit, step = found["auto"], found["step"]
    for name, r in (("by commit (whole sessions)", commit), ("by step (today's differ)", step)):
        w = r["write"]
        print(
            f"{name}: {r['seconds']:.2f} s, peak RSS {r['peak_mb']:.0f} MB; write layer "
            f"{w['steps_diverged']:,}/{w['steps_compared']:,} units and {w['sessions_diverged']:,}/"
            f"{w['sessions_compared']:,} sessions diverged; {r['divergences']:,} divergences in all layers"
        )
    print("targets for the commit comparison: <= 3 s and <= 1024 MB peak")
    print(f"ratio (per-step time / commit time): {step['seconds'] / commit['seconds']:.2f}x")


if __name__ == "__main__":
    main()
