"""What a verdict could not have seen: the minimum detectable difference of the drift and outcome
tests (against hand computations, monotone in sessions, honest by simulation), in every output form,
``gate --min-detectable``, and runs that lack sessions of the base (refused, or left out)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Collection
from math import comb, factorial
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.diff import drift_test, mcnemar_one_sided
from sdbctl.sdb.diff._power import drift_power, mcnemar_min_detectable, mcnemar_power, mcnemar_sessions_needed
from tests.conftest import CLI, assert_one_line_error
from tests.helpers import embedded_view

K = (NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.80)) ** 2  # the drift test's (z_a + z_b)^2


def _by_hand(spread: float, per_unit: float, n: int) -> float:
    """The drift test's minimum detectable drift d: the root of d^2 = (k/n) (spread + per_unit d (1 - d))."""
    a, b, c = 1 + K * per_unit / n, -K * per_unit / n, -K * spread / n
    return float((-b + np.sqrt(b * b - 4 * a * c)) / (2 * a))


def _tail(n: int, p: float, at_least: int) -> float:
    """P(Binomial(n, p) >= at_least), by hand."""
    return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(at_least, n + 1))


# --- the figures ---------------------------------------------------------------------------------


def test_drift_min_detectable_solves_the_power_equation_by_hand() -> None:
    diffs = [0.0, 0.1, 0.2, 0.0, 0.3, 0.1, 0.0, 0.2, 0.1, 0.0] * 3
    units = [4] * len(diffs)
    result = drift_test(diffs, [0.0] * len(diffs), units=units, target=0.05)
    n, se, d = len(diffs), result.standard_error, result.min_detectable
    assert se is not None and d is not None
    # the bootstrap's standard error is the population spread over sqrt(n)
    assert se == pytest.approx(np.std(diffs) / np.sqrt(n), rel=0.03)
    v, h = n * se**2, 1 / 4
    # d = (z_a + z_b) * sqrt((v + h d (1 - d)) / n): the observed spread plus a drift's own binomial spread
    assert d == pytest.approx(np.sqrt(K * (v + h * d * (1 - d)) / n), rel=1e-9)
    assert result.target == 0.05 and result.sessions_needed == int(np.ceil(K * (v + h * 0.05 * 0.95) / 0.05**2))


def test_no_spread_does_not_claim_to_see_every_drift() -> None:
    same = drift_test([0.0] * 40, [0.0] * 40)
    # with units unknown (1 per session): d = (k/n) / (1 + k/n), 16.4 points over 40 sessions
    assert same.min_detectable == pytest.approx((K / 40) / (1 + K / 40)) == pytest.approx(_by_hand(0.0, 1.0, 40))
    assert 0.15 < (same.min_detectable or 0) < 0.18


def test_the_drift_figure_is_a_real_80_percent_power() -> None:
    """At its minimum detectable drift (sessions that diverge wholly, over a silent noise floor) the
    bootstrap test detects it in at least 80% of simulated trials; at half of it, in fewer."""
    n = 40
    mde = drift_test([0.0] * n, [0.0] * n).min_detectable
    assert mde is not None

    def detected(p: float) -> float:
        hits = 0
        for trial in range(300):
            rng = np.random.default_rng(trial)
            cand = (rng.random(n) < p).astype(float)
            hits += drift_test(cand, np.zeros(n), resamples=1000, seed=trial).drift_above_noise
        return hits / 300

    assert detected(mde) >= 0.80
    assert detected(mde / 2) < 0.80


def test_figures_shrink_as_sessions_grow() -> None:
    drift = [drift_power(0.5 / np.sqrt(n), n, 0.2, 0.05)[0] or 2.0 for n in (2, 4, 8, 16, 32, 64, 128)]
    assert drift == sorted(drift, reverse=True) and drift[0] > drift[-1]
    outcome = [mcnemar_min_detectable(n, 0.05, 0.05) or 2.0 for n in (5, 8, 16, 32, 64, 128, 256)]
    assert outcome == sorted(outcome, reverse=True) and outcome[0] > outcome[-1]


def test_mcnemar_power_is_the_exact_sum_over_what_the_test_rejects() -> None:
    def brute(n: int, neg: float, pos: float, alpha: float) -> float:
        total = 0.0
        for b in range(n + 1):
            for c in range(n + 1 - b):
                if mcnemar_one_sided(b, c) < alpha:
                    ways = factorial(n) / (factorial(b) * factorial(c) * factorial(n - b - c))
                    total += ways * neg**b * pos**c * (1 - neg - pos) ** (n - b - c)
        return total

    for n, neg, pos in [(8, 0.7, 0.0), (8, 0.5, 0.1), (20, 0.3, 0.05), (12, 0.25, 0.25)]:
        assert mcnemar_power(n, neg, pos, 0.05) == pytest.approx(brute(n, neg, pos, 0.05), abs=1e-12)


def test_mcnemar_min_detectable_by_hand() -> None:
    # 8 sessions and no fail -> pass: the test rejects from 5 negative flips (p = 1/32), so the power at a
    # negative-flip rate p is P(Binomial(8, p) >= 5); solve it = 0.8 by bisection
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _tail(8, mid, 5) >= 0.8 else (mid, hi)
    assert mcnemar_min_detectable(8, 0.0, 0.05) == pytest.approx(hi, abs=1e-4)
    assert mcnemar_min_detectable(4, 0.0, 0.05) is None  # 4 sessions: p >= 1/16 > 0.05 whatever happens
    needed = mcnemar_sessions_needed(0.0, 0.3, 0.05)
    assert needed is not None
    assert mcnemar_power(needed, 0.3, 0.0, 0.05) >= 0.8 > mcnemar_power(needed - 1, 0.3, 0.0, 0.05)
    assert mcnemar_sessions_needed(0.6, 0.5, 0.05) is None  # flip rates above 1: no such fall


# --- through the CLI -----------------------------------------------------------------------------


def _run(
    store: Path,
    run_id: str,
    sessions: range,
    *,
    changed: Collection[int] = (),
    passed: Collection[int] | None = None,
    outcome: bool = True,
) -> None:
    """A closed-loop run: per session one committed write (its argument changed in ``changed``) and an
    outcome (passed unless the session is outside ``passed``, when given; none without ``outcome``)."""
    with Recorder(store=store, run_id=run_id) as rec:
        for k in sessions:
            s = rec.session(f"task-{k:03d}")
            llm = s.llm({"messages": [{"role": "user", "content": "go"}]}, {"choices": []}, model="m", step="s1")
            act = s.action("book", {"k": k, "x": k in changed}, step="s1", parent=llm, call_id=f"c{k}")
            s.effect("book", {"content": "ok"}, parent=act)
            if outcome:
                s.state("outcome", {"value": 1.0 if passed is None or k in passed else 0.0})


@pytest.fixture
def weak(store: Path) -> Path:
    """The issue's case: 8 sessions; the noise diverges on four, the candidate on the other four (a
    difference of 0 with an interval of about +-70 points), and passes fall from 5 to 2 of 8 (McNemar
    p = 0.125). Both tests PASS, and neither could have seen much."""
    _run(store, "base", range(8), passed={0, 1, 2, 3, 4})
    _run(store, "noise", range(8), changed={0, 1, 2, 3})
    _run(store, "cand", range(8), changed={4, 5, 6, 7}, passed={0, 1})
    return store


WEAK = ("gate", "cand", "--base", "base", "--noise", "noise", "--noise-aware", "--fail-on-outcome-regression")


def test_an_underpowered_pass_says_so_in_every_output(sdbctl: CLI, weak: Path, tmp_path: Path) -> None:
    out = sdbctl(*WEAK, "--json", "--junit", "g.xml", "--markdown", "g.md", "--html", "g.html")
    assert out.returncode == 0, out.stderr  # PASS: no evidence ...
    summary = json.loads(out.stdout)["summary"]
    drift, outcomes = summary["drift"], summary["outcomes"]
    assert drift["sessions"] == 8 and drift["sessions_needed"] > 8
    # differences of -1 on four sessions, +1 on four: a spread of 1, one unit each
    assert drift["min_detectable"] == pytest.approx(_by_hand(spread=1.0, per_unit=1.0, n=8), rel=0.02)
    assert outcomes["sessions"] == 8 and outcomes["mcnemar_p"] == 0.125 and outcomes["sessions_needed"] > 8
    assert outcomes["min_detectable"] == pytest.approx(mcnemar_min_detectable(8, 0.0, 0.05))
    # ... and every output says how large a difference it could have seen: drift 99 points, outcomes 70
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "g.xml").getroot().iter("property")}
    shown = []
    for name, figures in (("drift", drift), ("outcomes", outcomes)):
        assert props[f"{name}.min_detectable"] == str(figures["min_detectable"])  # the JSON's figure, its unit
        shown.append(f"min detectable {figures['min_detectable'] * 100:.1f} points")
    table = sdbctl(*WEAK).stdout
    assert all(x in table for x in shown), table
    text = (tmp_path / "g.md").read_text()
    assert all(x in text for x in shown)
    embedded = embedded_view(tmp_path / "g.html")["header"]["summary"]  # the page shows these figures
    assert (embedded["drift"], embedded["outcomes"]) == (drift, outcomes)
    diff = sdbctl("diff", "base", "cand", "--noise", "noise", "--min-detectable", "10")
    assert all(x in diff.stdout for x in shown) and "sessions for 10.0 points" in diff.stdout
    assert json.loads(sdbctl("diff", "base", "cand", "--json").stdout)["summary"]["outcomes"]["min_detectable"]


def test_a_test_that_cannot_run_is_null_and_said(sdbctl: CLI, weak: Path, tmp_path: Path) -> None:
    _run(weak, "plain", range(8), outcome=False)
    out = sdbctl("diff", "base", "plain", "--json", "--html", "r.html")
    summary = json.loads(out.stdout)["summary"]
    assert "drift" not in summary and summary["outcomes"] is None  # no noise floor, no outcomes: no test
    text = sdbctl("diff", "base", "plain").stdout
    assert (
        "drift test: not run (no noise floor" in text
        and "outcome test: not run (it needs outcomes in both runs)" in text
    )
    embedded = embedded_view(tmp_path / "r.html")["header"]["summary"]
    assert "drift" not in embedded and embedded["outcomes"] is None


def test_min_detectable_fails_an_underpowered_pass(sdbctl: CLI, weak: Path, tmp_path: Path) -> None:
    out = sdbctl(*WEAK, "--min-detectable", "30", "--json")
    assert out.returncode == 1
    checks = {c["name"]: c for c in json.loads(out.stdout)["verdict"]["checks"]}
    assert checks["drift above noise"]["passed"] and checks["outcome regression (McNemar, one-sided)"]["passed"]
    drift = json.loads(out.stdout)["summary"]["drift"]["min_detectable"]
    assert drift > 0.9 and not checks["power"]["passed"]
    assert checks["power"]["measured"].startswith(f"drift {drift * 100:.1f} points (8 sessions), outcomes")
    gate = ("gate", "cand", "--base", "base", "--noise", "noise")
    (tmp_path / "pyproject.toml").write_text("[tool.sdbctl.gate]\nnoise_aware = true\nmin_detectable = 30\n")
    assert sdbctl(*gate).returncode == 1  # the config key
    for bad in ("0", "101", "nan", "inf", '"5"', "true"):
        (tmp_path / "pyproject.toml").write_text(f"[tool.sdbctl.gate]\nmin_detectable = {bad}\n")
        assert_one_line_error(sdbctl(*gate), "min_detectable", "(0, 100]")
    (tmp_path / "pyproject.toml").unlink()
    assert_one_line_error(sdbctl(*gate, "--min-detectable", "0"), "--min-detectable", "(0, 100]")
    assert_one_line_error(sdbctl(*gate, "--min-detectable", "10"), "--noise-aware")  # no test it could judge
    assert_one_line_error(sdbctl("diff", "base", "cand", "--min-detectable", "nan"), "--min-detectable", "(0, 100]")


def test_min_detectable_passes_a_powered_gate(sdbctl: CLI, store: Path) -> None:
    _run(store, "base", range(200))
    _run(store, "noise", range(200))
    _run(store, "cand", range(200))
    args = ("gate", "cand", "--base", "base", "--noise", "noise", "--noise-aware", "--min-detectable")
    out = sdbctl(*args, "5", "--json")
    assert out.returncode == 0, out.stdout
    power = next(c for c in json.loads(out.stdout)["verdict"]["checks"] if c["name"] == "power")
    # no spread over 200 sessions of one unit each: (k/n) / (1 + k/n); noise-aware, the default outcome
    # check is the McNemar test, which the power check judges too
    drift = f"drift {100 * (K / 200) / (1 + K / 200):.1f} points (200 sessions)"
    outcomes = f"outcomes {100 * (mcnemar_min_detectable(200, 0.0, 0.05) or 0):.1f} points (200 sessions)"
    assert power["passed"] and power["measured"] == f"{drift}, {outcomes}"
    assert sdbctl(*args, "3").returncode == 1


# --- runs lacking sessions of the base -------------------------------------------------------------


def test_a_noise_run_lacking_sessions_is_refused_not_counted_as_noise(sdbctl: CLI, store: Path, tmp_path: Path) -> None:
    """The attack: a noise run with 5 of the base's 20 sessions made a noise floor of 75%, which hid a
    candidate changing half the sessions, and said nothing."""
    _run(store, "base", range(20))
    _run(store, "noise", range(5))
    _run(store, "cand", range(20), changed=set(range(1, 20, 2)))
    args = ("gate", "cand", "--base", "base", "--noise", "noise", "--noise-aware")
    assert_one_line_error(sdbctl(*args), "run 'noise' lacks 15 of the 20 sessions", "--allow-partial")
    out = sdbctl(*args, "--allow-partial", "--json")
    summary = json.loads(out.stdout)["summary"]
    assert summary["left_out"] == {"noise": 15}
    assert summary["drift"]["sessions"] == 5 and summary["drift"]["noise_floor"] == 0.0
    assert summary["sessions_compared"] == 20  # the candidate's own figures keep every session
    said = "left out with --allow-partial: 15 session(s) of the base that run 'noise' lacks (from the drift test)"
    assert said in sdbctl(*args, "--allow-partial", "--markdown", "g.md", "--html", "g.html").stdout
    assert said in (tmp_path / "g.md").read_text()
    assert embedded_view(tmp_path / "g.html")["header"]["summary"]["left_out"] == {"noise": 15}


def test_a_candidate_lacking_sessions_is_refused_or_judged_on_the_shared_ones(sdbctl: CLI, store: Path) -> None:
    _run(store, "base", range(10))
    _run(store, "cand", range(7), passed={0, 1, 2, 3, 4, 5})
    assert_one_line_error(sdbctl("diff", "base", "cand"), "run 'cand' lacks 3 of the 10 sessions")
    assert_one_line_error(sdbctl("gate", "cand", "--base", "base"), "run 'cand' lacks 3")
    out = sdbctl("diff", "base", "cand", "--allow-partial", "--json")
    summary = json.loads(out.stdout)["summary"]
    assert summary["left_out"] == {"cand": 3} and summary["sessions_compared"] == 7
    assert summary["divergences"] == 0 and summary["outcomes"]["sessions"] == 7
    assert summary["outcomes"]["negative_flips"] == 1 and summary["outcomes"]["missing"] == 0
    text = sdbctl("diff", "base", "cand", "--allow-partial").stdout
    assert "3 session(s) of the base that run 'cand' lacks (from every figure)" in text
