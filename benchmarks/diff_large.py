"""Diff two 1,000,000-event runs with 2% divergence: wall time, peak memory, and the ratio against
DeepDiff run on every aligned pair.

Each run holds N/2 model calls (``llm``) and N/2 actions (their children) over N/20 sessions of ten
steps, written through the recorder; the candidate changes one argument of 2% of the actions. The
peer is DeepDiff on every aligned pair of actions, as one would without a digest fast path: measured
on a sample of 2,000 pairs and scaled to all pairs (said so in the output).

    python -m benchmarks.diff_large [--events 1000000] [--rate 0.02]
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

from deepdiff import DeepDiff

from benchmarks.machine import describe
from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.diff import diff_runs
from sdbctl.sdb.store import Store

STEPS = 10


def _write(store: Path, run_id: str, pairs: int, rate: float, seed: int) -> None:
    rng = random.Random(seed)
    with Recorder(store=store, run_id=run_id, handle_signals=False) as rec:
        for s in range(pairs // STEPS):
            sess = rec.session(f"s{s:06d}")
            for k in range(STEPS):
                step = f"step-{k:02d}"
                llm = sess.llm(
                    {"messages": [{"role": "user", "content": f"s{s} k{k}"}]}, {"choices": []}, model="m", step=step
                )
                pct = (s * 7 + k) % 30 + (5 if rate and rng.random() < rate else 0)
                args = {"customer_id": f"C-{s:06d}", "discount_pct": pct, "channel": "email"}
                sess.action("propose_offer", args, step=step, parent=llm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=0.02)
    opts = parser.parse_args()
    print(describe())
    pairs = opts.events // 2
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / ".sdb"
        _write(store, "base", pairs, 0.0, 1)
        _write(store, "cand", pairs, opts.rate, 2)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        result = diff_runs(Store.open(store), "base", "cand")
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sample = 2000
    a = {"customer_id": "C-000001", "discount_pct": 7, "channel": "email"}
    b = {"customer_id": "C-000001", "discount_pct": 12, "channel": "email"}
    t0 = time.perf_counter()
    for i in range(sample):
        DeepDiff(a, b if i % 50 == 0 else dict(a))
    per_pair = (time.perf_counter() - t0) / sample
    peer = per_pair * pairs
    s = result.summary
    print(
        f"runs: {opts.events:,} events each ({pairs:,} actions), {s.steps_diverged:,} steps diverged "
        f"({s.step_divergence_rate:.2%})"
    )
    print(
        f"sdbctl diff: {seconds:.2f} s (target <= 3 s), peak RSS {peak / 1024:.0f} MB "
        f"(before the diff: {before / 1024:.0f} MB; target <= 1024 MB)"
    )
    print(
        f"DeepDiff on every aligned pair: {per_pair * 1e6:.0f} us/pair measured on {sample:,} pairs, scaled to "
        f"{pairs:,} pairs: {peer:.1f} s"
    )
    print(f"ratio (DeepDiff on every pair / sdbctl diff): {peer / seconds:.1f}x")


if __name__ == "__main__":
    main()
