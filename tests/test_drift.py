"""Drift versus variance: the bootstrap interval, and the noise-aware gate's error rates over trials."""

from __future__ import annotations

import numpy as np
import pytest

from sdbctl.sdb.diff import drift_test

SESSIONS, STEPS, TRIALS, NOISE = 500, 4, 200, 0.10


def _rates(rng: np.random.Generator, p: float) -> np.ndarray:
    """Per-session step divergence rates of simulated runs (digests compared in memory)."""
    return rng.binomial(STEPS, p, size=SESSIONS) / STEPS


def _fails(p_candidate: float) -> float:
    """The share of trials in which the noise-aware gate fails (drift above noise)."""
    fails = 0
    for trial in range(TRIALS):
        rng = np.random.default_rng(trial)
        noise, candidate = _rates(rng, NOISE), _rates(rng, p_candidate)
        fails += drift_test(candidate, noise, resamples=2000, seed=trial).drift_above_noise
    return fails / TRIALS


def test_the_model_against_its_own_noise_fails_at_most_5_percent_of_trials() -> None:
    assert _fails(NOISE) <= 0.05


def test_five_points_of_drift_above_noise_fail_at_least_95_percent_of_trials() -> None:
    assert _fails(NOISE + 0.05) >= 0.95


def test_interval_and_verdict() -> None:
    same = drift_test([0.2] * 50, [0.2] * 50)
    assert same.ci95 == (0.0, 0.0) and not same.drift_above_noise
    above = drift_test([0.6] * 30 + [0.4] * 30, [0.1] * 60, resamples=500)
    assert above.ci95[0] > 0 and above.drift_above_noise and above.difference == pytest.approx(0.4)
    with pytest.raises(ValueError):
        drift_test([0.1], [0.1, 0.2])
