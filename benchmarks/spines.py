"""The spine experiment: does a state-machine spine (P5) diverge less than an event-log spine (P3)
when the model changes?

Records the reference agent on both spines with ``sim:renewal@v1`` (the base), then, for each
candidate version, (1) runs the agent again closed-loop with the candidate model on the same
customers and seed, and diffs it against the base of its spine (step and session divergence,
committed terminal-outcome changes), and (2) replays the base in step mode under the candidate with
``--repeat 3`` for pass^k. The simulators see only the request; they cannot know which spine asked.
Last, the per-session step divergence rates of P3 and P5 (same customers) give a bootstrap 95%
interval of the P3 - P5 difference.

With ``--model llama`` the same experiment runs on two real models (the extra ``sdbctl[local]``),
where the spine does change what the model is asked: P5 prompts show the state row and its legal
transitions, P3 prompts the event log to fold. Per spine: SmolLM2-135M records the agent (the base),
Gemma 3 270M records it closed-loop on the same customers (session divergence) and answers the
base's questions in step mode (step divergence); each model replays its own recording ``--repeat``
times (its noise floor); the closing outcomes the spine refused as illegal transitions are counted.
Both models sample at temperature 0.7, so noise is real.

    python -m benchmarks.spines [--sessions 300] [--candidates v2,v3]
    python -m benchmarks.spines --model llama [--sessions 12] [--repeat 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import sdbctl.fixtures.workloads
from benchmarks.machine import describe
from sdbctl.recorders.workload import record_workload
from sdbctl.sdb.agents import Workload, load_agent
from sdbctl.sdb.diff import diff_runs, drift_test
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.store import Store, connect

SMOL = "llama:smollm2-135m?temperature=0.7"
GEMMA = "llama:gemma3-270m?temperature=0.7"


def _refused(store: str, runs: list[str]) -> int:
    """Closing outcomes the spine refused as illegal transitions, in ``runs`` (the only runs the
    connection's ``events`` view holds)."""
    sql = "SELECT count(*) FROM events WHERE kind = 'gate' AND name = 'transition'"
    row = connect(Store.open(store), runs=runs).execute(sql).fetchone()
    return int(row[0]) if row else 0


def _record(agent: Workload, store: str, run_id: str, spine: str, sessions: int, **kw: Any) -> None:
    """The reference agent on ``spine``, ``sessions`` customers, into ``run_id``."""
    record_workload(
        agent, "contract-renewal", sessions=sessions, store=store, run_id=run_id, options={"spine": spine}, **kw
    )


def _p3_minus_p5(p3: dict[str, float], p5: dict[str, float]) -> str:
    """The bootstrap of P3 - P5 per-session step divergence, over the sessions both spines ran."""
    common = sorted(set(p3) & set(p5))
    d = drift_test([p3[x] for x in common], [p5[x] for x in common], source="P5", seed=0)
    return (
        f"P3 - P5 step divergence {d.difference:+.2%}, 95% CI [{d.ci95[0]:+.2%}, {d.ci95[1]:+.2%}] "
        f"over {d.sessions} sessions"
    )


def real_models(sessions: int, repeat: int) -> None:
    """The experiment on SmolLM2-135M (base) and Gemma 3 270M (candidate); see the module docstring."""
    started = time.perf_counter()
    agent = load_agent("contract-renewal")
    rows = []
    rates: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / ".sdb")
        for spine in ("p5", "p3"):
            for name, model in (("smol", SMOL), ("gemma", GEMMA)):
                _record(agent, store, f"{spine}-{name}", spine, sessions, model=model, concurrency=2)
            closed = diff_runs(Store.open(store), f"{spine}-smol", f"{spine}-gemma", save=False).summary
            replay(Store.open(store), f"{spine}-smol", ReplayOptions(model=GEMMA, run_id=f"{spine}-step"))
            step = diff_runs(Store.open(store), f"{spine}-smol", f"{spine}-step", save=False)
            rates[spine] = step.session_rates
            noise = {}
            for name, model in (("smol", SMOL), ("gemma", GEMMA)):
                # the same model and temperature with seeds of its own (100, 101, ...): a replay with the
                # base's seed would serve the base's own draws again
                opts = ReplayOptions(model=f"{model}&seed=100", repeat=repeat, run_id=f"{spine}-{name}-noise")
                replay(Store.open(store), f"{spine}-{name}", opts)
                own = diff_runs(Store.open(store), f"{spine}-{name}", f"{spine}-{name}-noise", save=False)
                noise[name] = own.summary.step_divergence_rate
            refused = _refused(store, [f"{spine}-smol", f"{spine}-gemma"])
            rows.append(
                (
                    spine.upper(),
                    step.summary.step_divergence_rate,
                    closed.session_divergence_rate,
                    noise["smol"],
                    noise["gemma"],
                    refused,
                )
            )
    print(f"models: base {SMOL}, candidate {GEMMA}; {sessions} sessions per spine, noise from {repeat} repeats")
    print(f"{'spine':6} {'step div':>9} {'session div':>12} {'smol noise':>11} {'gemma noise':>12}", end="")
    print(f" {'illegal refused':>16}")
    for spine, step_rate, session_rate, smol, gemma, refused in rows:
        print(f"{spine:6} {step_rate:9.1%} {session_rate:12.1%} {smol:11.1%} {gemma:12.1%} {refused:16d}")
    print(f"gemma vs smol: {_p3_minus_p5(rates['p3'], rates['p5'])}; {time.perf_counter() - started:.0f} s")


def simulators(sessions: int, candidates: list[str]) -> None:
    """The experiment on the simulators (see the module docstring)."""
    started = time.perf_counter()
    rows = []
    rates: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / ".sdb")
        agent = load_agent("contract-renewal")
        for spine in ("p5", "p3"):
            _record(agent, store, f"{spine}-base", spine, sessions)
            for version in candidates:
                model = f"sim:renewal@{version}"
                closed = f"{spine}-{version}-closed"
                _record(agent, store, closed, spine, sessions, model=model)
                result = diff_runs(Store.open(store), f"{spine}-base", closed, save=False)
                steps = Store.open(store)
                opts = ReplayOptions(model=f"{model}?noise=0.05", repeat=3, run_id=f"{spine}-{version}-rep")
                replay(steps, f"{spine}-base", opts)
                repeated = diff_runs(steps, f"{spine}-base", f"{spine}-{version}-rep", save=False)
                s = result.summary
                rates[(spine, version)] = result.session_rates
                refused = _refused(store, [closed])
                row = (s.step_divergence_rate, s.session_divergence_rate, len(s.terminal_changes))
                rows.append((spine.upper(), version, *row, repeated.summary.pass_k, refused))
    print(
        f"{'spine':6} {'candidate':9} {'step div':>9} {'session div':>12} {'outcome changes':>16} {'pass^3':>7}", end=""
    )
    print(f" {'illegal refused':>16}")
    for spine, version, step, session, changes, pass_k, refused in rows:
        print(f"{spine:6} {version:9} {step:9.1%} {session:12.1%} {changes:16d} {pass_k:7.1%} {refused:16d}")
    for version in candidates:
        print(f"{version}: {_p3_minus_p5(rates[('p3', version)], rates[('p5', version)])}")
    print(f"{time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("sim", "llama"), default="sim", help="simulators, or the two real models")
    parser.add_argument("--sessions", type=int, default=None, help="per spine (default: 300 sim, 12 llama)")
    parser.add_argument("--candidates", default="v2,v3", help="sim only: the simulated versions")
    parser.add_argument("--repeat", type=int, default=1, help="llama only: repeats for each model's noise floor")
    opts = parser.parse_args()
    sdbctl.fixtures.workloads.register_all()
    print(describe())
    if opts.model == "llama":
        real_models(opts.sessions or 12, opts.repeat)
    else:
        simulators(opts.sessions or 300, opts.candidates.split(","))


if __name__ == "__main__":
    main()
