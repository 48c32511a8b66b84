"""Replay against a slow OpenAI-compatible server: how close to ideal throughput the engine gets.

Starts the test server (``python -m tests.llm_server 0.1``: a real HTTP server on 127.0.0.1 that
answers like ``sim:renewal@v1`` after 100 ms) as its own process, records enough contract-renewal
sessions for N llm steps, and replays them with ``openai:MODEL --base-url ... --concurrency C
--no-cache`` in this process. Prints the wall time, the ideal (N x 0.1 s / C), their ratio, and the
engine's own CPU time per step.

    python -m benchmarks.replay_throughput [--steps 5000] [--concurrency 50] [--delay 0.1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import sdbctl.fixtures.workloads
from benchmarks.machine import describe
from sdbctl.recorders.workload import record_workload
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.store import Store, connect, run_query


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.1)
    opts = parser.parse_args()
    sdbctl.fixtures.workloads.register_all()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / ".sdb"
        sessions = int(opts.steps / 3.2) + 20
        record_workload(
            load_agent("contract-renewal"), "contract-renewal", sessions=sessions, store=str(store), run_id="src"
        )
        con = connect(Store.open(store), "src")
        steps = run_query(con, "SELECT count(*) FROM events WHERE kind = 'llm'")[1][0][0]
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.llm_server", str(opts.delay)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            result = replay(
                Store.open(store),
                "src",
                ReplayOptions(
                    model="openai:bench", base_url=url, concurrency=opts.concurrency, cache=False, run_id="bench"
                ),
            )
        finally:
            server.terminate()
            server.wait()
    ideal = steps * opts.delay / opts.concurrency
    print(
        f"steps replayed: {result.steps_done:,} (errors {result.errors}, retries {result.retries}), "
        f"concurrency {opts.concurrency}, server delay {opts.delay * 1000:.0f} ms"
    )
    print(
        f"wall time: {result.seconds:.2f} s   ideal: {ideal:.2f} s   ratio wall / ideal: {result.seconds / ideal:.3f}x "
        f"({ideal / result.seconds:.0%} of ideal throughput)"
    )
    print(f"engine CPU time: {result.cpu_seconds_per_step * 1000:.2f} ms per step")


if __name__ == "__main__":
    main()
