"""What CI systems read of a gate: JUnit XML (one testcase per check, one per session), the Markdown
summary, and GitHub's step summary (the Markdown appended to ``$GITHUB_STEP_SUMMARY``), written in one
place so that every caller of the gate writes the same files the same way."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from sdbctl.sdb.diff import DiffResult, Divergence, flip_lines, left_out_text, named, power_lines, rules_text
from sdbctl.sdb.gate import Verdict
from sdbctl.sdb.store import Store
from sdbctl.sdb.text import markdown_cell, visible
from sdbctl.sdb.view import write_file

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"  # the file GitHub Actions shows on the run's page


def _line(d: Divergence) -> str:
    """One divergence as a line of text (control characters visible: the JUnit file must parse)."""
    fields = d.changes()
    sim = f" similarity {d.similarity:.2f}" if d.similarity is not None else ""
    return visible(
        f"[{d.layer}] {d.step} rep {d.repeat} {d.reason} {d.base_action} -> {d.candidate_action}"
        + (f" {fields}" if fields else "")
        + sim
    )


def junit(result: DiffResult, verdict: Verdict) -> str:
    """JUnit XML whose failures are exactly the gate's failing checks, so that CI shows red exactly
    when the gate fails: one testcase per check (``classname="checks"``, its threshold and measured
    figure as ``system-out``; a failing one's failure names the sessions it counted, by
    :func:`sdb.diff.named`'s rule), then one per session
    (``classname="sessions"``), never a failure, with its divergences and a pass -> fail outcome as
    ``system-out``. The testsuite's properties say what the tests could have seen."""
    s = result.summary
    lines: dict[str, list[str]] = {}
    outcomes = s.outcomes
    for name in outcomes.flipped.negative if outcomes is not None else []:
        lines.setdefault(name, []).append("outcome: pass -> fail")
    gated = set(s.layers)
    for d in sorted(result.divergences, key=lambda d: (d.layer not in gated, d.after_first)):
        lines.setdefault(d.session_id, []).append(_line(d) + ("" if d.layer in gated else " (not gated)"))
    names = sorted(set(s.session_ids) | set(lines))
    failing = [c for c in verdict.checks if not c.passed]
    suite = ET.Element(
        "testsuite",
        name=visible(f"sdbctl gate {result.base_run}..{result.candidate_run}"),
        tests=str(len(verdict.checks) + len(names)),
        failures=str(len(failing)),
        errors="0",
    )
    _power_properties(ET.SubElement(suite, "properties"), result)
    for check in verdict.checks:
        case = ET.SubElement(suite, "testcase", classname="checks", name=visible(check.name))
        if not check.passed:
            failure = ET.SubElement(
                case, "failure", message=visible(f"{check.limit}; measured {check.measured}"), type="check"
            )
            text = [f"threshold: {check.limit}", f"measured: {check.measured}"]
            if check.sessions:
                text.append(f"sessions ({len(check.sessions)}): {named(check.sessions)}")
            failure.text = "\n".join(visible(x) for x in text)
        ET.SubElement(case, "system-out").text = visible(f"threshold {check.limit}; measured {check.measured}")
    for name in names:
        case = ET.SubElement(suite, "testcase", classname="sessions", name=visible(name))
        if name in lines:
            ET.SubElement(case, "system-out").text = "\n".join(lines[name])
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def _power_properties(properties: ET.Element, result: DiffResult) -> None:
    """What each test could have seen, as testsuite properties: ``drift.min_detectable`` and
    ``outcomes.min_detectable`` (the figure ``--json`` holds, a proportion like every rate of the
    summary: a reader of both files reads one unit; ``none`` when nothing up to 100 points is
    detectable, ``not run`` without the test) and the sentence each output prints (in points)."""
    s = result.summary
    tests = (("drift", s.drift), ("outcomes", s.outcomes))
    for (name, figures), line in zip(tests, power_lines(s)[:2], strict=True):
        found = figures.min_detectable if figures is not None else None
        value = "not run" if figures is None else "none" if found is None else repr(found)
        ET.SubElement(properties, "property", name=f"{name}.min_detectable", value=value)
        ET.SubElement(properties, "property", name=f"{name}.power", value=visible(line))
    left = left_out_text(s)
    if left:
        ET.SubElement(properties, "property", name="left_out", value=visible(left))


def markdown(result: DiffResult, verdict: Verdict) -> str:
    """The gate as Markdown: the verdict, the checks, the outcome flips, then the gated layers'
    divergences (first of each session first), with the other layers counted below."""
    s = result.summary
    lines = [
        f"## sdbctl gate: {'PASS' if verdict.passed else 'FAIL'}",
        "",
        f"`{result.base_run}` -> `{result.candidate_run}` ({s.comparison} comparison, layers "
        f"{', '.join(s.layers)}): {s.steps_diverged}/{s.steps_compared} units and "
        f"{s.sessions_diverged}/{s.sessions_compared} sessions diverged; {s.errors} provider errors.",
    ]
    lines += ["", f"Rules: {markdown_cell(rules_text(s.rules))}."]
    if rules_text(s.rules, obeyed=False):  # a manifest's differing copy: shown, never obeyed
        lines += ["", f"Not obeyed: {markdown_cell(rules_text(s.rules, obeyed=False))}."]
    if s.partial:
        lines += ["", f"**Partial run(s): {', '.join(s.partial)}** (compared with --allow-partial)."]
    outcomes = s.outcomes
    if outcomes:
        lines += [
            "",
            f"Outcomes over {outcomes.sessions} sessions: base {outcomes.base_pass} pass, candidate "
            f"{outcomes.candidate_pass} pass; {outcomes.negative_flips} pass -> fail, "
            f"{outcomes.positive_flips} fail -> pass (McNemar one-sided p = {outcomes.mcnemar_p:.4g}).",
        ]
        flips = [f"- {label.capitalize()}: {markdown_cell(names)}" for label, names in flip_lines(s)]
        lines += ["", *flips] if flips else []
    lines += ["", "What the tests could have seen:", ""] + [f"- {markdown_cell(x)}" for x in power_lines(s)]
    lines += ["", "| check | threshold | measured | result |", "|---|---|---|---|"]
    lines += [
        "| "
        + " | ".join(markdown_cell(x) for x in (c.name, c.limit, c.measured))
        + f" | {'PASS' if c.passed else 'FAIL'} |"
        for c in verdict.checks
    ]
    gated = sorted(result.gated(), key=lambda d: d.after_first)
    if gated:
        lines += ["", "| session | rep | step | layer | reason | action | fields |", "|---|---|---|---|---|---|---|"]
        for d in gated[:20]:
            action = d.candidate_action or d.base_action
            cells = [d.session_id, d.repeat, d.step, d.layer, d.reason, action, d.changes()]
            lines.append("| " + " | ".join(markdown_cell(str(c)) for c in cells) + " |")
    rest = {k: v.divergences for k, v in s.by_layer.items() if k not in s.layers}
    if any(rest.values()):
        lines += ["", "Not gated: " + ", ".join(f"{k} {v} divergences" for k, v in rest.items() if v) + "."]
    return "\n".join(lines) + "\n"


def write_ci_files(
    store: Store,
    result: DiffResult,
    verdict: Verdict,
    *,
    junit_file: Path | None = None,
    markdown_file: Path | None = None,
    html_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Write the files asked for, and append the Markdown to GitHub's step summary when ``env``
    (default: this process's environment) names one in ``$GITHUB_STEP_SUMMARY``: a gate in a GitHub
    workflow shows its verdict on the run's page without a flag."""
    step_summary = (os.environ if env is None else env).get(STEP_SUMMARY)
    if junit_file is not None:
        junit_file.write_text(junit(result, verdict), encoding="utf-8")
    if html_file is not None:
        write_file(html_file, store, result, verdict)
    if markdown_file is None and not step_summary:
        return
    text = markdown(result, verdict)
    if markdown_file is not None:
        markdown_file.write_text(text, encoding="utf-8")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(text)
