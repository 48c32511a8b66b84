"""The spine experiment: does a state-machine spine (P5) diverge less than an event-log spine (P3)
when the model changes?

Records the reference agent on both spines with ``sim:renewal@v1`` (the base), then, for each
candidate version, (1) runs the agent again closed-loop with the candidate model on the same
customers and seed, and diffs it against the base of its spine (step and session divergence,
committed terminal-outcome changes), and (2) replays the base in step mode under the candidate with
``--repeat 3`` for pass^k. The simulators see only the request; they cannot know which spine asked.
Last, the per-session step divergence rates of P3 and P5 (same customers) give a bootstrap 95%
interval of the P3 - P5 difference.

    python -m benchmarks.spines [--sessions 300] [--candidates v2,v3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import fixtures.workloads
from benchmarks.machine import describe
from recorders.workload import record_workload
from sdb.agents import load_agent
from sdb.diff.differ import diff_runs
from sdb.diff.drift import drift_test
from sdb.replay.engine import ReplayOptions, replay
from sdb.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--candidates", default="v2,v3")
    opts = parser.parse_args()
    fixtures.workloads.register_all()
    print(describe())
    rows = []
    rates: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / ".sdb")
        agent = load_agent("contract-renewal")
        for spine in ("p5", "p3"):
            record_workload(
                agent,
                "contract-renewal",
                sessions=opts.sessions,
                store=store,
                run_id=f"{spine}-base",
                options={"spine": spine},
            )
            for version in opts.candidates.split(","):
                model = f"sim:renewal@{version}"
                closed = f"{spine}-{version}-closed"
                record_workload(
                    agent,
                    "contract-renewal",
                    model=model,
                    sessions=opts.sessions,
                    store=store,
                    run_id=closed,
                    options={"spine": spine},
                )
                result = diff_runs(Store.open(store), f"{spine}-base", closed, save=False)
                steps = Store.open(store)
                replay(
                    steps,
                    f"{spine}-base",
                    ReplayOptions(model=f"{model}?noise=0.05", repeat=3, run_id=f"{spine}-{version}-rep"),
                )
                repeated = diff_runs(steps, f"{spine}-base", f"{spine}-{version}-rep", save=False)
                s = result.summary
                rates[(spine, version)] = result.session_rates
                rows.append(
                    (
                        spine.upper(),
                        version,
                        s["step_divergence_rate"],
                        s["session_divergence_rate"],
                        len(s["terminal_changes"]),
                        repeated.summary["pass_k"],
                    )
                )
    print(f"{'spine':6} {'candidate':9} {'step div':>9} {'session div':>12} {'outcome changes':>16} {'pass^3':>7}")
    for spine, version, step, session, changes, pass_k in rows:
        print(f"{spine:6} {version:9} {step:9.1%} {session:12.1%} {changes:16d} {pass_k:7.1%}")
    for version in opts.candidates.split(","):
        p3, p5 = rates[("p3", version)], rates[("p5", version)]
        common = sorted(set(p3) & set(p5))
        d = drift_test([p3[x] for x in common], [p5[x] for x in common], source="P5", seed=0)
        print(
            f"{version}: P3 - P5 step divergence {d.difference:+.2%}, 95% CI [{d.ci95[0]:+.2%}, {d.ci95[1]:+.2%}] "
            f"over {d.sessions} sessions"
        )


if __name__ == "__main__":
    main()
