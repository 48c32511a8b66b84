"""What a test could have seen: the smallest difference each of the diff's two tests detects at 80%
power with the sessions it had (its *minimum detectable* difference), and the sessions it would need
to detect a given difference. A PASS with a minimum detectable difference of 70 points is "no
evidence", not "no change"; these figures say which.

Differences are proportions, as the other rates of a summary (0.05 is 5 points).

- **Drift** (the bootstrap 95% interval of candidate - noise, :mod:`sdb.diff._drift`): the interval
  lies above zero when the mean difference exceeds about z(0.975) standard errors, so a true drift
  ``d`` is seen with 80% power when ``d = (z(0.975) + z(0.80)) * SE(d)``. ``SE(d)^2`` is the spread
  the bootstrap saw (its standard error, squared) plus the binomial spread a drift of ``d`` adds over
  each session's units, ``d (1 - d) / m``, averaged over sessions: without that term a run whose
  sessions all agree (a spread of 0) would claim to see any drift at all. Solving for ``d`` is a
  quadratic; sessions needed for a target ``t``: ``n' = k (v + h t (1 - t)) / t^2`` with
  ``k = (z(0.975) + z(0.80))^2``, ``v`` the per-session variance (``n SE^2``) and ``h`` the mean of
  ``1 / m``.
- **Outcomes** (the exact one-sided McNemar test at ``alpha``, :mod:`sdb.diff._outcomes`): with the
  positive-flip rate held at what was observed, the smallest fall of the pass rate (negative-flip rate
  minus positive-flip rate) whose exact power reaches 80%: the power sums the trinomial probability of
  every (negative, positive) count the test rejects, and the fall is found by bisection (the power
  grows with the negative-flip rate). Sessions needed: the smallest ``n`` whose exact power reaches
  80%, by bisection too (an exact test's power is a sawtooth in ``n``: the figure is where it first
  crosses). Above :data:`EXACT_MAX` sessions the normal approximation of Connor (1987) replaces the
  exact sums.

A figure is None when no difference up to 100 points reaches 80% power with these sessions.
"""

from __future__ import annotations

from math import ceil, sqrt
from statistics import NormalDist

import numpy as np

POWER = 0.80  #: the power the figures are for
DRIFT_CONFIDENCE = 0.95  #: the drift test's two-sided interval
DEFAULT_TARGET = 0.05  #: the difference ``sessions_needed`` is for unless one is given (5 points)
EXACT_MAX = 1000  #: above this many sessions the outcome figures use the normal approximation
_MAX_SESSIONS = 10**9  # sessions needed beyond this are reported as this bound's excess: never reached


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def _k_drift() -> float:
    return (_z(1 - (1 - DRIFT_CONFIDENCE) / 2) + _z(POWER)) ** 2


def drift_power(
    standard_error: float, sessions: int, inverse_units: float, target: float
) -> tuple[float | None, int | None]:
    """(minimum detectable drift, sessions needed for ``target``) of the bootstrap drift test: its
    ``standard_error`` over ``sessions``, whose units per session average ``inverse_units`` = mean(1/m)."""
    if sessions < 1:
        return None, None
    k, n, h = _k_drift(), sessions, inverse_units
    v = n * standard_error**2  # the per-session variance of the difference the bootstrap saw
    a, b, c = 1 + k * h / n, -k * h / n, -k * v / n
    d = (-b + sqrt(b * b - 4 * a * c)) / (2 * a)
    found = d if 0 < d <= 1 else None
    needed = ceil(k * (v + h * target * (1 - target)) / target**2)
    return found, min(max(needed, 1), _MAX_SESSIONS)


_CRITICAL: dict[float, list[int]] = {}  # alpha -> per m, the fewest negative flips rejected


def _critical(n: int, alpha: float) -> np.ndarray:
    """Per count m of discordant pairs (0..n), the fewest negative flips the exact one-sided McNemar
    test rejects at ``alpha`` (m + 1: none), in exact integers as :func:`mcnemar_one_sided` computes
    its p-value (reject: p < alpha). It depends on m only, so it is computed once per alpha."""
    found = _CRITICAL.setdefault(alpha, [])
    for m in range(len(found), n + 1):
        tail, term, b = 0, 1, m  # term = C(m, b); tail = sum of C(m, i) for i > b
        while b >= 0 and (tail + term) / 2**m < alpha:
            tail += term
            term = term * b // (m - b + 1) if b > 0 else 0
            b -= 1
        found.append(b + 1)
    return np.asarray(found[: n + 1])


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def _xlog(count: np.ndarray, p: float) -> np.ndarray:
    """``count * log(p)``, 0 where count is 0 (p may be 0)."""
    if p > 0:
        return np.asarray(count * np.log(p), dtype=np.float64)
    return np.where(count > 0, -np.inf, 0.0)


def mcnemar_power(n: int, negative: float, positive: float, alpha: float) -> float:
    """The power of the exact one-sided McNemar test at ``alpha`` over ``n`` paired sessions whose
    outcome goes pass -> fail with probability ``negative`` and fail -> pass with ``positive``."""
    if n > EXACT_MAX:
        return _connor_power(n, negative, positive, alpha)
    crit = _critical(n, alpha)
    lf = _log_factorials(n)
    b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = b + c <= n
    b, c = b[keep], c[keep]
    rejects = b >= crit[b + c]
    if not rejects.any():
        return 0.0
    b, c = b[rejects], c[rejects]
    rest = n - b - c
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = (
            lf[n]
            - lf[b]
            - lf[c]
            - lf[rest]
            + _xlog(b, negative)
            + _xlog(c, positive)
            + _xlog(rest, 1 - negative - positive)
        )
    return float(min(1.0, np.exp(log_p).sum()))


def _connor_power(n: int, negative: float, positive: float, alpha: float) -> float:
    """Connor's (1987) normal approximation of McNemar's power (one-sided)."""
    psi, d = negative + positive, negative - positive
    if psi <= 0 or psi - d * d <= 0:
        return 1.0 if d > 0 else 0.0
    return NormalDist().cdf((sqrt(n) * d - _z(1 - alpha) * sqrt(psi)) / sqrt(psi - d * d))


def mcnemar_min_detectable(n: int, positive_rate: float, alpha: float) -> float | None:
    """The smallest fall of the pass rate (negative-flip rate - ``positive_rate``) the exact one-sided
    McNemar test detects at 80% power over ``n`` sessions; None when not even the largest does."""
    lo, hi = positive_rate, 1.0 - positive_rate
    if n < 1 or hi <= lo or mcnemar_power(n, hi, positive_rate, alpha) < POWER:
        return None
    while hi - lo > 1e-5:
        mid = (lo + hi) / 2
        if mcnemar_power(n, mid, positive_rate, alpha) >= POWER:
            hi = mid
        else:
            lo = mid
    return hi - positive_rate


def mcnemar_sessions_needed(positive_rate: float, target: float, alpha: float) -> int | None:
    """The sessions the exact one-sided McNemar test needs to detect a fall of ``target`` at 80% power,
    with the positive-flip rate at ``positive_rate``; None when such a fall is impossible (the two
    flip rates would exceed 1)."""
    negative = positive_rate + target
    if target <= 0 or negative + positive_rate > 1:
        return None
    psi = negative + positive_rate
    approx = (_z(1 - alpha) * sqrt(psi) + _z(POWER) * sqrt(max(psi - target * target, 0.0))) ** 2 / target**2
    lo, hi = 0, min(EXACT_MAX, max(2 * ceil(approx), 8))  # Connor's figure brackets the exact one
    while mcnemar_power(hi, negative, positive_rate, alpha) < POWER:
        if hi == EXACT_MAX:
            return min(max(ceil(approx), EXACT_MAX + 1), _MAX_SESSIONS)
        lo, hi = hi, min(EXACT_MAX, 2 * hi)
    while hi - lo > 1:  # power(lo) < 80% <= power(hi)
        mid = (lo + hi) // 2
        if mcnemar_power(mid, negative, positive_rate, alpha) >= POWER:
            hi = mid
        else:
            lo = mid
    return hi


def power_text(min_detectable: float | None, target: float | None, sessions_needed: int | None) -> str:
    """The power figures as one phrase, the same in every output: ``min detectable 9.5 points (80%
    power); 150 sessions for 5 points``."""
    text = f"{detectable_text(min_detectable)} at {POWER:.0%} power"
    if sessions_needed is not None and target is not None:
        text += f"; {sessions_needed:,} sessions for {points(target)}"
    return text


def detectable_text(min_detectable: float | None) -> str:
    """The minimum detectable difference, short (a gate check's measured figure)."""
    if min_detectable is None:
        return "nothing detectable up to 100 points"
    return f"min detectable {points(min_detectable)}"


def points(value: float) -> str:
    """A difference of proportions in percentage points: 0.095 -> ``9.5 points``."""
    return f"{value * 100:.1f} points"
