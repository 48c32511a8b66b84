"""The CI gate: thresholds over a diff, a verdict, and the files CI systems read.

A noise-aware gate (``noise_aware = true``) fails on step divergence only when the candidate's drift
is above the model's own noise: when the bootstrap 95% interval of (candidate - noise floor) lies
above zero. Thresholds come from ``[tool.sdbctl.gate]`` in ``pyproject.toml`` (or ``[gate]`` in ``sdbctl.toml``)
and are overridden by flags. A rate threshold below 1 is a proportion, 1 or more a count.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdb.diff.differ import DiffResult
from sdb.errors import SdbError
from sdb.settings import read_table

KEYS = (
    "max_step_divergence",
    "max_session_divergence",
    "critical_actions",
    "max_parse_failures",
    "max_error_rate",
    "noise_aware",
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


def load_thresholds(directory: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Thresholds:
    """Thresholds from the config file, then ``overrides`` (flags; None means "not given")."""
    found, source = read_table("gate", directory)
    unknown = set(found) - set(KEYS)
    if unknown:
        raise SdbError(f"{source}: unknown gate key(s) {', '.join(sorted(unknown))} ({', '.join(KEYS)})")
    table: dict[str, Any] = found or dict(DEFAULTS)  # a config table replaces the shipped defaults
    table.update({k: v for k, v in (overrides or {}).items() if v is not None})
    crit = table.get("critical_actions") or ()
    if isinstance(crit, str):
        crit = [c.strip() for c in crit.split(",") if c.strip()]
    for key in ("max_step_divergence", "max_session_divergence", "max_parse_failures", "max_error_rate"):
        value = table.get(key)
        if value is not None and (not isinstance(value, int | float) or value < 0):
            raise SdbError(f"gate threshold {key} must be a number >= 0 (a proportion < 1, or a count), not {value!r}")
    return Thresholds(
        table.get("max_step_divergence"),
        table.get("max_session_divergence"),
        tuple(crit),
        table.get("max_parse_failures"),
        table.get("max_error_rate"),
        bool(table.get("noise_aware", False)),
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
        count = s["by_reason"].get("parse_failed", 0)
        ok, got = _within(t.max_parse_failures, count, s["steps_compared"])
        checks.append(Check("parse failures", f"<= {t.max_parse_failures:g}", got, ok))
    if t.max_error_rate is not None:
        ok, got = _within(t.max_error_rate, s["errors"], s["steps_compared"] + s["errors"])
        checks.append(Check("provider errors", f"<= {t.max_error_rate:g}", got, ok))
    for action in t.critical_actions:
        count = sum(1 for d in result.divergences if action in (d.base_action, d.candidate_action))
        checks.append(Check(f"critical action {action}", "no divergence", str(count), count == 0))
    return Verdict(all(c.passed for c in checks), checks)


def junit(result: DiffResult, verdict: Verdict) -> str:
    """JUnit XML: one testcase per session, a failure per diverged session with its divergences."""
    by_session: dict[str, list[Any]] = {}
    for d in result.divergences:
        by_session.setdefault(d.session_id, []).append(d)
    names = sorted(set(_compared_sessions(result)) | set(by_session))
    suite = ET.Element(
        "testsuite",
        name=f"sdbctl gate {result.base_run}..{result.candidate_run}",
        tests=str(len(names)),
        failures=str(len(by_session)),
    )
    for name in names:
        case = ET.SubElement(suite, "testcase", classname=result.candidate_run, name=name)
        if name in by_session:
            divs = by_session[name]
            failure = ET.SubElement(case, "failure", message=f"{len(divs)} divergence(s)", type="divergence")
            failure.text = "\n".join(
                f"{d.step} {d.reason} {d.base_action} -> {d.candidate_action} "
                + "; ".join(f"{f['path']}: {f['old']} -> {f['new']}" for f in d.fields)
                for d in divs
            )
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def _compared_sessions(result: DiffResult) -> list[str]:
    return list(result.summary.get("session_ids") or [])


def markdown(result: DiffResult, verdict: Verdict) -> str:
    s = result.summary
    lines = [
        f"## sdbctl gate: {'PASS' if verdict.passed else 'FAIL'}",
        "",
        f"`{result.base_run}` -> `{result.candidate_run}`: {s['steps_diverged']}/{s['steps_compared']} steps and "
        f"{s['sessions_diverged']}/{s['sessions_compared']} sessions diverged; {s['errors']} provider errors.",
        "",
        "| check | threshold | measured | result |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c.name} | {c.limit} | {c.measured} | {'PASS' if c.passed else 'FAIL'} |" for c in verdict.checks]
    if result.divergences:
        lines += ["", "| session | step | reason | action | fields |", "|---|---|---|---|---|"]
        for d in result.divergences[:20]:
            fields = "; ".join(f"{f['path']}: {f['old']} -> {f['new']}" for f in d.fields)
            lines.append(
                f"| {d.session_id} | {d.step} | {d.reason} | {d.candidate_action or d.base_action} | "
                f"{html.escape(fields)} |"
            )
    return "\n".join(lines) + "\n"
