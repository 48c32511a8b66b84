"""The load test: 100,000 sessions of the reference workload recorded, replayed under a simulator,
and diffed on this machine, each phase as its own process with its peak memory.

    python -m benchmarks.load_test [--sessions 100000] [--ray-workers 2] [--work DIR [--diff-only]]

Phases: ``sdbctl record contract-renewal --sessions N`` (the 7,043 Telco customers, read again with
``~K`` ids beyond them), ``sdbctl replay base --model sim:renewal@v2`` (local executor; with
``--ray-workers W`` also ``--executor ray --workers W``), ``sdbctl diff base cand``. Prints wall time,
events, events/s and peak RSS of each, and the diff's figures beside its targets (<= 10 s and
<= 1 GiB peak, with >= 50% of the sessions diverged). ``--diff-only`` measures the diff again on the
runs a ``--work`` folder holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe

# a wrapper process of its own, so the peak RSS it reports is that phase's alone (Ray's workers are
# separate processes: their memory is not in it, and is reported by the phase as it ran); the phase's
# whole output passed on (a replay's --json lists every session: cut, it was no JSON)
WRAPPER = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "sys.stderr.write(r.stderr[-2000:]); print(r.stdout); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


def phase(name: str, argv: list[str], work: Path) -> tuple[float, str, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *argv], cwd=work, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{name} failed ({out.returncode}): {out.stderr[-1000:]}")
    *body, peak_kb = out.stdout.strip().splitlines()
    return seconds, "\n".join(body), int(peak_kb) / 1024


def events(sdbctl: str, work: Path, run_id: str) -> int:
    out = subprocess.run([sdbctl, "runs", "--json"], cwd=work, capture_output=True, text=True, check=True)
    return next(int(r["events"]) for r in json.loads(out.stdout) if r["run_id"] == run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--ray-workers", type=int, default=0, help="also replay on a local Ray with W workers")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--work", help="keep the store in this directory; a recorded base there is reused")
    parser.add_argument("--diff-only", action="store_true", help="only diff the runs --work holds, again")
    args = parser.parse_args()
    if args.diff_only and not args.work:
        parser.error("--diff-only needs --work DIR (a folder of an earlier run)")
    print(describe())
    sdbctl = str(Path(sys.executable).with_name("sdbctl"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        again = ("diffs",) if args.diff_only else ("runs/cand", "runs/cand-ray", "diffs", "cache")
        for old in again:  # measured again on every run
            shutil.rmtree(work / ".sdb" / old, ignore_errors=True)
        rows = []
        if not (work / ".sdb" / "runs" / "base" / "run.json").exists():
            record = [sdbctl, "record", "contract-renewal", "--sessions", str(args.sessions), "--run-id", "base"]
            seconds, _, peak = phase("record", [*record, "--json"], work)
            rows.append(("record", seconds, events(sdbctl, work, "base"), peak))
        base_events = events(sdbctl, work, "base")
        replay = [
            sdbctl,
            "replay",
            "base",
            "--model",
            "sim:renewal@v2",
            "--concurrency",
            str(args.concurrency),
            "--json",
        ]
        if not args.diff_only:
            seconds, out, peak = phase("replay", [*replay, "--run-id", "cand"], work)
            steps = json.loads(out[out.index("{") :])["steps_done"]
            rows.append(("replay (local, steps)", seconds, steps, peak))
        if args.ray_workers and not args.diff_only:
            ray_argv = [
                *replay,
                "--run-id",
                "cand-ray",
                "--no-cache",
                "--executor",
                "ray",
                "--workers",
                str(args.ray_workers),
            ]
            seconds, out, peak = phase("replay on ray", ray_argv, work)
            rows.append(
                (
                    f"replay (ray x{args.ray_workers}, steps)",
                    seconds,
                    json.loads(out[out.index("{") :])["steps_done"],
                    peak,
                )
            )
        load = os.getloadavg()[0]  # a shared machine: the diff's wall time moves with the others' work
        seconds, out, peak = phase("diff", [sdbctl, "diff", "base", "cand", "--limit", "3"], work)
        rows.append(("diff (events of both runs)", seconds, base_events + events(sdbctl, work, "cand"), peak))
        diff = (seconds, peak, json.loads((work / ".sdb" / "diffs" / "base..cand" / "summary.json").read_text()), load)
        size = sum(p.stat().st_size for p in (work / ".sdb").rglob("*.parquet")) / 1e6
    print(f"\n{args.sessions:,} sessions, {base_events:,} recorded events; store {size:,.0f} MB of Parquet\n")
    print(f"{'phase':<28} {'seconds':>9} {'items':>11} {'items/s':>10} {'peak RSS':>10}")
    for name, secs, items, peak in rows:
        print(f"{name:<28} {secs:9.1f} {items:11,} {items / secs:10,.0f} {peak:8,.0f} MB")
    print(out.strip().splitlines()[-1] if out.strip() else "")
    seconds, peak, summary, load = diff
    share = summary["session_divergence_rate"]
    print(
        f"\ndiff: {summary['sessions_diverged']:,} of {summary['sessions_compared']:,} sessions diverged "
        f"({share:.1%}; the target is measured at >= 50%: {'yes' if share >= 0.5 else 'NO'}), "
        f"{summary['divergences']:,} divergences"
    )
    for what, got, target, unit in (("wall time", seconds, 10, "s"), ("peak RSS", peak, 1024, "MB")):
        print(f"  {what}: {got:,.1f} {unit} (target <= {target:,} {unit}: {'met' if got <= target else 'NOT met'})")
    print(f"  load average when the diff started: {load:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
