"""`sdbctl query` of a group-by over 1,000,000 events, end to end as a process.

Records a store of N events (the sample agent's six events per episode, as in
``recorder_throughput``), exports the same run as JSONL, then times, each as a fresh process:

- ours: ``sdbctl query "SELECT kind, name, count(*), avg(latency_ms) ... GROUP BY ALL" --json``
- peer: a Python process that streams the JSONL file with the stdlib json module and groups with a dict
  (what one writes without a query engine over the logs).

Also prints ``sdbctl --help`` start-up time (the issue asks for under 150 ms) against ``python -c pass``.

    python -m benchmarks.query_groupby [--events N] [--repeats R]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe
from benchmarks.recorder_throughput import record_ours
from benchmarks.workload import episodes

SQL = (
    "SELECT kind, name, count(*) AS n, avg(latency_ms) AS avg_latency_ms, sum(tokens_in) AS tokens_in "
    "FROM events GROUP BY ALL ORDER BY n DESC, kind, name"
)
PEER = r"""
import json, sys
groups = {}
with open(sys.argv[1], encoding="utf-8") as fh:
    for line in fh:
        e = json.loads(line)
        g = groups.setdefault((e["kind"], e["name"]), [0, 0.0, 0, 0])
        g[0] += 1
        if e["latency_ms"] is not None:
            g[1] += e["latency_ms"]; g[2] += 1
        g[3] += e["tokens_in"] or 0
rows = [{"kind": k, "name": n, "n": c, "avg_latency_ms": (s / m if m else None), "tokens_in": t}
        for (k, n), (c, s, m, t) in groups.items()]
rows.sort(key=lambda r: (-r["n"], r["kind"], r["name"]))
json.dump(rows, sys.stdout)
"""


def timed(cmd: list[str], cwd: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    sdbctl = shutil.which("sdbctl") or str(Path(sys.executable).with_name("sdbctl"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        record_ours(episodes(opts.events), work / ".sdb")
        subprocess.run([sdbctl, "export", "bench", "--out", "events.jsonl"], cwd=work, check=True)
        (work / "peer.py").write_text(PEER)
        ours = timed([sdbctl, "query", SQL, "--json"], work, opts.repeats)
        peer = timed([sys.executable, "peer.py", "events.jsonl"], work, opts.repeats)
        help_s = timed([sdbctl, "--help"], work, opts.repeats * 2)
        bare = timed([sys.executable, "-c", "pass"], work, opts.repeats * 2)
        events = subprocess.run(
            [sdbctl, "query", "SELECT count(*) AS n FROM events", "--csv"], cwd=work, check=True, capture_output=True
        ).stdout.split()[-1]
    print(describe())
    print(f"events in the store: {int(events):,}")
    print(f"sdbctl query (group-by, --json), process: {ours * 1000:8.0f} ms")
    print(f"python + json over JSONL, process:        {peer * 1000:8.0f} ms")
    print(f"ratio (peer / sdbctl):                    {peer / ours:8.1f}x")
    print(f"sdbctl --help, process:                   {help_s * 1000:8.0f} ms  (python -c pass: {bare * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
