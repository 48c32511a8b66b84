"""``sdbctl demo``: the whole loop on the reference workload, offline, in well under a minute."""

from __future__ import annotations

from typing import Annotated

import typer

from sdbctl.cli._options import JsonOption, StoreOption


def demo(
    sessions: Annotated[int, typer.Option("--sessions", "-n", help="Customers to record.")] = 100,
    candidate: Annotated[
        str,
        typer.Option(
            "--candidate",
            help="The model spec to judge, as given (the default carries the base's per-answer noise, 0.05).",
        ),
    ] = "sim:renewal@v2?noise=0.05",
    repeat: Annotated[int, typer.Option("--repeat", help="Repeats of the candidate replay.")] = 3,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when the gate fails, like `sdbctl gate`.")] = False,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Record the reference agent, replay it under a new (simulated) model with repeats and a noise
    replay, diff, gate with the shipped thresholds (noise-aware), and print the verdict, the top
    divergences and the path of the HTML report. Exits 0 once it has run (--strict: 1 on FAIL).

    The default candidate drifts from the base by design, so FAIL is the verdict to expect; the
    output says which verdict a simulator of known drift should get, and ends with the verdict beside
    the noise floor.

    Example: sdbctl demo --sessions 100 --candidate sim:renewal@v3
    """
    from sdbctl.cli._render import console, data, err_console, print_json, print_table
    from sdbctl.cli.gate import print_checks
    from sdbctl.fixtures.demo import run_demo
    from sdbctl.sdb.results import as_json

    result = run_demo(
        str(store) if store else None,
        sessions,
        candidate,
        repeat,
        say=lambda m: err_console.print(m, style="dim", highlight=False),
    )
    s = result.diff.summary
    if json:
        print_json(
            {
                "verdict": as_json(result.verdict),
                "summary": as_json(s),
                "runs": {"base": result.base, "noise": result.noise, "candidate": result.candidate},
                "report": str(result.report),
                "expected": dict(zip(("verdict", "why"), result.expected, strict=True)) if result.expected else None,
            }
        )
        return
    print_checks(result.verdict)
    top = result.diff.divergences[:5]
    if top:
        print_table(
            ["session", "step", "rep", "reason", "action", "fields"],
            [[d.session_id, d.step, d.repeat, d.reason, d.candidate_action or d.base_action, d.changes()] for d in top],
            drop=["rep", "step"],  # what a narrow terminal leaves out
        )
    console.print(f"runs: base {result.base}, noise {result.noise}, candidate {result.candidate}", highlight=False)
    console.print(f"HTML report: {data(str(result.report))}", highlight=False)  # a path as it is, never markup
    verdict = "PASS" if result.verdict.passed else "FAIL"
    if result.expected is not None:  # why this verdict, for a candidate whose drift is known by design
        expected, why = result.expected
        said = (
            f"{expected} is the expected verdict: {why}"
            if expected == verdict
            else f"{expected} was expected: {why}; this run's gate says {verdict} (see its checks above)"
        )
        exits = "With --strict, a FAIL exits 1." if strict else "The demo exits 0 either way (--strict: 1 on FAIL)."
        console.print(data(f"{said}. {exits}"), highlight=False)
    drift = s.drift
    floor = ""
    if drift is not None:  # the verdict's own figures: the noise floor beside the candidate
        lo, hi = drift.ci95
        floor = data(
            f"; noise floor {drift.noise_floor:.1%} ({drift.source}), candidate {drift.candidate:.1%}, difference "
            f"{drift.difference:+.1%}, 95% CI [{lo:+.1%}, {hi:+.1%}]: "
            + ("drift above noise" if drift.drift_above_noise else "within the noise")
        )
    console.print(f"[bold]{verdict}[/]: {s.steps_diverged}/{s.steps_compared} steps diverged{floor}", highlight=False)
    if strict and not result.verdict.passed:
        raise typer.Exit(1)
