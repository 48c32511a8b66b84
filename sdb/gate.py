"""The CI gate: thresholds over a diff, and a verdict (the files CI systems read of it are
:mod:`sdb.ci_summary`'s).

A noise-aware gate (``noise_aware = true``) fails on step divergence only when the candidate's drift
is above the model's own noise: when the bootstrap 95% interval of (candidate - noise floor) lies
above zero. With ``min_detectable`` (points), the check ``power`` fails when a test the gate judges by
(that one, or the McNemar test of outcomes) could not have detected a difference that large at 80%
power with these sessions: a PASS that could not have failed. Thresholds come from
``[tool.sdbctl.gate]`` in ``pyproject.toml`` (or ``[gate]`` in ``sdbctl.toml``) and are overridden by
flags. A rate threshold below 1 is a proportion, 1 or more a count (0, none, is shown as a count);
every output shows a threshold in the unit of what it measures (:func:`_within`).

A config table merges with the shipped defaults (a key replaces one threshold, never all of them); a
default check is switched off only by its key set to ``false``, and a gate left with no check at all
is refused: it could only pass.

The default outcome check is made when both runs have outcomes, and left out when they have none
(asked for by config or flag, an outcome check needs them): at most 5% of the sessions pass -> fail
(``max_negative_flips``); noise-aware, the McNemar test instead (``fail_on_outcome_regression``), as
a raw rate of flips is no more noise-aware than the raw divergence rates that the drift check replaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sdbctl.sdb.diff import (
    DEFAULT_TARGET,
    DiffResult,
    DiffSummary,
    detectable_text,
    diff_runs,
    load_config,
    load_outcome_config,
    parse_layers,
    points,
)
from sdbctl.sdb.errors import SdbError, UsageError
from sdbctl.sdb.settings import check_names, check_number, read_table
from sdbctl.sdb.store import Store

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
    "min_detectable",
)


#: the thresholds that are a proportion (< 1) or a count; ``false`` in the config switches one off
LIMITS = (
    "max_step_divergence",
    "max_session_divergence",
    "max_parse_failures",
    "max_error_rate",
    "max_negative_flips",
)

#: the checks every gate makes unless its config switches one off (a key set to false)
DEFAULTS: dict[str, Any] = {
    "max_step_divergence": 0.05,
    "max_session_divergence": 0.20,
    "max_parse_failures": 0,
    "max_error_rate": 0.02,
    "max_negative_flips": 0.05,  # made only when both runs have outcomes; noise-aware, the McNemar test
}


@dataclass(frozen=True)
class Thresholds:
    """What the gate checks; None (or empty, or false) leaves a check out."""

    max_step_divergence: float | None = None  #: diverged units: a proportion (< 1) or a count
    max_session_divergence: float | None = None  #: diverged sessions: a proportion or a count
    critical_actions: tuple[str, ...] = ()  #: actions where any divergence fails
    max_parse_failures: float | None = None  #: the candidate's extra parse failures: a proportion or a count
    max_error_rate: float | None = None  #: provider errors: a proportion or a count
    noise_aware: bool = False  #: fail on drift above the noise floor instead of on the two rates
    layers: tuple[str, ...] | None = None  #: the layers the divergence checks count (None: the diff's, write)
    max_negative_flips: float | None = None  #: sessions whose outcome went pass -> fail (a proportion or a count)
    fail_on_outcome_regression: bool = False  #: fail when the one-sided McNemar p-value < outcome_alpha
    outcome_alpha: float = 0.05
    #: points: fail (check ``power``) when a test the gate uses could not detect a difference this large
    min_detectable: float | None = None
    #: the default outcome check's key (``max_negative_flips``, or noise-aware
    #: ``fail_on_outcome_regression``) when it is the default's: made only when both runs have outcomes
    from_defaults: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        """No check that is always made: a gate that could only pass (refused)."""
        return not (
            self.noise_aware
            or self.critical_actions
            or (self.fail_on_outcome_regression and "fail_on_outcome_regression" not in self.from_defaults)
            or self.min_detectable is not None
            or any(getattr(self, key) is not None for key in LIMITS if key not in self.from_defaults)
        )

    def without_outcomes(self) -> Thresholds:
        """These thresholds for runs without outcomes: the default outcome check left out."""
        flips = None if "max_negative_flips" in self.from_defaults else self.max_negative_flips
        mcnemar = self.fail_on_outcome_regression and "fail_on_outcome_regression" not in self.from_defaults
        return replace(self, max_negative_flips=flips, fail_on_outcome_regression=mcnemar, from_defaults=frozenset())


def load_thresholds(directory: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Thresholds:
    """The shipped :data:`DEFAULTS`, each replaced by its key of the config table, then by
    ``overrides`` (flags; None means "not given"). A table never replaces the defaults whole: a key
    changes its own threshold, and a default check is switched off only by its key set to ``false``.
    Every key is checked for its type and range (one line naming the file or the flag)."""
    found, source = read_table("gate", directory)
    unknown = set(found) - set(KEYS)
    if unknown:
        raise SdbError(f"{source}: unknown gate key(s) {', '.join(sorted(unknown))} ({', '.join(KEYS)})")
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    table: dict[str, Any] = {**DEFAULTS, **found, **flags}

    def named(key: str) -> str:
        """Where ``key``'s value came from: its flag, the config file, or the shipped defaults."""
        if key in flags:
            return f"--{key.replace('_', '-')}"
        return f"{source}: gate threshold {key}" if key in found else f"defaults: gate threshold {key}"

    for key in LIMITS:
        if table.get(key) is False:  # a default check switched off, explicitly
            table[key] = None
        elif table.get(key) is not None:
            what = "a number >= 0 (a proportion < 1, or a count; finite), or false for no such check"
            table[key] = check_number(table[key], named(key), what=what)
    crit = table.get("critical_actions", [])
    if isinstance(crit, str):
        crit = [c.strip() for c in crit.split(",") if c.strip()]
    crit = check_names(crit, named("critical_actions"), "a list of action names (or comma-separated text)")
    for key in ("noise_aware", "fail_on_outcome_regression"):
        if not isinstance(table.get(key, False), bool):
            raise SdbError(f"{named(key)} must be true or false, not {table[key]!r}")
    alpha = check_number(
        table.get("outcome_alpha", 0.05), named("outcome_alpha"), high=1, open_low=True, open_high=True
    )
    detectable = table.get("min_detectable")
    if detectable is not None:
        what = "a finite number of percentage points in (0, 100]"
        detectable = check_number(detectable, named("min_detectable"), high=100, open_low=True, what=what)
    layers = table.get("layers")
    given = set(found) | set(flags)
    from_defaults: frozenset[str] = frozenset()
    if "max_negative_flips" not in given:  # the default outcome check
        from_defaults = frozenset({"max_negative_flips"})
        if table.get("noise_aware"):  # judged against chance by McNemar, not as a raw rate
            table["max_negative_flips"] = None
            from_defaults = frozenset()
            if "fail_on_outcome_regression" not in given:
                table["fail_on_outcome_regression"] = True
                from_defaults = frozenset({"fail_on_outcome_regression"})
    thresholds = Thresholds(
        max_step_divergence=table.get("max_step_divergence"),
        max_session_divergence=table.get("max_session_divergence"),
        critical_actions=tuple(crit),
        max_parse_failures=table.get("max_parse_failures"),
        max_error_rate=table.get("max_error_rate"),
        noise_aware=bool(table.get("noise_aware", False)),
        layers=parse_layers(layers, named("layers")) if layers is not None else None,
        max_negative_flips=table.get("max_negative_flips"),
        fail_on_outcome_regression=bool(table.get("fail_on_outcome_regression", False)),
        outcome_alpha=float(alpha),
        min_detectable=detectable,
        from_defaults=from_defaults,
    )
    if thresholds.empty:
        maybe = " (the default outcome check runs only on runs with outcomes: set max_negative_flips to require it)"
        raise SdbError(f"{source or 'the flags'}: {_NOTHING}" + (maybe if thresholds.from_defaults else ""))
    return thresholds


_NOTHING = (
    "the gate checks nothing: every check is switched off (false); "
    "set a threshold (e.g. max_step_divergence = 0.05) or remove the false"
)


@dataclass
class Check:
    """One threshold against what the diff measured."""

    name: str  #: what is checked
    limit: str  #: the threshold, as text, in the unit of ``measured``
    measured: str  #: what the diff measured, as text
    passed: bool  #: within the threshold
    #: the sessions the measured figure counts (diverged, flipped, ...): a failing check names them
    sessions: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    """The gate's verdict: passed when every check did (its JSON is :func:`sdb.results.as_json`'s)."""

    passed: bool  #: every check passed
    checks: list[Check] = field(default_factory=list)  #: the checks, in order


def _percent(x: float) -> str:
    """A proportion as a percentage with two decimals, or as many as it takes to keep its value."""
    text = f"{x * 100:.2f}"
    return f"{text}%" if abs(float(text) - x * 100) < 1e-9 else f"{x * 100:.6g}%"


def _within(limit: float, count: int, total: int) -> tuple[bool, str, str]:
    """Whether ``count`` of ``total`` is within ``limit``, with the threshold and the measured figure
    as text in one unit: a proportion (0 < limit < 1) as percentages (``<= 2.00%``, ``0.00% (0/180)``),
    a count (0: none, or >= 1) as counts (``<= 3``, ``2 (of 180)``). The one formatting of every
    output (table, Markdown, HTML, JUnit: all print a check's ``limit`` and ``measured``)."""
    if 0 < limit < 1:
        rate = count / total if total else 0.0
        return rate <= limit, f"<= {_percent(limit)}", f"{rate:.2%} ({count}/{total})"
    return count <= limit, f"<= {limit:g}", f"{count} (of {total})"


def evaluate(result: DiffResult, t: Thresholds) -> Verdict:
    """Check ``result`` against every threshold that is set."""
    s = result.summary
    checks: list[Check] = []
    diverged = sorted({d.session_id for d in result.gated()})
    if not s.steps_compared:
        raise SdbError(
            f"the gate's layers ({', '.join(s.layers)}) compare nothing between {result.base_run!r} and "
            f"{result.candidate_run!r}: "
            + ", ".join(f"{k} {v.steps_compared}" for k, v in s.by_layer.items())
            + " units; widen with --layers write,read,speech"
        )
    if t.noise_aware:
        drift = s.drift
        if drift is None:
            raise SdbError(
                "the noise-aware gate needs a noise floor: --noise RUN (a self-replay of the base model) "
                "or a candidate replayed with --repeat"
            )
        lo, hi = drift.ci95
        checks.append(
            Check(
                "drift above noise",
                "95% CI of candidate - noise not above 0",
                f"{drift.difference:+.2%} [{lo:+.2%}, {hi:+.2%}] ({drift.source}); "
                + detectable_text(drift.min_detectable),
                not drift.drift_above_noise,
                diverged,
            )
        )
    if t.max_step_divergence is not None and not t.noise_aware:  # noise-aware: the drift check replaces it
        ok, limit, got = _within(t.max_step_divergence, s.steps_diverged, s.steps_compared)
        checks.append(Check("step divergence", limit, got, ok, diverged))
    if t.max_session_divergence is not None and not t.noise_aware:
        ok, limit, got = _within(t.max_session_divergence, s.sessions_diverged, s.sessions_compared)
        checks.append(Check("session divergence", limit, got, ok, diverged))
    if t.max_parse_failures is not None:
        ok, limit, got = _within(t.max_parse_failures, s.parse_failures, s.steps_compared)
        failed = sorted({d.session_id for d in result.divergences if d.reason == "parse_failed"})
        checks.append(Check("parse failures", limit, got, ok, failed))
    if t.max_error_rate is not None:
        ok, limit, got = _within(t.max_error_rate, s.errors, s.steps_compared + s.errors)
        errored = sorted({str(e.get("session_id")) for e in result.errors})
        checks.append(Check("provider errors", limit, got, ok, errored))
    for action in t.critical_actions:
        hits = [d.session_id for d in result.divergences if action in (d.base_action, d.candidate_action)]
        checks.append(Check(f"critical action {action}", "no divergence", str(len(hits)), not hits, sorted(set(hits))))
    outcomes = s.outcomes
    if outcomes is None:  # the default outcome check, on runs without outcomes: left out
        t = t.without_outcomes()
    if (t.max_negative_flips is not None or t.fail_on_outcome_regression) and outcomes is None:
        raise SdbError(
            f"the outcome checks need outcomes on both sides, and {result.base_run!r} -> {result.candidate_run!r} "
            "has none (an imported outcome, or a terminal state listed in [outcome] success; a step-mode replay "
            "has no outcomes)"
        )
    if t.max_negative_flips is not None and outcomes is not None:
        ok, limit, got = _within(t.max_negative_flips, outcomes.negative_flips, outcomes.sessions)
        checks.append(Check("outcome flips pass -> fail", limit, got, ok, list(outcomes.flipped.negative)))
    if t.fail_on_outcome_regression and outcomes is not None:
        p = outcomes.mcnemar_p
        checks.append(
            Check(
                "outcome regression (McNemar, one-sided)",
                f"p >= {t.outcome_alpha:g}",
                f"p = {p:.4g} ({outcomes.negative_flips} pass -> fail, {outcomes.positive_flips} fail -> pass); "
                + detectable_text(outcomes.min_detectable),
                p >= t.outcome_alpha,
                list(outcomes.flipped.negative),
            )
        )
    if t.min_detectable is not None:
        checks.append(_power_check(s, t, t.min_detectable))
    if not checks:  # a gate that could only pass is no gate
        raise SdbError(_NOTHING)
    return Verdict(all(c.passed for c in checks), checks)


def _power_check(s: DiffSummary, t: Thresholds, limit: float) -> Check:
    """``power``: each test the gate judges by (drift above noise, the McNemar test) could have
    detected a difference of ``limit`` points at 80% power with these sessions."""
    tests: list[tuple[str, float | None, int]] = []
    if t.noise_aware and s.drift is not None:
        tests.append(("drift", s.drift.min_detectable, s.drift.sessions))
    if t.fail_on_outcome_regression and s.outcomes is not None:
        tests.append(("outcomes", s.outcomes.min_detectable, s.outcomes.sessions))
    if not tests:
        raise SdbError(
            f"min_detectable ({limit:g} points) judges the tests the gate uses, and it uses none: "
            "add --noise-aware or --fail-on-outcome-regression"
        )
    measured = ", ".join(
        f"{name} {points(mde) if mde is not None else 'none up to 100 points'} ({n} sessions)" for name, mde, n in tests
    )
    ok = all(mde is not None and mde * 100 <= limit + 1e-9 for _, mde, _ in tests)
    return Check("power", f"min detectable <= {limit:g} points (80% power)", measured, ok)


def base_and_candidate(
    store: Store, candidate: str, base: str | None = None, *, hint: str = "name the base with --base RUN"
) -> tuple[str, str]:
    """The base run and the candidate's id: ``base``, else the run ``candidate`` was replayed from. The
    manifest's ``source_run`` is the store's word: it only proposes which run to compare (the gate
    prints it with the verdict; CI names --base), it never sets anything of the verdict."""
    manifest = store.manifest(candidate)  # an unknown run is named first
    base_run = base or manifest.source_run
    if not base_run:
        raise UsageError(f"run {manifest.run_id!r} has no source run; {hint}")
    if base_run == manifest.run_id:
        raise UsageError(f"run {manifest.run_id!r}: its manifest names itself as its source run; {hint}")
    return base_run, manifest.run_id


def run_gate(
    store: Store,
    candidate: str,
    *,
    base: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    noise_run: str | None = None,
    allow_partial: bool = False,
    alignment: str = "auto",
) -> tuple[DiffResult, Verdict]:
    """Diff ``candidate`` against ``base`` (default: the run it was replayed from) with the project's
    ``[diff]`` and ``[outcome]`` settings, counting the thresholds' layers, and judge the diff against
    the thresholds of :func:`load_thresholds` (``overrides``: the flags)."""
    base_run, candidate_run = base_and_candidate(store, candidate, base)  # before a bad threshold
    thresholds = load_thresholds(overrides=overrides)
    result = diff_runs(
        store,
        base_run,
        candidate_run,
        load_config().with_layers(thresholds.layers),
        noise_run=noise_run,
        allow_partial=allow_partial,
        alignment=alignment,
        outcome_config=load_outcome_config(),
        power_target=thresholds.min_detectable / 100 if thresholds.min_detectable is not None else DEFAULT_TARGET,
        outcome_alpha=thresholds.outcome_alpha,
    )
    return result, evaluate(result, thresholds)
