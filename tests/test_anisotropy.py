"""Anisotropy statistics against brute force, and the tests' level and power on simulated data."""

import numpy as np
import pytest

from tc import anisotropy as A


def test_spectrum_equals_numpy_covariance_both_ways():
    rng = np.random.default_rng(0)
    for n, p in ((50, 8), (6, 20)):  # samples > dimension, and dimension > samples (Gram form)
        x = rng.standard_normal((n, p)) * np.arange(1, p + 1)
        brute = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
        assert np.allclose(A.spectrum(x), np.clip(brute, 0, None), atol=1e-9)


def test_statistics_match_their_formulas_on_a_known_spectrum():
    eig = np.array([4.0, 2.0, 1.0, 1.0])
    assert A.topk_var(eig, 1) == 0.5 and A.topk_var(eig, 2) == 0.75
    assert A.eff_rank(eig) == pytest.approx(64 / 22)
    assert A.eff_rank(np.ones(7)) == pytest.approx(7)  # isotropic: full rank
    assert A.max_over_mean(eig) == pytest.approx(2.0)
    assert A.power_law_alpha(np.arange(1, 101, dtype=float) ** -1.5) == pytest.approx(1.5, rel=1e-6)


def test_ledoit_wolf_u_matches_a_dense_computation():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 10))
    s = np.cov(x, rowvar=False)
    dense = np.trace((s / (np.trace(s) / 10) - np.eye(10)) @ (s / (np.trace(s) / 10) - np.eye(10))) / 10
    assert A.ledoit_wolf_sphericity(x)[0] == pytest.approx(dense)


def _spiked(rng, n, p, strength):
    u = rng.standard_normal((n, 2)) * strength
    return rng.standard_normal((n, p)) + u @ rng.standard_normal((2, p)) / np.sqrt(p) * np.sqrt(p)


@pytest.mark.parametrize("n,p", [(200, 20), (30, 100)])
def test_isotropic_data_is_rejected_at_about_the_nominal_level(n, p):
    rng = np.random.default_rng(2)
    null = A.null_topk_var(n, p, 3, draws=400, seed=99)  # one shared null, as analyze_samples draws it
    rejections_mc, rejections_lw = 0, 0
    trials = 300
    for _ in range(trials):
        x = rng.standard_normal((n, p)) * 3.0
        observed = A.topk_var(A.spectrum(x), 3)
        rejections_mc += (1 + (null >= observed).sum()) / (len(null) + 1) < 0.05
        rejections_lw += A.ledoit_wolf_sphericity(x)[1] < 0.05
    assert rejections_mc / trials < 0.1
    assert rejections_lw / trials < 0.1


def test_spiked_data_is_rejected_with_high_power():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(20):
        report = A.analyze_samples(_spiked(rng, 200, 20, 1.0), k=2, draws=200, seed=5)
        hits += report.pvalue < 0.05 and report.lw_pvalue < 0.05
        assert report.spikes >= 1 and report.mp_spikes >= 1
    assert hits == 20


def test_report_on_isotropic_data_looks_isotropic():
    rng = np.random.default_rng(4)
    r = A.analyze_samples(rng.standard_normal((500, 16)), k=3, draws=300)
    assert r.pvalue > 0.01 and r.spikes == 0 and r.eff_rank > 0.9 * 16
    assert len(r.topk) == 10 and np.all(np.diff(r.topk) >= 0)
    assert np.all(r.null_q05 <= r.null_q95)


def test_top_directions_recover_a_planted_direction():
    rng = np.random.default_rng(5)
    v = np.zeros(10)
    v[3] = 1.0
    x = rng.standard_normal((500, 10)) * 0.1 + rng.standard_normal((500, 1)) * 5 * v
    dirs, var = A.top_directions(x, 2)
    assert abs(dirs[0] @ v) > 0.99 and var[0] > 10 * var[1]
