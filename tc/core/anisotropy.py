"""Is SGD's noise anisotropic? Covariance spectra of sample vectors and tests against an isotropic null
(SPEC section 5). Pure functions: arrays in, numbers out.

Input: a matrix X [n, p] of n sample vectors (rows) in dimension p. Every statistic treats the rows as
independent draws, so the caller must hand it independent units and say what they are:
- feature drift (`drift_test`): one row per PAIR of samples, built from the whole window of that pair's
  drift (sampling unit: samples; see `drift_test` for why pairs and why unit vectors);
- gradient noise (`tc.core.sgd_noise.gradient_noise`): rows g_b - mean_b g_b over minibatches b (sampling unit:
  minibatches; the centring costs one degree of freedom, which the null below reproduces).

Spectra never build a dense p x p covariance when p > n: the nonzero eigenvalues of S = Xcᵀ Xc / (n - 1)
are those of the n x n Gram matrix Xc Xcᵀ / (n - 1). Memory: min(n, p)² floats for the eigenproblem plus X.

Statistics of the eigenvalues λ_1 >= ... >= λ_p (zeros included when p > n; trace = Σλ):
    topk_var(k)      = Σ_{i<=k} λ_i / Σ λ_i                       (explained variance of the top k)
    eff_rank         = (Σ λ_i)² / Σ λ_i²                          (participation ratio; p when isotropic)
    max_over_mean    = λ_1 / (Σ λ_i / p)
    mp_spikes        = #{λ_i > σ² (1 + sqrt(p / (n - 1)))²}, σ² = Σλ / p (the null's asymptotic
                       Marchenko-Pastur edge; at finite n, p the null's own λ_1 often crosses it, so also:)
    spikes           = #{λ_i > 95% quantile of λ_1 over the Monte-Carlo null draws}
    power_law_alpha  = -slope of log λ_i against log i over the nonzero top half of the spectrum
Null (`analyze_samples`): rows i.i.d. N(0, σ² I_p) with the same n, p and total variance, centred by their
own mean exactly as X is (so a mean estimated from the same rows costs the null the same degree of freedom).
With `directions=True` the null rows are those Gaussians scaled to unit norm, i.e. uniform on the sphere:
the exact null for unit vectors of any spherically symmetric distribution. The Monte-Carlo p-value of
topk_var is (1 + #{null draws >= observed}) / (draws + 1); topk_var is scale-free so the null needs σ = 1.
Ledoit & Wolf (2002) sphericity: U = (1/p) tr[(S / (tr S / p) - I)²], S with denominator n - 1. For Gaussian
rows (n - 1) U - p -> N(1, 4) as n, p -> ∞ together, valid also for p > n (LW's n counts degrees of
freedom; centring leaves n - 1); the code uses z = ((n - 1) U - p - 1) / 2 and the one-sided normal
p-value. For unit vectors uniform on the sphere the fourth moments differ and (n - 1) U - p -> N(-1, 4)
(E (u_iᵀu_j)² = 1/p), so `directions=True` uses z = ((n - 1) U - p + 1) / 2: a spatial-sign sphericity
test in LW's form (cf. Zou et al., Biometrika 2014). tests/test_anisotropy.py checks both null means and
variances by simulation.

The p-values over cuts are adjusted for the family-wise error by `tc.stats.multiplicity.holm`; the smallest
adjusted one is the `aniso_*_min_pvalue` that analyze logs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg, stats
from scipy.linalg import lapack


def spectrum(x: np.ndarray) -> np.ndarray:
    """Eigenvalues of the sample covariance of rows `x` [n, p], descending, length p (zeros padded)."""
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    xc = x - x.mean(axis=0)
    small = xc @ xc.T if p > n else xc.T @ xc  # [min(n, p)]² either way
    eig = np.clip(np.linalg.eigvalsh(small / (n - 1)), 0, None)[::-1]
    return np.concatenate([eig, np.zeros(p - len(eig))]) if len(eig) < p else eig


def topk_var(eig: np.ndarray, k: int) -> float:
    return float(eig[:k].sum() / eig.sum())


def eff_rank(eig: np.ndarray) -> float:
    """Effective rank (participation ratio) (Σλ)² / Σλ² of the spectrum `eig`."""
    return float(eig.sum() ** 2 / (eig**2).sum())


def max_over_mean(eig: np.ndarray) -> float:
    """λ_1 / mean λ over the p eigenvalues of `eig`."""
    return float(eig[0] / eig.mean())


def mp_spikes(eig: np.ndarray, n: int) -> int:
    """#{λ_i > σ² (1 + sqrt(p / (n - 1)))²}, σ² = Σλ / p, p = len(eig): eigenvalues above the Marchenko-Pastur
    edge of n rows centred by their mean (n - 1 degrees of freedom)."""
    p = len(eig)
    edge = eig.mean() * (1 + math.sqrt(p / (n - 1))) ** 2
    return int((eig > edge).sum())


def power_law_alpha(eig: np.ndarray) -> float:
    nz = eig[eig > eig[0] * 1e-12]
    top = nz[: max(2, len(nz) // 2)]
    if len(top) < 2:
        return math.nan
    slope = np.polyfit(np.log(np.arange(1, len(top) + 1)), np.log(top), 1)[0]
    return float(-slope)


def _lw_u(eig: np.ndarray) -> float:
    return float(((eig / eig.mean() - 1) ** 2).mean())


def ledoit_wolf_sphericity(x: np.ndarray, directions: bool = False) -> tuple[float, float]:
    """(U, one-sided asymptotic p-value), z = ((n - 1) U - p ∓ 1) / 2 (module doc; - for Gaussian rows, + for
    unit vectors with `directions=True`). tr(S²) comes from the Gram matrix, so no p x p matrix is built."""
    eig = spectrum(x)
    n, p = x.shape
    u = _lw_u(eig)
    z = ((n - 1) * u - p + (1 if directions else -1)) / 2
    return u, float(stats.norm.sf(z))


def null_spectra(n: int, p: int, draws: int, seed: int = 0, directions: bool = False) -> np.ndarray:
    """[draws, p] spectra of isotropic null data sets of n rows (Gaussian, or unit vectors with
    `directions`), each centred like the data. Vectorised: batches of Gram matrices, at most ~32 MB of
    normal draws at a time.

    A pure function of its arguments, memoised: the analysis asks for the same null at every cut (the
    gradient noise's n and p do not depend on the cut), so repeats are free. Each call returns its own array
    (the zero padding is added on the way out), so a caller's writes cannot reach the next caller."""
    eig = _null_spectra(int(n), int(p), int(draws), int(seed), bool(directions))
    return np.pad(eig, ((0, 0), (0, p - eig.shape[1])))


@functools.lru_cache(maxsize=16)
def _null_spectra(n: int, p: int, draws: int, seed: int, directions: bool) -> np.ndarray:
    """The nonzero part [draws, min(n, p)], read-only: a drift null padded to p = 12544 feature dims would hold
    100 MB per entry (1.6 GB for a full cache); unpadded, 2 MB at the default 250 pairs x 1000 draws."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(draws, 4_000_000 // (n * p)))
    out = []
    for start in range(0, draws, chunk):
        g = rng.standard_normal((min(chunk, draws - start), n, p))
        if directions:
            g /= np.linalg.norm(g, axis=2, keepdims=True)
        g -= g.mean(axis=1, keepdims=True)
        # one BLAS product per draw: numpy's batched matmul (and einsum) on a transposed stack is ~40x slower
        gram = np.stack([a @ a.T if p > n else a.T @ a for a in g])
        out.append(np.clip(np.linalg.eigvalsh(gram / (n - 1)), 0, None)[:, ::-1])
    nulls = np.concatenate(out)
    nulls.flags.writeable = False
    return nulls


@dataclass(frozen=True)
class SpectrumReport:
    """The statistics of one sample matrix; `n` and `p` name its sampling unit count and dimension."""

    n: int
    p: int
    eig: np.ndarray
    topk: list[float]  # k = 1..10 (fewer if p < 10)
    eff_rank: float
    max_over_mean: float
    mp_spikes: int
    spikes: int
    power_law_alpha: float
    k: int  # the k of the test
    pvalue: float  # Monte-Carlo p-value of topk_var(k) under the isotropic null
    null_q05: np.ndarray  # per-eigenvalue 5% / 95% bands of the null spectrum (same trace), for figures
    null_q95: np.ndarray
    lw_u: float
    lw_pvalue: float
    unit: str = "rows"  # the sampling unit: what one row of the input is


def analyze_samples(
    x: np.ndarray, k: int = 3, draws: int = 1000, seed: int = 0, directions: bool = False, unit: str = "rows"
) -> SpectrumReport:
    """Every statistic above for the rows of `x`, with a Monte-Carlo test of `draws` null data sets.
    `directions`: the rows are unit vectors (the null is uniform on the sphere; module doc). `unit`: what
    one row is, recorded in the report."""
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    if n < 3:
        raise ValueError(f"need at least 3 sample vectors, got {n}")
    eig = spectrum(x)
    k = min(k, p)
    nulls = null_spectra(n, p, draws, seed, directions)
    # same total variance
    nulls = nulls * (eig.sum() / nulls.sum(axis=1, keepdims=True))
    null_stat = nulls[:, :k].sum(axis=1) / nulls.sum(axis=1)
    observed = topk_var(eig, k)
    u, lw_p = ledoit_wolf_sphericity(x, directions)
    return SpectrumReport(
        n=n,
        p=p,
        eig=eig,
        topk=[topk_var(eig, j) for j in range(1, min(10, p) + 1)],
        eff_rank=eff_rank(eig),
        max_over_mean=max_over_mean(eig),
        mp_spikes=mp_spikes(eig, n),
        spikes=int((eig > np.quantile(nulls[:, 0], 0.95)).sum()),
        power_law_alpha=power_law_alpha(eig),
        k=k,
        pvalue=float((1 + (null_stat >= observed).sum()) / (draws + 1)),
        null_q05=np.quantile(nulls, 0.05, axis=0),
        null_q95=np.quantile(nulls, 0.95, axis=0),
        lw_u=u,
        lw_pvalue=lw_p,
        unit=unit,
    )


DRIFT_UNIT = "pairs of samples (unit vectors of the window's drift)"


def drift_units(drift: np.ndarray, seed: int = 0) -> np.ndarray:
    """[samples // 2, dims] independent unit vectors from drift [transitions, samples, dims] (see `drift_test`).
    Pairs whose drift is identical at every transition (zero difference) are dropped."""
    d = np.asarray(drift, dtype=np.float64)
    if d.ndim != 3:
        raise ValueError(f"drift must be [transitions, samples, dims], got shape {d.shape}")
    # Centre within each transition: its mean update over samples is systematic drift, not noise. The pair
    # differences below cancel it exactly (the centring is a no-op for them), so no estimate of it enters.
    d = d - d.mean(axis=1, keepdims=True)
    perm = np.random.default_rng(seed).permutation(d.shape[1])
    half = d.shape[1] // 2
    w = d[:, perm[:half]] - d[:, perm[half : 2 * half]]  # [T, pairs, dims]
    norms = np.linalg.norm(w, axis=2, keepdims=True)
    w = np.divide(w, norms, out=np.zeros_like(w), where=norms > 0).sum(axis=0)  # each transition weighs 1
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    keep = norms[:, 0] > 0
    return w[keep] / norms[keep]


def drift_test(drift: np.ndarray, k: int = 3, draws: int = 1000, seed: int = 0) -> SpectrumReport:
    """Is feature drift anisotropic? `drift`: [transitions, samples, dims] drift Δz_t(x) of the same samples
    x over consecutive transitions t. Returns the `analyze_samples` report (`.pvalue`: Monte Carlo top-k
    explained variance; `.lw_pvalue`: Ledoit-Wolf sphericity, unit-vector form) on independent units.

    Sampling unit: samples. Rows of one sample at different transitions are dependent, and every row of one
    transition shares that transition's mean update, so (sample, transition) rows are not independent units
    (pooled, isotropic nulls with either dependence were rejected 100% of the time). Here the samples are
    split at random (`seed`) into disjoint pairs (n, m); each pair gives one row
        u = normalise(Σ_t normalise(Δz_t(x_n) - Δz_t(x_m))).
    The difference removes transition t's mean update exactly; normalising each transition gives every
    transition equal weight (Σ_t Δz_t would telescope to z_last - z_first); normalising the sum makes the row
    a direction, so samples whose features drift more do not dominate. Null: samples are independent and each
    sample's drift trajectory, about the per-transition mean, has a rotation-invariant distribution (e.g.
    Gaussian with isotropic covariance, with any correlation across transitions and any per-sample scale).
    Then the pairs' rows are i.i.d. uniform on the sphere: the null that `directions=True` simulates exactly.
    Cost: half the samples' worth of rows (n = samples // 2)."""
    units = drift_units(drift, seed)
    return analyze_samples(units, k=k, draws=draws, seed=seed, directions=True, unit=DRIFT_UNIT)


class Directions(tuple):
    """(dirs [m, p], var [m]): unpacks like a pair; also `.rank` (r, the numerical rank of the centred rows) and
    `.index` (each row's position in the full descending order 0..r-1)."""

    rank: int
    index: np.ndarray

    def __new__(cls, dirs: np.ndarray, var: np.ndarray, rank: int, index: np.ndarray) -> Directions:
        self = super().__new__(cls, (dirs, var))
        self.rank, self.index = rank, index
        return self

    def __getnewargs__(self) -> tuple:  # copy, deepcopy and pickle rebuild through the 4-argument __new__
        return (*self, self.rank, self.index)


def _householder_apply(c: np.ndarray, tau: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Q z for the Q of LAPACK's dsytrd(lower=1): Q = H(1) ... H(m-1), H(i) = I - tau_i v_i v_iᵀ with v_i = 0 above
    row i + 1, 1 at it, and c[i + 2:, i] below (0-based: reflector i acts on rows i + 1 ..). Rightmost first."""
    z = z.copy()
    for i in range(len(tau) - 1, -1, -1):
        if tau[i] == 0:
            continue
        v = np.concatenate(([1.0], c[i + 2 :, i]))
        z[i + 1 :] -= np.outer(v, tau[i] * (v @ z[i + 1 :]))
    return z


def principal_directions(x: np.ndarray, k: int | None = None) -> Directions:
    """(principal directions of rows `x` [n, p] with nonzero variance, orthonormal rows in descending order of
    variance; their variances), as a `Directions` pair that also carries the rank r.

    k None: all r directions [r, p]. k given: only the top min(k, r) and the bottom min(k, r) of them, stacked in
    descending order without repeats ([min(2k, r), p]), so `dirs[:k]` is the top-k and `dirs[len(dirs) - k:]`
    the bottom-k exactly as in the full result; `.index` says which of the r they are.

    Route: the eigenproblem of the smaller Gram matrix G (Xc Xcᵀ when p > n, else Xcᵀ Xc; Xc the centred rows),
    whose eigenvalues λ are the squared singular values of Xc; directions v = Xcᵀ u / sqrt(λ) (p > n) or the
    eigenvectors themselves. With k, G is reduced to tridiagonal form once (dsytrd), all eigenvalues come from
    that form (for r), and only the 2k wanted eigenvectors are computed and back-transformed: the Gram product
    plus one tridiagonal reduction, where the full SVD also forms every singular vector (≈ 6x faster at
    [2000, 12544]; without k, all r directions v = Xcᵀ U / s cost one more [p, n] x [n, r] product, ≈ 1.6x).

    Rank: r = #{λ_i > λ_1 · max(n, p) · eps}, numpy's `matrix_rank` tolerance applied to G. G's entries are
    dot products of length max(n, p), so rounding blurs its eigenvalues by up to ~ max(n, p) · eps · λ_1; the
    eigenvalues below that cannot be told from zero (a centred matrix always has one exact zero). The former SVD
    route resolved singular values down to 1e-10 s_1 (λ down to 1e-20 λ_1); this one only down to
    s_1 sqrt(max(n, p) eps) (≈ 1.7e-6 s_1 at p = 12544). Consequence for the bottom directions: directions whose
    singular values lie between those two floors are no longer counted (r can be smaller), and the bottom
    directions near the floor are accurate only to ~ eps λ_1 / (gap in λ) · s_1 / s_i, so on a spectrum that
    decays into rounding noise (float32 features) the bottom-k is a different basis of near-null directions
    than the SVD's. On a well-separated spectrum (tests/test_principal_directions.py) both agree; the top-k
    agree to principal angles < 1e-8."""
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    xc = x - x.mean(axis=0)
    wide = p > n
    g = xc @ xc.T if wide else xc.T @ xc
    m = len(g)
    if k is None:
        lam, u = np.linalg.eigh(g)
        lam, u = lam[::-1], u[:, ::-1]
    else:
        # lower=1 on a C-ordered symmetric G: LAPACK sees Gᵀ = G in Fortran order, so no copy is made. The
        # optimal workspace matters: the wrapper's default (m) forces the unblocked, BLAS-2-only reduction.
        lwork = int(lapack.dsytrd_lwork(m, lower=1)[0])
        c, d, e, tau, info = lapack.dsytrd(g.T, lower=1, lwork=max(lwork, 1), overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"dsytrd failed (info {info})")
        lam = linalg.eigvalsh_tridiagonal(d, e)[::-1]
    r = int((lam > lam[0] * max(n, p) * np.finfo(np.float64).eps).sum()) if m and lam[0] > 0 else 0
    if k is None:
        index = np.arange(r)
        vecs = u[:, :r]
    else:
        kk = min(k, r)
        # the top-kk and bottom-kk of the r nonzero eigenvalues, as ascending indices of the tridiagonal form
        blocks = [(m - r, m - 1)] if r <= 2 * kk else [(m - r, m - r + kk - 1), (m - kk, m - 1)]
        blocks = [(lo, hi) for lo, hi in blocks if hi >= lo]
        ascending = np.concatenate([np.arange(lo, hi + 1) for lo, hi in blocks]) if blocks else np.arange(0)
        index = (m - 1 - ascending)[::-1]
        z = [linalg.eigh_tridiagonal(d, e, select="i", select_range=b)[1] for b in blocks]
        vecs = _householder_apply(c, tau, np.hstack(z))[:, ::-1] if z else np.zeros((m, 0))
    var = lam[index] / (n - 1)
    dirs = (xc.T @ vecs / np.sqrt(lam[index])).T if wide else vecs.T  # v = Xcᵀ u / s, or G's own eigenvectors
    return Directions(np.ascontiguousarray(dirs), var, r, index)
