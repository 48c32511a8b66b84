"""The CI gate: thresholds over a diff, a verdict, and the files CI systems read.

A noise-aware gate (``noise_aware = true``) fails on step divergence only when the candidate's drift
is above the model's own noise: when the bootstrap 95% interval of (candidate - noise floor) lies
above zero. Thresholds come from ``[tool.sdbctl.gate]`` in ``pyproject.toml`` (or ``[gate]`` in ``sdbctl.toml``)
and are overridden by flags. A rate threshold below 1 is a proportion, 1 or more a count.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbctl.sdb.diff.config import parse_layers
from sdbctl.sdb.diff.differ import DiffResult
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.settings import read_table
from sdbctl.sdb.text import markdown_cell, visible

KEYS = (
    "max_step_divergence",
    "max_session_divergence",
    "critical_actions",
    "max_parse_failures",
    "max_error_rate",
    "noise_aware",
    "layers",
    "max_negative_flips",
    "fail_on_outcome_regression",
    "outcome_alpha",
)


DEFAULTS: dict[str, Any] = {
    "max_step_divergence": 0.05,
    "max_session_divergence": 0.20,
    "max_parse_failures": 0,
    "max_error_rate": 0.02,
}


@dataclass(frozen=True)
class Thresholds:
    max_step_divergence: float | None = None
    max_session_divergence: float | None = None
    critical_actions: tuple[str, ...] = ()
    max_parse_failures: float | None = None
    max_error_rate: float | None = None
    noise_aware: bool = False
    layers: tuple[str, ...] | None = None  #: the layers the divergence checks count (None: the diff's, write)
    max_negative_flips: float | None = None  #: sessions whose outcome went pass -> fail (a proportion or a count)
    fail_on_outcome_regression: bool = False  #: fail when the one-sided McNemar p-value < outcome_alpha
    outcome_alpha: float = 0.05


def load_thresholds(directory: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Thresholds:
    """Thresholds from the config file, then ``overrides`` (flags; None means "not given")."""
    found, source = read_table("gate", directory)
    unknown = set(found) - set(KEYS)
    if unknown:
        raise SdbError(f"{source}: unknown gate key(s) {', '.join(sorted(unknown))} ({', '.join(KEYS)})")
    table: dict[str, Any] = found or dict(DEFAULTS)  # a config table replaces the shipped defaults
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    table.update(flags)
    crit = table.get("critical_actions") or ()
    if isinstance(crit, str):
        crit = [c.strip() for c in crit.split(",") if c.strip()]
    for key in (
        "max_step_divergence",
        "max_session_divergence",
        "max_parse_failures",
        "max_error_rate",
        "max_negative_flips",
    ):
        value = table.get(key)
        # a NaN threshold compares false with every measure, so it would never fail; nor would infinity
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf")
        ):
            where = f"--{key.replace('_', '-')}" if key in flags else f"{source or 'defaults'}: gate threshold {key}"
            raise SdbError(f"{where} must be a number >= 0 (a proportion < 1, or a count; finite), not {value!r}")
    alpha = table.get("outcome_alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise SdbError(f"gate outcome_alpha must be a number in (0, 1), not {alpha!r}")
    layers = table.get("layers")
    return Thresholds(
        max_step_divergence=table.get("max_step_divergence"),
        max_session_divergence=table.get("max_session_divergence"),
        critical_actions=tuple(crit),
        max_parse_failures=table.get("max_parse_failures"),
        max_error_rate=table.get("max_error_rate"),
        noise_aware=bool(table.get("noise_aware", False)),
        layers=parse_layers(layers, "gate layers") if layers is not None else None,
        max_negative_flips=table.get("max_negative_flips"),
        fail_on_outcome_regression=bool(table.get("fail_on_outcome_regression", False)),
        outcome_alpha=float(alpha),
    )


@dataclass
class Check:
    name: str
    limit: str
    measured: str
    passed: bool


@dataclass
class Verdict:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [c.__dict__ for c in self.checks]}


def _within(limit: float, count: int, total: int) -> tuple[bool, str]:
    """A proportion (< 1) compares with count/total, a count (>= 1) with count."""
    if limit < 1:
        rate = count / total if total else 0.0
        return rate <= limit, f"{rate:.2%} ({count}/{total})"
    return count <= limit, f"{count} (of {total})"


def evaluate(result: DiffResult, t: Thresholds) -> Verdict:
    """Check ``result`` against every threshold that is set."""
    s = result.summary
    checks: list[Check] = []
    if not s["steps_compared"]:
        raise SdbError(
            f"the gate's layers ({', '.join(s['layers'])}) compare nothing between {result.base_run!r} and "
            f"{result.candidate_run!r}: "
            + ", ".join(f"{k} {v['steps_compared']}" for k, v in s["by_layer"].items())
            + " units; widen with --layers write,read,speech"
        )
    if t.noise_aware:
        drift = s.get("drift")
        if drift is None:
            raise SdbError(
                "the noise-aware gate needs a noise floor: --noise RUN (a self-replay of the base model) "
                "or a candidate replayed with --repeat"
            )
        lo, hi = drift["ci95"]
        checks.append(
            Check(
                "drift above noise",
                "95% CI of candidate - noise not above 0",
                f"{drift['difference']:+.2%} [{lo:+.2%}, {hi:+.2%}] ({drift['source']})",
                not drift["drift_above_noise"],
            )
        )
    if t.max_step_divergence is not None and not t.noise_aware:  # noise-aware: the drift check replaces it
        ok, got = _within(t.max_step_divergence, s["steps_diverged"], s["steps_compared"])
        checks.append(Check("step divergence", f"<= {t.max_step_divergence:g}", got, ok))
    if t.max_session_divergence is not None and not t.noise_aware:
        ok, got = _within(t.max_session_divergence, s["sessions_diverged"], s["sessions_compared"])
        checks.append(Check("session divergence", f"<= {t.max_session_divergence:g}", got, ok))
    if t.max_parse_failures is not None:
        count = s["parse_failures"]
        ok, got = _within(t.max_parse_failures, count, s["steps_compared"])
        checks.append(Check("parse failures", f"<= {t.max_parse_failures:g}", got, ok))
    if t.max_error_rate is not None:
        ok, got = _within(t.max_error_rate, s["errors"], s["steps_compared"] + s["errors"])
        checks.append(Check("provider errors", f"<= {t.max_error_rate:g}", got, ok))
    for action in t.critical_actions:
        count = sum(1 for d in result.divergences if action in (d.base_action, d.candidate_action))
        checks.append(Check(f"critical action {action}", "no divergence", str(count), count == 0))
    outcomes = s.get("outcomes")
    if (t.max_negative_flips is not None or t.fail_on_outcome_regression) and outcomes is None:
        raise SdbError(
            f"the outcome checks need outcomes on both sides, and {result.base_run!r} -> {result.candidate_run!r} "
            "has none (an imported outcome, or a terminal state listed in [outcome] success; a step-mode replay "
            "has no outcomes)"
        )
    if t.max_negative_flips is not None and outcomes is not None:
        ok, got = _within(t.max_negative_flips, outcomes["negative_flips"], outcomes["sessions"])
        checks.append(Check("outcome flips pass -> fail", f"<= {t.max_negative_flips:g}", got, ok))
    if t.fail_on_outcome_regression and outcomes is not None:
        p = outcomes["mcnemar_p"]
        checks.append(
            Check(
                "outcome regression (McNemar, one-sided)",
                f"p >= {t.outcome_alpha:g}",
                f"p = {p:.4g} ({outcomes['negative_flips']} pass -> fail, {outcomes['positive_flips']} fail -> pass)",
                p >= t.outcome_alpha,
            )
        )
    return Verdict(all(c.passed for c in checks), checks)


def _line(d: Any) -> str:
    """One divergence as a line of text (control characters visible: the JUnit file must parse)."""
    fields = "; ".join(f"{f['path']}: {f['old']} -> {f['new']}" for f in d.fields)
    sim = f" similarity {d.similarity:.2f}" if d.similarity is not None else ""
    return visible(
        f"[{d.layer}] {d.step} rep {d.repeat} {d.reason} {d.base_action} -> {d.candidate_action}"
        + (f" {fields}" if fields else "")
        + sim
    )


def _gated(result: DiffResult) -> list[Any]:
    layers = result.summary.get("layers") or ["write"]
    return [d for d in result.divergences if d.layer in layers]


def junit(result: DiffResult, verdict: Verdict) -> str:
    """JUnit XML: one testcase per session, a failure per session with a divergence in the gated
    layers or an outcome that went from pass to fail; divergences of other layers are system-out."""
    by_session: dict[str, list[Any]] = {}
    for d in _gated(result):
        by_session.setdefault(d.session_id, []).append(d)
    layers = result.summary.get("layers") or ["write"]
    others: dict[str, list[Any]] = {}
    for d in result.divergences:
        if d.layer not in layers:
            others.setdefault(d.session_id, []).append(d)
    outcomes = result.summary.get("outcomes") or {}
    flipped = set((outcomes.get("flipped") or {}).get("negative") or [])
    names = sorted(set(_compared_sessions(result)) | set(by_session) | flipped)
    failing = set(by_session) | flipped
    suite = ET.Element(
        "testsuite",
        name=f"sdbctl gate {result.base_run}..{result.candidate_run}",
        tests=str(len(names)),
        failures=str(len(failing)),
    )
    for name in names:
        case = ET.SubElement(suite, "testcase", classname=result.candidate_run, name=visible(name))
        if name in failing:
            divs = by_session.get(name, [])
            what = f"{len(divs)} divergence(s)" + (", outcome pass -> fail" if name in flipped else "")
            failure = ET.SubElement(case, "failure", message=what, type="divergence")
            failure.text = "\n".join((["outcome: pass -> fail"] if name in flipped else []) + [_line(d) for d in divs])
        if name in others:
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(_line(d) for d in others[name])
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def _compared_sessions(result: DiffResult) -> list[str]:
    return list(result.summary.get("session_ids") or [])


def markdown(result: DiffResult, verdict: Verdict) -> str:
    """The gate as Markdown: the verdict, the checks, the outcome flips, then the gated layers'
    divergences (first of each session first), with the other layers counted below."""
    s = result.summary
    layers = ", ".join(s.get("layers") or ["write"])
    lines = [
        f"## sdbctl gate: {'PASS' if verdict.passed else 'FAIL'}",
        "",
        f"`{result.base_run}` -> `{result.candidate_run}` ({s.get('comparison', 'step')} comparison, layers "
        f"{layers}): {s['steps_diverged']}/{s['steps_compared']} units and "
        f"{s['sessions_diverged']}/{s['sessions_compared']} sessions diverged; {s['errors']} provider errors.",
    ]
    if s.get("partial"):
        lines += ["", f"**Partial run(s): {', '.join(s['partial'])}** (compared with --allow-partial)."]
    outcomes = s.get("outcomes")
    if outcomes:
        lines += [
            "",
            f"Outcomes over {outcomes['sessions']} sessions: base {outcomes['base_pass']} pass, candidate "
            f"{outcomes['candidate_pass']} pass; {outcomes['negative_flips']} pass -> fail, "
            f"{outcomes['positive_flips']} fail -> pass (McNemar one-sided p = {outcomes['mcnemar_p']:.4g}).",
        ]
    lines += ["", "| check | threshold | measured | result |", "|---|---|---|---|"]
    lines += [
        "| "
        + " | ".join(markdown_cell(x) for x in (c.name, c.limit, c.measured))
        + f" | {'PASS' if c.passed else 'FAIL'} |"
        for c in verdict.checks
    ]
    gated = sorted(_gated(result), key=lambda d: d.after_first)
    if gated:
        lines += ["", "| session | rep | step | layer | reason | action | fields |", "|---|---|---|---|---|---|---|"]
        for d in gated[:20]:
            fields = "; ".join(f"{f['path']}: {f['old']} -> {f['new']}" for f in d.fields)
            cells = [d.session_id, d.repeat, d.step, d.layer, d.reason, d.candidate_action or d.base_action, fields]
            lines.append("| " + " | ".join(markdown_cell(str(c)) for c in cells) + " |")
    rest = {k: v["divergences"] for k, v in (s.get("by_layer") or {}).items() if k not in (s.get("layers") or [])}
    if any(rest.values()):
        lines += ["", "Not gated: " + ", ".join(f"{k} {v} divergences" for k, v in rest.items() if v) + "."]
    return "\n".join(lines) + "\n"
