"""Drift versus variance: is the candidate's divergence more than the model's own noise?

Per session, the candidate's step divergence rate (against the base) is paired with the noise floor's
(the base model against itself: a self-replay, or the candidate's repeats against each other). The
difference of their means gets a bootstrap 95% confidence interval: sessions are resampled with
replacement, 10,000 times by default, with a fixed seed, all at once in numpy (one (resamples x
sessions) index matrix, no Python loop). "Drift above noise" is said only when the whole interval
lies above zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DriftResult:
    source: str
    sessions: int
    noise_floor: float
    candidate: float
    difference: float
    ci95: tuple[float, float]
    resamples: int
    drift_above_noise: bool

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["ci95"] = list(self.ci95)
        return out


def drift_test(
    candidate: Sequence[float] | np.ndarray[Any, Any],
    noise: Sequence[float] | np.ndarray[Any, Any],
    *,
    source: str = "noise",
    resamples: int = 10_000,
    seed: int = 0,
) -> DriftResult:
    """Bootstrap the mean of the per-session differences ``candidate - noise`` (paired by session)."""
    cand = np.asarray(candidate, dtype=np.float64)
    base = np.asarray(noise, dtype=np.float64)
    if cand.shape != base.shape or cand.size == 0:
        raise ValueError("drift_test needs one candidate and one noise figure per session, for at least one session")
    diff = cand - base
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(resamples, diff.size))
    means = diff[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return DriftResult(
        source=source,
        sessions=int(diff.size),
        noise_floor=float(base.mean()),
        candidate=float(cand.mean()),
        difference=float(diff.mean()),
        ci95=(float(lo), float(hi)),
        resamples=resamples,
        drift_above_noise=bool(lo > 0),
    )
