"""Drift versus variance: is the candidate's divergence more than the model's own noise?

Per session, the candidate's step divergence rate (against the base) is paired with the noise floor's
(the base model against itself: a self-replay, or the candidate's repeats against each other). The
difference of their means gets a bootstrap 95% confidence interval: sessions are resampled with
replacement, 10,000 times by default, with a fixed seed, all at once in numpy (one (resamples x
sessions) index matrix, no Python loop). "Drift above noise" is said only when the whole interval
lies above zero. Beside the verdict, what the test could have seen: the smallest drift it detects at
80% power with these sessions, and the sessions it would need for a given one (:mod:`sdb.diff._power`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdbctl.sdb.diff._power import DEFAULT_TARGET, drift_power


@dataclass(frozen=True)
class DriftResult:
    """The candidate's divergence against the noise floor, per session, and the verdict on it."""

    source: str  #: where the noise floor comes from (a self-replay, or the candidate's repeats)
    sessions: int  #: sessions paired
    noise_floor: float  #: mean per-session divergence of the noise
    candidate: float  #: mean per-session divergence of the candidate
    difference: float  #: candidate - noise_floor
    ci95: tuple[float, float]  #: bootstrap 95% interval of the difference
    resamples: int  #: bootstrap resamples
    drift_above_noise: bool  #: the whole interval lies above zero
    standard_error: float | None = None  #: the bootstrap's standard error of the mean difference
    #: the smallest drift (a proportion) detected at 80% power with these sessions; None: none up to 1
    min_detectable: float | None = None
    target: float | None = None  #: the drift ``sessions_needed`` is for
    sessions_needed: int | None = None  #: sessions that would detect a drift of ``target`` at 80% power

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriftResult:
        """A drift figure read back from its JSON (inside a saved summary)."""
        lo, hi = data["ci95"]
        return cls(**{**data, "ci95": (float(lo), float(hi))})


def drift_test(
    candidate: Sequence[float] | np.ndarray[Any, Any],
    noise: Sequence[float] | np.ndarray[Any, Any],
    *,
    source: str = "noise",
    resamples: int = 10_000,
    seed: int = 0,
    units: Sequence[int] | None = None,
    target: float = DEFAULT_TARGET,
) -> DriftResult:
    """Bootstrap the mean of the per-session differences ``candidate - noise`` (paired by session).
    ``units``: per session, the units its rate is a share of (None: 1 each, the most spread a drift
    can add); ``target``: the drift whose sessions needed are reported."""
    cand = np.asarray(candidate, dtype=np.float64)
    base = np.asarray(noise, dtype=np.float64)
    if cand.shape != base.shape or cand.size == 0:
        raise ValueError("drift_test needs one candidate and one noise figure per session, for at least one session")
    diff = cand - base
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(resamples, diff.size))
    means = diff[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    se = float(means.std())
    per_unit = 1.0 if units is None else float(np.mean(1.0 / np.maximum(np.asarray(units, dtype=np.float64), 1)))
    detectable, needed = drift_power(se, int(diff.size), per_unit, target)
    return DriftResult(
        source=source,
        sessions=int(diff.size),
        noise_floor=float(base.mean()),
        candidate=float(cand.mean()),
        difference=float(diff.mean()),
        ci95=(float(lo), float(hi)),
        resamples=resamples,
        drift_above_noise=bool(lo > 0),
        standard_error=se,
        min_detectable=detectable,
        target=target,
        sessions_needed=needed,
    )
