"""Replay against a slow OpenAI-compatible server: how close to ideal throughput the engine gets.

Starts the test server (``python -m tests.llm_server 0.1``: a real HTTP server on 127.0.0.1 that
answers like ``sim:renewal@v1`` after 100 ms) as its own process, records enough contract-renewal
sessions for N llm steps, and replays them with ``openai:MODEL --base-url ... --concurrency C
--no-cache`` in this process. Prints the wall time, the ideal (N x 0.1 s / C), their ratio, and the
engine's own CPU time per step.

Then the response cache's cost: more recorded steps replayed under a simulator (``sim:renewal@v2``,
whose answers cost almost nothing, so the engine's own work is all there is to see) three ways in
this process, in turn, ``--rounds`` times: without the cache (``--no-cache``), with an empty cache (every
answer looked up, missed and written) and with that cache full (every answer a hit). Prints each
one's steps/s (median of the rounds) and the cache-writing/uncached ratio beside its target (the cache
costs <= 10% of the uncached throughput).

    python -m benchmarks.replay_throughput [--steps 5000] [--concurrency 50] [--delay 0.1]
                                           [--cache-steps 20000] [--rounds 3] [--only server|cache]
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def _record(store: Path, steps: int) -> int:
    """Record enough contract-renewal sessions for about ``steps`` llm steps; the steps recorded."""
    sessions = int(steps / 3.2) + 20
    record_workload(
        load_agent("contract-renewal"), "contract-renewal", sessions=sessions, store=str(store), run_id="src"
    )
    con = connect(Store.open(store), "src")
    return int(run_query(con, "SELECT count(*) FROM events WHERE kind = 'llm'")[1][0][0])


CACHE_TARGET = 0.90  #: the cache costs <= 10% of the uncached throughput


def cache_cost(steps: int, rounds: int, concurrency: int) -> None:
    """Uncached, cache-writing and cache-hit replays of one source under ``sim:renewal@v2``, in turn."""
    figures: dict[str, list[float]] = {"uncached": [], "cache writing": [], "cache hits": []}
    cpu: dict[str, list[float]] = {name: [] for name in figures}  # this process's CPU us per step
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / ".sdb"
        os.environ["SDB_CACHE_DIR"] = str(Path(tmp) / "machine-cache")  # this benchmark's own cache
        recorded = _record(store, steps)
        for k in range(rounds):
            for name, cache in (("uncached", False), ("cache writing", True), ("cache hits", True)):
                if name == "cache writing":
                    for old in (Path(tmp) / "machine-cache").rglob("responses.sqlite*"):
                        old.unlink()  # an empty cache: every answer is looked up, missed and written
                opts = ReplayOptions(
                    model="sim:renewal@v2", concurrency=concurrency, cache=cache, run_id=f"r{k}-{name.split()[-1]}"
                )
                result = replay(Store.open(store), "src", opts)
                expected = (result.steps_done, 0) if name != "cache hits" else (0, result.steps_done)
                assert (result.model_calls, result.cache_hits) == expected, (name, result)
                figures[name].append(result.steps_done / result.seconds)
                cpu[name].append(result.cpu_seconds_per_step * 1e6)
    rates = {name: statistics.median(values) for name, values in figures.items()}
    print(
        f"\nresponse cache: {recorded:,} llm steps under sim:renewal@v2, concurrency {concurrency}, median of {rounds}"
    )
    for name, rate in rates.items():
        each = ", ".join(f"{v:,.0f}" for v in figures[name])
        print(f"  {name:<14} {rate:8,.0f} steps/s  ({each});  CPU {statistics.median(cpu[name]):,.0f} us/step")
    ratio = rates["cache writing"] / rates["uncached"]
    verdict = "met" if ratio >= CACHE_TARGET else "NOT met"
    print(
        f"cache writing / uncached: {ratio:.3f} (the cache costs {1 - ratio:.1%}; target: costs <= "
        f"{1 - CACHE_TARGET:.0%}, ratio >= {CACHE_TARGET:.2f}): {verdict}"
    )
    rounds_wall = (w / u for w, u in zip(figures["cache writing"], figures["uncached"], strict=True))
    rounds_cpu = (u / w for w, u in zip(cpu["cache writing"], cpu["uncached"], strict=True))
    print(
        f"each round, cache writing / uncached: {', '.join(f'{r:.3f}' for r in rounds_wall)} "
        f"(by CPU per step: {', '.join(f'{r:.3f}' for r in rounds_cpu)})"
    )
    print(f"cache hits / uncached: {rates['cache hits'] / rates['uncached']:.3f}")
    # the engine's CPU per step moves less than its wall time with the machine's neighbours
    per_step = {name: statistics.median(values) for name, values in cpu.items()}
    print(
        f"by CPU per step, uncached / cache writing: {per_step['uncached'] / per_step['cache writing']:.3f}, "
        f"uncached / cache hits: {per_step['uncached'] / per_step['cache hits']:.3f}"
    )
    print(describe())  # the machine at the end: a figure changed under load says so


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--cache-steps", type=int, default=20_000, help="steps of the cache-cost part")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the cache-cost part (median)")
    parser.add_argument("--only", choices=("server", "cache"), help="run one part only")
    opts = parser.parse_args()
    sdbctl.fixtures.workloads.register_all()
    print(describe())
    if opts.only != "cache":
        server_throughput(opts.steps, opts.concurrency, opts.delay)
    if opts.only != "server":
        cache_cost(opts.cache_steps, opts.rounds, 64)


def server_throughput(n_steps: int, concurrency: int, delay: float) -> None:
    """Replay against the slow test server: wall time against the ideal."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / ".sdb"
        steps = _record(store, n_steps)
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.llm_server", str(delay)],
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
                ReplayOptions(model="openai:bench", base_url=url, concurrency=concurrency, cache=False, run_id="bench"),
            )
        finally:
            server.terminate()
            server.wait()
    ideal = steps * delay / concurrency
    print(
        f"steps replayed: {result.steps_done:,} (errors {result.errors}, retries {result.retries}), "
        f"concurrency {concurrency}, server delay {delay * 1000:.0f} ms"
    )
    print(
        f"wall time: {result.seconds:.2f} s   ideal: {ideal:.2f} s   ratio wall / ideal: {result.seconds / ideal:.3f}x "
        f"({ideal / result.seconds:.0%} of ideal throughput)"
    )
    print(f"engine CPU time: {result.cpu_seconds_per_step * 1000:.2f} ms per step")


if __name__ == "__main__":
    main()
