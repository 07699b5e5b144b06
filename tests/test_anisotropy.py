"""Anisotropy statistics against brute force, and the tests' level and power on simulated data."""

import numpy as np
import pytest

from tc.core import anisotropy as A
from tc.stats.multiplicity import holm


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
    # the production path: analyze_samples draws its own (vectorised) null for every data set
    rng = np.random.default_rng(2)
    trials = 120
    rejections_mc, rejections_lw = 0, 0
    for i in range(trials):
        r = A.analyze_samples(rng.standard_normal((n, p)) * 3.0, k=3, draws=199, seed=i)
        rejections_mc += r.pvalue < 0.05
        rejections_lw += r.lw_pvalue < 0.05
    assert rejections_mc / trials < 0.1
    assert rejections_lw / trials < 0.1


def test_null_spectra_equal_the_spectra_of_the_same_draws_one_by_one():
    for directions in (False, True):
        for n, p in ((12, 5), (5, 12)):
            g = np.random.default_rng(7).standard_normal((4, n, p))
            if directions:
                g /= np.linalg.norm(g, axis=2, keepdims=True)
            brute = np.stack([A.spectrum(x) for x in g])
            assert np.allclose(A.null_spectra(n, p, 4, seed=7, directions=directions), brute, atol=1e-12)


def test_unit_vector_lw_statistic_has_the_stated_null_mean_and_variance():
    # (n - 1) U - p ≈ N(-1, 4) for unit vectors (module doc), vs N(1, 4) for Gaussian rows
    n, p = 300, 30
    for directions, mean in ((True, -1.0), (False, 1.0)):
        eig = A.null_spectra(n, p, 800, seed=3, directions=directions)
        z = (n - 1) * ((eig / eig.mean(axis=1, keepdims=True) - 1) ** 2).mean(axis=1) - p
        assert abs(z.mean() - mean) < 0.3 and abs(z.var() - 4) < 0.8


def _holm_brute(p, alphas):
    """Holm's step-down procedure run at every α; adjusted p_i = the smallest α at which H_i is rejected."""
    m = len(p)
    order = np.argsort(p)
    out = np.ones(m)
    for a in sorted(alphas):
        for j, i in enumerate(order):
            if p[i] > a / (m - j) * (1 + 1e-12):  # a = (m - j) p_i exactly, up to rounding
                break
            out[i] = min(out[i], a)
    return out


def test_holm_matches_the_step_down_procedure():
    rng = np.random.default_rng(8)
    for m in (1, 2, 4, 7):
        for _ in range(20):
            p = rng.uniform(0, 0.3, m) ** 2
            p[rng.integers(m)] = p[0]  # ties
            candidates = [min(1.0, (m - j) * q) for q in p for j in range(m)] + [1.0]
            assert np.allclose(holm(p), _holm_brute(p, candidates))
    assert np.allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


T, N, P = 4, 400, 32


def _null_shared_per_sample(rng):
    """Each sample shares half its variance across transitions, plus a large per-transition mean update."""
    return (
        np.sqrt(0.5) * rng.standard_normal((1, N, P))
        + np.sqrt(0.5) * rng.standard_normal((T, N, P))
        + 3 * rng.standard_normal((T, 1, P))
    )


def _null_shared_per_transition(rng):
    """Each transition shares 5% of the variance as a common shift of all samples."""
    return np.sqrt(0.05) * rng.standard_normal((T, 1, P)) + np.sqrt(0.95) * rng.standard_normal((T, N, P))


def _null_heavy_tailed_scales(rng):
    """Samples drift by log-normally different amounts (isotropic directions), plus a per-transition mean."""
    return np.exp(rng.standard_normal((1, N, 1))) * rng.standard_normal((T, N, P)) + rng.standard_normal((T, 1, P))


def _spiked_drift(rng, strength=0.5):
    dirs = np.linalg.qr(rng.standard_normal((P, 3)))[0].T
    return rng.standard_normal((T, N, P)) + strength * np.sqrt(P / 3) * rng.standard_normal((T, N, 3)) @ dirs


NULLS = [_null_shared_per_sample, _null_shared_per_transition, _null_heavy_tailed_scales]


@pytest.mark.parametrize("null", NULLS)
def test_drift_test_holds_its_level_on_dependent_nulls(null):
    # 100 data sets, 199 null draws each (fewer than the production 1000, to keep the test fast)
    rng = np.random.default_rng(10)
    trials = 100
    mc = lw = 0
    for i in range(trials):
        r = A.drift_test(null(rng), k=3, draws=199, seed=i)
        assert r.n == N // 2 and r.p == P and r.unit == A.DRIFT_UNIT
        mc += r.pvalue < 0.05
        lw += r.lw_pvalue < 0.05
    assert mc / trials <= 0.1 and lw / trials <= 0.1


@pytest.mark.parametrize("null", NULLS[:2])
def test_pooled_sample_transition_rows_reject_the_dependent_nulls(null):
    # the old path (every (transition, sample) row a unit, no centring): why drift_test exists
    rng = np.random.default_rng(11)
    trials = 10
    rejected = sum(
        A.analyze_samples(null(rng).reshape(-1, P), k=3, draws=199, seed=i).pvalue < 0.05 for i in range(trials)
    )
    assert rejected >= 8


def test_drift_test_detects_a_few_strong_directions():
    rng = np.random.default_rng(12)
    for i in range(20):
        r = A.drift_test(_spiked_drift(rng), k=3, draws=199, seed=i)
        assert r.pvalue < 0.05 and r.lw_pvalue < 0.05


def test_drift_units_are_independent_pair_directions():
    rng = np.random.default_rng(13)
    d = rng.standard_normal((3, 9, 5)) + rng.standard_normal((3, 1, 5)) * 100  # huge shared mean update
    u = A.drift_units(d, seed=1)
    assert u.shape == (4, 5) and np.allclose(np.linalg.norm(u, axis=1), 1)
    perm = np.random.default_rng(1).permutation(9)
    w = d[:, perm[0]] - d[:, perm[4]]  # the first pair, by hand: the shared update cancels
    v = (w / np.linalg.norm(w, axis=1, keepdims=True)).sum(axis=0)
    assert np.allclose(u[0], v / np.linalg.norm(v))
    with pytest.raises(ValueError):
        A.drift_units(d[0])


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


def test_principal_directions_recover_a_planted_direction():
    rng = np.random.default_rng(5)
    v = np.zeros(10)
    v[3] = 1.0
    x = rng.standard_normal((500, 10)) * 0.1 + rng.standard_normal((500, 1)) * 5 * v
    dirs, var = A.principal_directions(x)  # the production path of the perturbation test's directions
    assert abs(dirs[0] @ v) > 0.99 and var[0] > 10 * var[1]
