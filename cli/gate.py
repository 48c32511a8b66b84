"""``sdbctl gate``: a CI verdict on a candidate run. Exit 0 pass, 1 fail, 2 usage or input error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sdbctl.cli._options import AlignOption, AllowPartialOption, JsonOption, LayersOption, StoreOption


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
    noise: Annotated[
        str | None, typer.Option("--noise", help="A self-replay of the base model: the noise floor.")
    ] = None,
    junit_file: Annotated[
        Path | None, typer.Option("--junit", help="Write JUnit XML (one testcase per session).")
    ] = None,
    markdown_file: Annotated[
        Path | None,
        typer.Option("--markdown", help="Write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY)."),
    ] = None,
    html_file: Annotated[Path | None, typer.Option("--html", help="Write the self-contained HTML report.")] = None,
    max_negative_flips: Annotated[
        float | None,
        typer.Option("--max-negative-flips", help="Sessions whose outcome went pass -> fail: a proportion or a count."),
    ] = None,
    fail_on_outcome_regression: Annotated[
        bool | None,
        typer.Option(
            "--fail-on-outcome-regression/--no-fail-on-outcome-regression",
            help="Fail when the one-sided McNemar p-value of the outcome flips is below outcome_alpha (0.05).",
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

    Thresholds: [tool.sdbctl.gate] in pyproject.toml or [gate] in sdbctl.toml, else the shipped
    defaults (step divergence 5%, session divergence 20%, no parse failures, provider errors 2%);
    flags override either. The divergence checks count the write layer unless --layers widens them;
    outcome checks (--max-negative-flips, --fail-on-outcome-regression) need outcomes on both sides.

    Example: sdbctl gate @latest --max-step-divergence 0.02 --critical-actions propose_offer --junit gate.xml
    """
    from sdbctl.cli._render import console, print_json, print_table
    from sdbctl.sdb.diff.config import load_config
    from sdbctl.sdb.diff.differ import diff_runs
    from sdbctl.sdb.diff.outcomes import load_outcome_config
    from sdbctl.sdb.errors import UsageError
    from sdbctl.sdb.gate import evaluate, junit, load_thresholds, markdown
    from sdbctl.sdb.store import Store

    st = Store.open(store)
    manifest = st.manifest(candidate)
    base_run = base or manifest.source_run
    if not base_run:
        raise UsageError(f"run {manifest.run_id!r} has no source run; name the base with --base RUN")
    thresholds = load_thresholds(
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
        }
    )
    result = diff_runs(
        st,
        base_run,
        manifest.run_id,
        load_config().with_layers(thresholds.layers),
        noise_run=noise,
        allow_partial=allow_partial,
        alignment=align,
        outcome_config=load_outcome_config(),
    )
    verdict = evaluate(result, thresholds)
    if junit_file is not None:
        junit_file.write_text(junit(result, verdict), encoding="utf-8")
    if html_file is not None:
        from sdbctl.sdb.report import render_html

        html_file.write_text(render_html(st, result, verdict), encoding="utf-8")
    if markdown_file is not None or os.environ.get("GITHUB_STEP_SUMMARY"):
        text = markdown(result, verdict)
        if markdown_file is not None:
            markdown_file.write_text(text, encoding="utf-8")
        summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_path:
            with open(summary_path, "a", encoding="utf-8") as fh:
                fh.write(text)
    if json:
        print_json({"verdict": verdict.as_dict(), "summary": result.summary})
    else:
        print_table(
            ["check", "threshold", "measured", "result"],
            [[c.name, c.limit, c.measured, "PASS" if c.passed else "FAIL"] for c in verdict.checks],
        )
        s = result.summary
        if s["partial"]:
            console.print(f"PARTIAL run(s) {', '.join(s['partial'])}: judged with --allow-partial", highlight=False)
        console.print(
            f"[bold]{'PASS' if verdict.passed else 'FAIL'}[/] {s['base_run']} -> {manifest.run_id} "
            f"(by {s['comparison']}, layers {','.join(s['layers'])})",
            highlight=False,
        )
    raise typer.Exit(0 if verdict.passed else 1)
