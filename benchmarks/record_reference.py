"""Recording the whole reference workload: all 7,043 Telco customers, P5 spine against P3 spine.

Runs ``sdbctl record contract-renewal`` as a process for each spine (the issue's "must show"), and
prints wall time, events, events/s and peak memory of each, and the ratio between the spines.

    python -m benchmarks.record_reference [--sessions N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe


def record(sdbctl: str, work: Path, spine: str, sessions: int | None) -> tuple[float, dict[str, object], float]:
    cmd = [sdbctl, "record", "contract-renewal", "--spine", spine, "--run-id", spine, "--json"]
    if sessions:
        cmd += ["--sessions", str(sessions)]
    # a wrapper process of its own, so the peak RSS it reports is this recording's alone
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True, "
        "check=True); print(r.stdout); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=work, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    *body, peak_kb = out.stdout.strip().splitlines()
    return seconds, json.loads("\n".join(body)), int(peak_kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=None, help="default: all 7,043 customers")
    opts = parser.parse_args()
    sdbctl = shutil.which("sdbctl") or str(Path(sys.executable).with_name("sdbctl"))
    print(describe())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spine in ("p5", "p3"):
            seconds, summary, peak = record(sdbctl, Path(tmp), spine, opts.sessions)
            results[spine] = seconds
            events = int(str(summary["events"]))
            print(
                f"spine {spine}: {summary['sessions']:,} sessions, {events:,} events, {seconds:6.1f} s "
                f"({events / seconds:,.0f} events/s), peak RSS {peak:,.0f} MB, terminal {summary['terminal_states']}"
            )
    print(f"ratio P3 / P5 time: {results['p3'] / results['p5']:.2f}x")


if __name__ == "__main__":
    main()
