"""Principal directions by the Gram route against the frozen full SVD (benchmarks.reference), and the memoised
null spectra (issue 21, P2 and P5)."""

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from benchmarks.reference import old_principal_directions
from tc.core import anisotropy as A


def _rows(n: int, p: int, sv: np.ndarray, seed: int = 0) -> np.ndarray:
    """n rows in dimension p whose centred matrix has singular values close to `sv` (random bases; one
    orthonormal column is the constant vector's complement, so centring leaves the spectrum as planted)."""
    rng = np.random.default_rng(seed)
    m = len(sv)
    u, _ = np.linalg.qr(rng.standard_normal((n, m)))
    u -= u.mean(axis=0)  # centred columns: the centring below leaves the planted rows (nearly) as they are
    u, _ = np.linalg.qr(u)
    v, _ = np.linalg.qr(rng.standard_normal((p, m)))
    return (u * sv) @ v.T + rng.standard_normal(p)  # a common offset, removed by the centring


SHAPES = [(120, 2000), (500, 60)]  # n << p (Gram n x n) and n > p (Gram p x p)


@pytest.mark.parametrize(("n", "p"), SHAPES)
@pytest.mark.parametrize("k", [None, 3])
def test_top_k_matches_the_full_svd(n, p, k):
    m = min(n - 1, p)
    x = _rows(n, p, np.exp(-np.arange(m) / (m / 10)))  # a decaying spectrum, into ~1e-4 s_1
    old_dirs, old_var = old_principal_directions(x)
    res = A.principal_directions(x, k)
    dirs, var = res
    assert res.rank == len(old_dirs)
    top = 3
    assert np.all(res.index[:top] == np.arange(top))
    assert np.max(subspace_angles(old_dirs[:top].T, dirs[:top].T)) < 1e-8
    for j in range(top):  # each direction on its own too (distinct variances), up to sign
        assert abs(abs(old_dirs[j] @ dirs[j]) - 1) < 1e-12
    np.testing.assert_allclose(var[:top], old_var[:top], rtol=1e-10)
    np.testing.assert_allclose(dirs @ dirs.T, np.eye(len(dirs)), atol=1e-6)


@pytest.mark.parametrize(("n", "p"), SHAPES)
@pytest.mark.parametrize("k", [None, 3])
def test_bottom_k_matches_the_full_svd_on_a_well_separated_spectrum(n, p, k):
    m = min(n - 1, p)
    sv = np.linspace(10.0, 1.0, m)  # condition 10: every gap is resolved by both routes
    x = _rows(n, p, sv, seed=1)
    old_dirs, old_var = old_principal_directions(x)
    dirs, var = A.principal_directions(x, k)
    assert len(old_dirs) == m
    # the caller's slices (tc.core.sgd_noise.perturbation_test) give the same rows with or without k
    kk = min(3, len(dirs))
    bottom_new, bottom_old = dirs[len(dirs) - kk :], old_dirs[len(old_dirs) - kk :]
    assert np.max(subspace_angles(bottom_old.T, bottom_new.T)) < 1e-8
    np.testing.assert_allclose(var[len(var) - kk :], old_var[len(old_var) - kk :], rtol=1e-10)


def test_k_selects_the_rows_of_the_full_result():
    x = _rows(80, 300, np.exp(-np.arange(40) / 6.0), seed=2)
    full = A.principal_directions(x)
    for k in (1, 3, 20, 30, 100):
        part = A.principal_directions(x, k)
        kk = min(k, full.rank)
        assert part.rank == full.rank and len(part[0]) == min(2 * k, full.rank)
        assert np.array_equal(part.index, np.unique(np.r_[np.arange(kk), np.arange(full.rank - kk, full.rank)]))
        np.testing.assert_allclose(part[1], full[1][part.index], rtol=1e-10)
        cos = np.abs(np.sum(part[0] * full[0][part.index], axis=1))
        assert np.all(np.abs(cos - 1) < 1e-6)


@pytest.mark.parametrize(("n", "p"), [(60, 500), (400, 30), (30, 30)])
def test_centred_rank_deficient_rows_give_the_svd_rank(n, p):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, 5)) @ rng.standard_normal((5, p)) + rng.standard_normal(p)  # rank 5 after centring
    assert len(old_principal_directions(x)[0]) == 5
    for k in (None, 2):
        assert A.principal_directions(x, k).rank == 5
    dirs, var = A.principal_directions(np.zeros((n, p)), 3)  # nothing varies
    assert A.principal_directions(np.zeros((n, p))).rank == 0 and dirs.shape == (0, p) and len(var) == 0


def test_null_spectra_are_memoised_bit_identical_and_mutations_do_not_leak():
    args = (20, 7, 50, 11, True)
    first = A.null_spectra(*args)
    again = A.null_spectra(*args)
    assert np.array_equal(first, again)
    assert np.array_equal(first, A._null_spectra.__wrapped__(*args))  # the cache returns the uncached values (n > p)
    before = first.copy()
    first[0, 0] = -1.0  # a caller's copy: what the next caller gets does not change
    assert np.array_equal(A.null_spectra(*args), before)
    with pytest.raises(ValueError):
        A._null_spectra(*args)[0, 0] = 0.0  # the cached array itself is read-only
    x = np.random.default_rng(0).standard_normal((20, 7))
    r1 = A.analyze_samples(x, draws=50, seed=11, directions=True)  # rescales the null without touching it
    r2 = A.analyze_samples(x, draws=50, seed=11, directions=True)
    assert np.array_equal(A.null_spectra(*args), before)
    assert r1.pvalue == r2.pvalue and np.array_equal(r1.null_q95, r2.null_q95)


def test_directions_copy_and_pickle_like_the_pair_they_replace():
    """A tuple subclass with a 4-argument __new__ breaks copy/deepcopy/pickle unless it says how to rebuild."""
    import copy
    import pickle

    res = A.principal_directions(_rows(30, 50, np.linspace(3.0, 1.0, 20), seed=4), 2)
    for twin in (copy.copy(res), copy.deepcopy(res), pickle.loads(pickle.dumps(res))):
        assert isinstance(twin, A.Directions) and twin.rank == res.rank
        assert np.array_equal(twin.index, res.index)
        assert all(np.array_equal(a, b) for a, b in zip(twin, res, strict=True))


def test_the_null_cache_holds_only_the_nonzero_eigenvalues():
    """A drift null is [draws, feature dims] (100 MB at 1000 x 12544), but at most n - 1 of its columns are
    nonzero: the memo keeps [draws, min(n, p)] and pads on the way out, so 16 entries stay small."""
    n, p, draws = 6, 300, 40
    wide = A.null_spectra(n, p, draws, seed=5, directions=True)
    held = A._null_spectra(n, p, draws, 5, True)
    assert wide.shape == (draws, p) and held.shape == (draws, n)
    assert np.array_equal(wide[:, :n], held) and not wide[:, n:].any()
