"""Real logs at their real size: one 1,000-turn conversation of about 1 MB through every command, and
a corpus of 10,000 sessions of 30 calls imported, with linear storage of the requests.

Each command runs as its own ``sdbctl`` process, so its peak memory is its own (``wait4``'s
``ru_maxrss``). The conversation is tau-bench-shaped (a system prompt, user turns, tool calls with
their results, replies); its messages are of real size (a tool result of ~700 bytes).

    python -m benchmarks.long_conversations [--turns 1000] [--sessions 10000] [--calls 30]

``--sessions 0`` leaves the corpus out. Run with another installation's Python (the script imports
only ``benchmarks``) to measure that version: the "before" figures in benchmarks/README.md are
b4509d1's, the commit before linear storage.

Targets (issue 22): the 1,000-turn conversation imports in <= 3 s, and ``show``, ``export --format
chat``, ``diff`` and ``replay`` on it each peak at <= 300 MB; the corpus imports at >= 5 MB/s of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import describe

SYSTEM = "You are an airline customer service agent. " + "Follow the policy below strictly. " * 60
TOOLS = ("get_user_details", "get_reservation_details", "search_direct_flight", "update_reservation_flights")


def _conversation(sid: str, calls: int, rng: random.Random) -> dict[str, Any]:
    """A tau-bench-shaped conversation with ``calls`` assistant messages."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    messages.append({"role": "user", "content": f"Hi, I need to change my flight. My user id is {sid}."})
    for k in range(calls):
        if k % 3 == 2:
            messages.append({"role": "assistant", "content": f"I have checked step {k}: " + "details " * 20})
            messages.append({"role": "user", "content": f"Thanks, please go on with option {rng.randint(1, 9)}."})
            continue
        name = TOOLS[k % len(TOOLS)]
        call_id = f"call_{sid}_{k}"
        args = json.dumps({"user_id": sid, "reservation_id": f"R{rng.randint(10000, 99999)}", "k": k})
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}],
            }
        )
        result = {"id": f"R{k}", "flights": [{"number": f"HAT{rng.randint(100, 999)}", "seats": 9} for _ in range(24)]}
        messages.append({"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)})
    return {"id": sid, "model": "gpt-4o", "outcome": 1.0, "messages": messages}


def _run(args: list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> tuple[float, float | str]:
    """Run ``sdbctl ARGS`` in ``cwd``: (seconds, peak MB of that process, or why it failed).

    Only the exit codes in ``ok`` count as a run (``diff`` exits 1 on a divergence): a command that
    failed to start must not print as a fast one."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdbctl.cli.main", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) not in ok:
        err = proc.stderr.read().decode().strip().splitlines() if proc.stderr else []
        return seconds, "failed: " + (err[-1][:60] if err else f"exit {os.waitstatus_to_exitcode(status)}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=30)
    opts = parser.parse_args()
    print(describe())
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        long = root / "long.json"
        long.write_text(json.dumps(_conversation("u1", opts.turns, rng)))
        size = long.stat().st_size
        print(f"one conversation of {opts.turns} calls, {size / 1e6:.2f} MB of JSON")
        rows = []
        seconds, peak = _run(["import", "chat", str(long), "--run-id", "long"], root)
        rows.append(("import chat", seconds, peak, "<= 3 s"))
        for label, args in (
            ("show", ["show", "long"]),
            ("show --full --json", ["show", "long", "--full", "--json", "--limit", "0"]),
            ("export --format chat", ["export", "long", "--format", "chat", "-o", str(root / "out.jsonl")]),
            ("replay --model recorded", ["replay", "long", "--model", "recorded", "--run-id", "again", "--no-cache"]),
            ("diff", ["diff", "long", "again"]),
        ):
            seconds, peak = _run(args, root, ok=(0, 1) if label == "diff" else (0,))
            rows.append((label, seconds, peak, "<= 300 MB"))
        stored = sum(p.stat().st_size for p in (root / ".sdb" / "runs" / "long").glob("events-*.parquet"))
        print(f"stored: {stored / 1e6:.2f} MB of Parquet")
        print(f"{'command':<26} {'seconds':>8} {'peak MB':>8}  target")
        for label, seconds, peak, target in rows:
            shown = f"{peak:>8.0f}" if isinstance(peak, float) else peak
            print(f"{label:<26} {seconds:>8.2f} {shown}  {target}")

        if not opts.sessions:
            return
        corpus = root / "corpus.jsonl"
        with corpus.open("w") as fh:
            for s in range(opts.sessions):
                fh.write(json.dumps(_conversation(f"s{s:05d}", opts.calls, rng)) + "\n")
        size = corpus.stat().st_size
        seconds, peak = _run(["import", "chat", str(corpus), "--run-id", "corpus"], root)
        if isinstance(peak, str):
            print(f"corpus: import {peak}")
            return
        print(
            f"corpus: {opts.sessions} sessions x {opts.calls} calls, {size / 1e6:.0f} MB of JSON imported in "
            f"{seconds:.1f} s = {size / 1e6 / seconds:.1f} MB/s (target >= 5 MB/s), peak {peak:.0f} MB"
        )


if __name__ == "__main__":
    main()
