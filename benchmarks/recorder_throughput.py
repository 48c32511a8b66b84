"""1,000,000 events through the recorder to Parquet, against writing them as JSONL with stdlib json.

Both sides record the same six events per episode of the sample renewal agent (input, llm with the
full request and response, action, gate, effect, state) for real Telco customers, with the same
columns. Timed from the first event to the moment the file is closed on disk (the recorder's close
flushes and publishes every part). Prints events/s, bytes on disk, and the ratios.

Each side runs ``--repeats`` times (default 3), alternating; the medians are printed.

    python -m benchmarks.recorder_throughput [--events N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.machine import describe
from benchmarks.workload import EVENTS_PER_SESSION, PROMPT, Episode, episodes
from sdbctl.fixtures.sample_run import MODEL
from sdbctl.recorders.sdk import Recorder


def record_ours(eps: list[Episode], store: Path) -> float:
    t0 = time.perf_counter()
    with Recorder(store=store, run_id="bench", handle_signals=False) as rec:
        for ep in eps:
            s = rec.session(ep.session_id)
            s.input("contract", ep.contract)
            llm = s.llm(ep.request, ep.response, model=MODEL, prompt=PROMPT, step="day-030/offer")
            act = s.action("propose_offer", ep.args, step="day-030/offer", parent=llm)
            s.gate("policy:v7", "allow", parent=act)
            s.effect("propose_offer", {"sent": True}, parent=act)
            s.state("offer_sent", {"discount_pct": ep.args["discount_pct"]}, parent=act)
    return time.perf_counter() - t0


def record_jsonl(eps: list[Episode], path: Path) -> float:
    """The peer: one JSON object per event, every column, payload nested, sort_keys like ours."""
    run_id = uuid.uuid4().hex
    dumps = json.dumps
    t0 = time.perf_counter()
    with open(path, "w", encoding="utf-8") as fh:
        write = fh.write
        for ep in eps:
            events = (
                ("input", "contract", ep.contract, None, None),
                ("llm", "offer", {"request": ep.request, "response": ep.response}, MODEL, PROMPT),
                ("action", "propose_offer", {"args": ep.args}, None, None),
                ("gate", "policy:v7", {"decision": "allow", "reason": None}, None, None),
                ("effect", "propose_offer", {"result": {"sent": True}}, None, None),
                ("state", "offer_sent", {"discount_pct": ep.args["discount_pct"]}, None, None),
            )
            for seq, (kind, name, payload, model, prompt) in enumerate(events):
                row = {
                    "run_id": run_id,
                    "session_id": ep.session_id,
                    "seq": seq,
                    "step": "day-030/offer",
                    "parent": None if seq < 2 else 2,
                    "ts": time.time_ns() // 1000,
                    "kind": kind,
                    "actor": "agent",
                    "pattern": "",
                    "name": name,
                    "model": model,
                    "prompt": prompt,
                    "payload": payload,
                    "status": "ok",
                }
                write(dumps(row, sort_keys=True, separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    eps = episodes(opts.events)
    n = len(eps) * EVENTS_PER_SESSION
    ours, peer = [], []
    for _ in range(opts.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            ours.append(record_ours(eps, Path(tmp) / "store"))
            ours_bytes = sum(p.stat().st_size for p in (Path(tmp) / "store" / "runs" / "bench").glob("*.parquet"))
            peer.append(record_jsonl(eps, Path(tmp) / "events.jsonl"))
            peer_bytes = (Path(tmp) / "events.jsonl").stat().st_size
    ours_s, peer_s = statistics.median(ours), statistics.median(peer)
    print(describe())
    print(f"events: {n:,} ({len(eps):,} sessions x {EVENTS_PER_SESSION}), median of {opts.repeats}")
    print(f"sdbctl recorder -> Parquet: {n / ours_s:>12,.0f} events/s  {ours_bytes / 1e6:8.1f} MB")
    print(f"stdlib json -> JSONL:       {n / peer_s:>12,.0f} events/s  {peer_bytes / 1e6:8.1f} MB")
    print(f"speed ratio (ours / JSONL): {peer_s / ours_s:6.2f}x")
    print(f"size ratio (JSONL / ours):  {peer_bytes / ours_bytes:6.1f}x smaller")


if __name__ == "__main__":
    main()
