"""``sdbctl gate``: a CI verdict on a candidate run. Exit 0 pass, 1 fail, 2 usage or input error."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sdbctl.cli._options import AlignOption, AllowPartialOption, JsonOption, LayersOption, NoiseOption, StoreOption

if TYPE_CHECKING:
    from sdbctl.sdb.gate import Verdict


def gate(
    candidate: Annotated[str, typer.Argument(metavar="CANDIDATE", help="The run to judge (usually a replay).")],
    base: Annotated[str | None, typer.Option("--base", help="Base run (default: the candidate's source run).")] = None,
    max_step_divergence: Annotated[
        float | None, typer.Option("--max-step-divergence", help="A proportion (< 1) or a count of steps.")
    ] = None,
    max_session_divergence: Annotated[
        float | None, typer.Option("--max-session-divergence", help="A proportion (< 1) or a count of sessions.")
    ] = None,
    critical_actions: Annotated[
        str | None, typer.Option("--critical-actions", help="Comma-separated actions where any divergence fails.")
    ] = None,
    max_parse_failures: Annotated[
        float | None, typer.Option("--max-parse-failures", help="A proportion or a count of parse failures.")
    ] = None,
    max_error_rate: Annotated[
        float | None, typer.Option("--max-error-rate", help="A proportion or a count of provider errors.")
    ] = None,
    noise_aware: Annotated[
        bool | None,
        typer.Option("--noise-aware/--no-noise-aware", help="Fail on drift above the noise floor, not on raw rates."),
    ] = None,
    noise: NoiseOption = None,
    junit_file: Annotated[
        Path | None,
        typer.Option(
            "--junit",
            help="Write JUnit XML: one testcase per check (failures: the failing checks) and one per session "
            "(its divergences as system-out; never a failure).",
        ),
    ] = None,
    markdown_file: Annotated[
        Path | None,
        typer.Option("--markdown", help="Write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY)."),
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Write the page of `sdbctl view` as one self-contained file.")
    ] = None,
    max_negative_flips: Annotated[
        float | None,
        typer.Option(
            "--max-negative-flips",
            help="Sessions whose outcome went pass -> fail: a proportion or a count (default 0.05, i.e. 5% of the "
            "sessions, checked when both runs have outcomes and the gate is not noise-aware; given, it requires "
            "outcomes).",
        ),
    ] = None,
    fail_on_outcome_regression: Annotated[
        bool | None,
        typer.Option(
            "--fail-on-outcome-regression/--no-fail-on-outcome-regression",
            help="Fail when the one-sided McNemar p-value of the outcome flips is below outcome_alpha (0.05).",
        ),
    ] = None,
    min_detectable: Annotated[
        float | None,
        typer.Option(
            "--min-detectable",
            metavar="PCT",
            help="Check power: fail when the noise-aware or outcome test could not have detected a difference "
            "of PCT points at 80% power with these sessions.",
        ),
    ] = None,
    layers: LayersOption = None,
    align: AlignOption = "auto",
    allow_partial: AllowPartialOption = False,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Diff the candidate against its base and check the thresholds; exit 1 when one fails, 2 when
    there is nothing to judge (a partial run, an empty comparison, a usage error).

    Thresholds: the shipped defaults (step divergence 5%, session divergence 20%, no parse failures,
    provider errors 2%, and, when both runs have outcomes, outcome flips pass -> fail 5% of the
    sessions, or noise-aware the McNemar test), each replaced by its key of [tool.sdbctl.gate] in
    pyproject.toml or [gate] in sdbctl.toml (a key set to false switches that check off; a table never
    replaces them all), then by the flags. A value below 1 is a proportion, shown as a percentage; 0,
    or 1 and more, a count. A gate left with no check is refused (exit 2). The output lists the layer
    rules used and where each came from (config, the registered workload's code, defaults; a run's
    manifest is never obeyed), and names the sessions whose outcome flipped. The divergence checks
    count the write layer unless --layers widens them; outcome checks asked for (--max-negative-flips,
    --fail-on-outcome-regression) need outcomes on both sides. The drift and McNemar checks say the
    smallest difference they could have detected; --min-detectable fails the gate when that exceeds
    PCT points. A candidate or noise run lacking sessions of the base is refused unless --allow-partial.

    Example: sdbctl gate @latest --max-step-divergence 0.02 --critical-actions propose_offer --junit gate.xml
    """
    import sdbctl.fixtures.workloads
    from sdbctl.cli._render import console, data, print_json
    from sdbctl.cli.diff import print_flips, print_rules
    from sdbctl.sdb.ci_summary import write_ci_files
    from sdbctl.sdb.diff import cached_text, left_out_text
    from sdbctl.sdb.gate import run_gate
    from sdbctl.sdb.results import as_json
    from sdbctl.sdb.store import Store

    sdbctl.fixtures.workloads.register_all()  # the workloads a run may name: their code, never a store's
    st = Store.open(store)
    result, verdict = run_gate(
        st,
        candidate,
        base=base,
        overrides={
            "max_step_divergence": max_step_divergence,
            "max_session_divergence": max_session_divergence,
            "critical_actions": critical_actions,
            "max_parse_failures": max_parse_failures,
            "max_error_rate": max_error_rate,
            "noise_aware": noise_aware,
            "layers": layers,
            "max_negative_flips": max_negative_flips,
            "fail_on_outcome_regression": fail_on_outcome_regression,
            "min_detectable": min_detectable,
        },
        noise_run=noise,
        allow_partial=allow_partial,
        alignment=align,
    )
    write_ci_files(st, result, verdict, junit_file=junit_file, markdown_file=markdown_file, html_file=html_file)
    if json:
        print_json({"verdict": as_json(verdict), "summary": as_json(result.summary)})
    else:
        print_checks(verdict)
        s = result.summary
        print_flips(s)
        print_rules(s)
        if s.partial:
            console.print(f"PARTIAL run(s) {', '.join(s.partial)}: judged with --allow-partial", highlight=False)
        left = left_out_text(s)
        if left:
            console.print(data(left), highlight=False)
        if cached_text(s):  # a verdict on cached answers is on whatever model filled the cache
            console.print(cached_text(s), highlight=False)
        console.print(
            f"[bold]{'PASS' if verdict.passed else 'FAIL'}[/] {s.base_run} -> {s.candidate_run} "
            f"(by {s.comparison}, layers {','.join(s.layers)})",
            highlight=False,
        )
    raise typer.Exit(0 if verdict.passed else 1)


def print_checks(verdict: Verdict) -> None:
    """The verdict's checks as a table (the gate's and the demo's)."""
    from sdbctl.cli._render import print_table

    print_table(
        ["check", "threshold", "measured", "result"],
        [[c.name, c.limit, c.measured, "PASS" if c.passed else "FAIL"] for c in verdict.checks],
    )
