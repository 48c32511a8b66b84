"""``sdbctl diff``: where two runs' actions diverge, and why."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sdbctl.cli._listing import CsvFlag, Format, JsonlFlag, emit, pick_format
from sdbctl.cli._options import (
    AlignOption,
    AllowPartialOption,
    IgnoreOption,
    JsonOption,
    LayersOption,
    NoiseOption,
    NumericToleranceOption,
    StoreOption,
    TextOption,
    UnorderedOption,
)
from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.results import SKIP, as_json

if TYPE_CHECKING:
    from sdbctl.sdb.diff import DiffResult, DiffSummary, Divergence


def _resamples(value: int) -> int:
    """--resamples is checked as it is parsed: an SdbError, so one line and exit 2 (typer's own min=
    would print its usage block instead)."""
    if value < 1:
        raise UsageError(f"--resamples must be 1 or more, not {value}")
    return value


def _points(value: float) -> float:
    """--min-detectable is a number of percentage points in (0, 100], checked as it is parsed."""
    if not 0 < value <= 100:
        raise UsageError(f"--min-detectable must be a number of percentage points in (0, 100], not {value:g}")
    return value


def diff(
    base: Annotated[str, typer.Argument(metavar="BASE", help="The base run (usually the recording).")],
    candidate: Annotated[str, typer.Argument(metavar="CANDIDATE", help="The run to compare (usually a replay).")],
    limit: Annotated[int, typer.Option("--limit", "-n", help="Divergences to print in the table; 0 for all.")] = 30,
    noise: NoiseOption = None,
    resamples: Annotated[
        int, typer.Option("--resamples", callback=_resamples, help="Bootstrap resamples of the sessions.")
    ] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    min_detectable: Annotated[
        float,
        typer.Option(
            "--min-detectable",
            metavar="PCT",
            callback=_points,
            help="The difference, in points, whose sessions needed the drift and outcome tests report.",
        ),
    ] = 5.0,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Write the page of `sdbctl view` as one self-contained file.")
    ] = None,
    ignore: IgnoreOption = None,
    unordered: UnorderedOption = None,
    numeric_tolerance: NumericToleranceOption = None,
    text: TextOption = None,
    layers: LayersOption = None,
    align: AlignOption = "auto",
    allow_partial: AllowPartialOption = False,
    store: StoreOption = None,
    json: JsonOption = False,
    csv: CsvFlag = False,
    jsonl: JsonlFlag = False,
) -> None:
    """Compare the model's actions of two runs and explain every divergence.

    Two closed-loop runs (recordings, imports, session-mode replays) are compared by commit: each
    session's committed actions (effect succeeded; not refused, invalid or failed), aligned over the
    whole session, so one extra lookup or a failed-then-retried call shifts nothing. A step-mode
    replay is compared step by step. Every action has a layer: write, read (pure=True, or
    [diff] read_only globs) or speech (message, or [diff] speech globs; compared by similarity);
    the headline rates count --layers (default write). Reasons: tool_changed, args_changed (with
    field paths, old -> new), missing, extra, reordered, parse_failed, invalid, gate_changed,
    state_changed, speech_changed. Outcomes (imported, or terminal states in [outcome] success) give
    flips and a McNemar test. The drift test (--noise, or repeats) and the McNemar test say the smallest
    difference they could have detected at 80% power, and the sessions needed for --min-detectable. Provider
    errors are reported apart. A partial run is refused unless --allow-partial, as is a candidate or
    noise run lacking sessions of the base (with --allow-partial they are left out of the figures).
    Divergences are stored (view `divergences`); tolerances come from [tool.sdbctl.diff] in
    pyproject.toml or [diff] in sdbctl.toml.

    Output: a summary and a table of divergences; --json one document {summary, divergences,
    errors}; --csv and --jsonl one row per divergence (its fields, as the divergences view has them).

    Example: sdbctl diff base @latest --json | jq .summary.by_layer.write
    """
    import sdbctl.fixtures.workloads
    from sdbctl.cli._render import print_json
    from sdbctl.sdb.diff import diff_runs, load_config, load_outcome_config, tolerance_flags
    from sdbctl.sdb.store import Store

    fmt = pick_format(json=json, csv=csv, jsonl=jsonl)
    sdbctl.fixtures.workloads.register_all()  # the workloads a run may name: their code, never a store's
    st = Store.open(store)
    config = tolerance_flags(
        load_config(), ignore=ignore, unordered=unordered, numeric=numeric_tolerance, text=text
    ).with_layers(layers)
    result = diff_runs(
        st,
        base,
        candidate,
        config,
        noise_run=noise,
        resamples=resamples,
        seed=seed,
        allow_partial=allow_partial,
        alignment=align,
        outcome_config=load_outcome_config(),
        power_target=min_detectable / 100,
    )
    if html_file is not None:
        from sdbctl.sdb.view import write_file

        write_file(html_file, st, result, config=config)
    if fmt is Format.json:
        print_json(result.as_dict())
    elif fmt is not Format.table:
        emit([as_json(d) for d in _ordered(result)], _divergence_fields(), fmt)
    else:
        _print_summary(result.summary)
        _print_divergences(_COLUMNS, _divergence_rows(result, limit), limit, len(result.divergences))


_COLUMNS = ["session", "step", "rep", "base seq", "cand seq", "layer", "reason", "action", "fields"]


def _divergence_fields() -> list[str]:
    """The columns of --csv and --jsonl: a divergence's fields, as its JSON has them."""
    import dataclasses

    from sdbctl.sdb.diff import Divergence

    return [f.name for f in dataclasses.fields(Divergence) if not f.metadata.get(SKIP)]


def _ordered(result: DiffResult) -> list[Divergence]:
    """The gated layers first; in each, the divergences marked ``*`` (:data:`sdb.diff.FIRST_MARK`) first."""
    gated = set(result.summary.layers)
    return sorted(result.divergences, key=lambda d: (d.layer not in gated, d.after_first))


def _divergence_rows(result: DiffResult, limit: int = 0) -> list[list[Any]]:
    """One table row per divergence (:data:`_COLUMNS`), ``*`` marking :data:`sdb.diff.FIRST_MARK`; the
    first ``limit`` only (0: all), read from the diff's file without the others."""
    shown = result.divergences.first(limit, result.summary.layers) if limit > 0 else _ordered(result)
    return [
        [
            d.session_id,
            d.step or "",
            d.repeat,
            d.base_seq,
            d.candidate_seq,
            d.layer + ("" if d.after_first else " *"),
            d.reason,
            d.base_action if d.base_action == d.candidate_action else f"{d.base_action} -> {d.candidate_action}",
            d.changes() + (f"similarity {d.similarity:.2f}" if d.similarity is not None else ""),
        ]
        for d in shown
    ]


def _print_divergences(columns: list[str], rows: list[list[Any]], limit: int, total: int) -> None:
    """The table of divergences, cut at ``limit`` rows (0: all), with a note of what was cut (of
    ``total``)."""
    from sdbctl.cli._render import note, print_table
    from sdbctl.sdb.diff import FIRST_MARK

    shown = rows if limit <= 0 else rows[:limit]
    if shown:
        narrow_first = ["base seq", "cand seq", "step", "layer", "rep"]  # what a narrow terminal leaves out
        print_table(columns, shown, widths={"fields": 70, "action": 40}, drop=narrow_first)
        note(f"* {FIRST_MARK}; gated layers first")
    if len(shown) < total:
        note(f"{total - len(shown)} more divergences; use --limit 0, --json, or sdbctl query ... FROM divergences")


def _print_summary(s: DiffSummary) -> None:
    """The summary's lines: the headline, each layer, outcomes, attempts, drift, reasons and actions."""
    from sdbctl.cli._render import console, data, note
    from sdbctl.sdb.diff import cached_text, power_lines

    unit = "committed actions" if s.comparison == "commit" else "steps"
    drift_power, outcome_power, *left_out = power_lines(s)
    if s.partial:
        note(f"PARTIAL run(s) {', '.join(s.partial)}: compared with --allow-partial; missing may be unfinished")
    console.print(
        f"[bold]{data(s.base_run)} -> {data(s.candidate_run)}[/] "
        f"(by {s.comparison}, layers {','.join(s.layers)}): "
        f"{unit} {s.steps_diverged}/{s.steps_compared} diverged "
        f"({s.step_divergence_rate:.1%}), sessions {s.sessions_diverged}/{s.sessions_compared} "
        f"({s.session_divergence_rate:.1%}), {s.errors} provider errors",
        highlight=False,
    )
    console.print(
        "by layer: "
        + ", ".join(
            f"{k} {v.steps_diverged}/{v.steps_compared} ({v.sessions_diverged}/{v.sessions_compared} sessions)"
            for k, v in s.by_layer.items()
            if v.steps_compared
        ),
        highlight=False,
    )
    print_rules(s)
    if cached_text(s):  # a verdict on cached answers is on whatever model filled the cache
        console.print(cached_text(s), highlight=False)
    outcomes = s.outcomes
    if outcomes:
        console.print(
            f"outcomes ({outcomes.sessions} sessions): base {outcomes.base_pass} pass, candidate "
            f"{outcomes.candidate_pass} pass; {outcomes.negative_flips} pass -> fail, "
            f"{outcomes.positive_flips} fail -> pass; McNemar one-sided p = {outcomes.mcnemar_p:.4g}",
            highlight=False,
        )
    print_flips(s)
    console.print(data(outcome_power), highlight=False)  # what the outcome test could have seen, or why none
    attempts = [
        f"{layer} ("
        + "; ".join(f"{side} " + ", ".join(f"{k} {n}" for k, n in a.items()) for side, a in v.attempts.items() if a)
        + ")"
        for layer, v in s.by_layer.items()
        if any(v.attempts.values())
    ]
    if attempts:  # per layer: a failed read is never counted as a failed write
        console.print("attempts not committed: " + ", ".join(attempts), highlight=False)
    drift = s.drift
    if drift:
        lo, hi = drift.ci95
        verdict = "drift above noise" if drift.drift_above_noise else "within the noise"
        console.print(
            f"noise floor {drift.noise_floor:.1%} ({drift.source}), candidate {drift.candidate:.1%}, "
            f"difference {drift.difference:+.1%}, 95% CI [{lo:+.1%}, {hi:+.1%}]: [bold]{verdict}[/]",
            highlight=False,
        )
    console.print(data(drift_power), highlight=False)
    for line in left_out:
        console.print(data(line), highlight=False)
    if s.by_reason:
        console.print("by reason: " + ", ".join(f"{k} {v}" for k, v in s.by_reason.items()), highlight=False)
        console.print("by action: " + ", ".join(f"{data(k)} {v}" for k, v in s.by_action.items()), highlight=False)


def print_flips(s: DiffSummary) -> None:
    """The sessions whose outcome flipped, named (the diff's and the gate's)."""
    from sdbctl.cli._render import console, data
    from sdbctl.sdb.diff import flip_lines

    for label, names in flip_lines(s):
        console.print(f"{label}: {data(names)}", highlight=False)


def print_rules(s: DiffSummary) -> None:
    """The rules of the verdict and where each came from; a manifest's differing copy, not obeyed (the
    diff's and the gate's)."""
    from sdbctl.cli._render import console, data
    from sdbctl.sdb.diff import rules_text

    console.print("rules: " + data(rules_text(s.rules)), highlight=False)
    shown = rules_text(s.rules, obeyed=False)
    if shown:
        console.print("not obeyed: " + data(shown), highlight=False)
