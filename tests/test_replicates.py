"""Seed-level intervals and verdicts (`tc.replicates`): the interval against scipy, its coverage and the
"reproduces" rate under a realistic null (arms paired by seed, a shared per-seed effect much larger than the
arm effect, heavy-tailed seed noise), and its power."""

import math

import numpy as np
import pytest
from scipy import stats

from tc import replicates as R


def test_t_interval_matches_scipy():
    v = [0.91, 0.88, 0.95, 0.9, 0.93]
    mean, lo, hi = R.t_interval(v)
    ref = stats.ttest_1samp(v, 0.0).confidence_interval(0.95)
    assert mean == pytest.approx(np.mean(v)) and lo == pytest.approx(ref.low) and hi == pytest.approx(ref.high)
    assert math.isnan(R.t_interval([0.5])[1])


@pytest.mark.parametrize(
    ("low", "high", "expected", "margin", "want"),
    [
        (0.01, 0.2, 1, 0.0, R.REPRODUCES),
        (-0.2, -0.01, 1, 0.0, R.REFUTED),
        (-0.2, 0.3, 1, 0.0, R.INCONCLUSIVE),
        (-0.005, 0.008, 1, 0.01, R.REFUTED),  # any effect is smaller than the margin
        (-0.2, -0.01, -1, 0.0, R.REPRODUCES),
        (0.01, 0.2, 0, 0.0, R.DIFFERS),
        (-0.005, 0.008, 0, 0.01, R.NO_DIFFERENCE),
        (-0.02, 0.3, 0, 0.01, R.INCONCLUSIVE),
        (math.nan, math.nan, 1, 0.0, R.INCONCLUSIVE),
    ],
)
def test_verdict_follows_the_interval(low, high, expected, margin, want):
    assert R.verdict(low, high, expected, margin) == want


def _paired_arms(rng, n_seeds: int, effect: float):
    """Two arms at n seeds: a per-seed effect shared by both arms (same init and data order; sd 0.05, t3
    tails) plus independent arm noise (sd 0.01) — the dependence the report's experiments have."""
    shared = 0.05 * rng.standard_t(3, n_seeds)
    a = 0.8 + shared + effect + 0.01 * rng.standard_normal(n_seeds)
    b = 0.8 + shared + 0.01 * rng.standard_normal(n_seeds)
    return dict(enumerate(a)), dict(enumerate(b))


def test_paired_effect_is_calibrated_under_the_null():
    """No arm effect: the 95% interval covers 0 in ~95% of 2000 experiments of 5 seeds, and a directional
    claim is called `reproduces` in <= 2.5% + MC error."""
    rng = np.random.default_rng(0)
    claim = R.Claim("tc_kappa_test", "clean", "random")
    effects = [R.paired_effect(claim, *_paired_arms(rng, 5, 0.0)) for _ in range(2000)]
    cover = np.mean([e.low <= 0 <= e.high for e in effects])
    wrong = np.mean([e.verdict == R.REPRODUCES for e in effects])
    assert 0.935 <= cover <= 0.965, cover
    assert wrong <= 0.035, wrong


def test_paired_effect_has_power_and_unpaired_seeds_are_left_out():
    rng = np.random.default_rng(1)
    claim = R.Claim("test_acc", "frozen", "base", expected=-1)
    found = np.mean([R.paired_effect(claim, *_paired_arms(rng, 5, -0.03)).verdict == R.REPRODUCES for _ in range(500)])
    assert found >= 0.9, found  # a 3-point drop against 1-point arm noise, 5 seeds
    e = R.paired_effect(claim, {0: 0.7, 1: 0.72, 2: math.nan, 3: 0.71}, {0: 0.8, 1: 0.81, 2: 0.8})
    assert e.n == 2 and e.diff == pytest.approx(-0.095)


def test_one_sample_claim_against_zero():
    e = R.paired_effect(R.Claim("tc_excess_test", "base"), {0: 0.4, 1: 0.5, 2: 0.45})
    assert e.verdict == R.REPRODUCES and e.n == 3 and math.isnan(e.mean_b)
