"""Is SGD's noise anisotropic? Covariance spectra of sample vectors and tests against an isotropic null
(SPEC section 5). Pure functions: arrays in, numbers out.

Input: a matrix X [n, p] of n sample vectors (rows) in dimension p. Which vectors, and so what "a sample" is,
depends on the caller, and every statistic built on X inherits it (the literature mixes conventions):
- feature drift: rows are Δz_t(x) = z_{t+1}(x) - z_t(x) pooled over samples x AND consecutive checkpoint
  pairs t (sampling unit: sample-checkpoint pairs);
- gradient noise: rows are g_b - mean_b g_b over minibatches b (sampling unit: minibatches).

Spectra never build a dense p x p covariance when p > n: the nonzero eigenvalues of S = Xcᵀ Xc / (n - 1)
are those of the n x n Gram matrix Xc Xcᵀ / (n - 1). Memory: min(n, p)² floats for the eigenproblem plus X.

Statistics of the eigenvalues λ_1 >= ... >= λ_p (zeros included when p > n; trace = Σλ):
    topk_var(k)      = Σ_{i<=k} λ_i / Σ λ_i                       (explained variance of the top k)
    eff_rank         = (Σ λ_i)² / Σ λ_i²                          (participation ratio; p when isotropic)
    max_over_mean    = λ_1 / (Σ λ_i / p)
    mp_spikes        = #{λ_i > σ² (1 + sqrt(p / n))²}, σ² = Σλ / p (the null's asymptotic Marchenko-Pastur
                       edge; at finite n, p the null's own λ_1 often crosses it, so also:)
    spikes           = #{λ_i > 95% quantile of λ_1 over the Monte-Carlo null draws}
    power_law_alpha  = -slope of log λ_i against log i over the nonzero top half of the spectrum
Null: rows i.i.d. N(0, σ² I_p) with the same n, p and total variance. The Monte-Carlo p-value of topk_var
is (1 + #{null draws >= observed}) / (draws + 1); topk_var is scale-free so the null needs σ = 1 only.
Ledoit & Wolf (2002) sphericity: U = (1/p) tr[(S / (tr S / p) - I)²]; under the null n U - p -> N(1, 4)
as n, p -> ∞ together (valid also for p > n), so z = (n U - p - 1) / 2 gives a one-sided normal p-value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


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
    return float(eig.sum() ** 2 / (eig**2).sum())


def max_over_mean(eig: np.ndarray) -> float:
    return float(eig[0] / eig.mean())


def mp_spikes(eig: np.ndarray, n: int) -> int:
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


def ledoit_wolf_sphericity(x: np.ndarray) -> tuple[float, float]:
    """(U, one-sided asymptotic p-value). tr(S²) comes from the Gram matrix, so no p x p matrix is built."""
    eig = spectrum(x)
    n, p = x.shape
    u = float(((eig / eig.mean() - 1) ** 2).mean())
    z = ((n - 1) * u - p - 1) / 2
    return u, float(stats.norm.sf(z))


def null_topk_var(n: int, p: int, k: int, draws: int, seed: int = 0) -> np.ndarray:
    """topk_var of `draws` isotropic Gaussian data sets of n rows in dimension p."""
    rng = np.random.default_rng(seed)
    return np.array([topk_var(spectrum(rng.standard_normal((n, p))), k) for _ in range(draws)])


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


def analyze_samples(x: np.ndarray, k: int = 3, draws: int = 1000, seed: int = 0) -> SpectrumReport:
    """Every statistic above for the rows of `x`, with a Monte-Carlo test of `draws` null data sets."""
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    if n < 3:
        raise ValueError(f"need at least 3 sample vectors, got {n}")
    eig = spectrum(x)
    k = min(k, p)
    rng = np.random.default_rng(seed)
    null_spectra = np.stack([spectrum(rng.standard_normal((n, p))) for _ in range(draws)])
    null_spectra *= eig.sum() / null_spectra.sum(axis=1, keepdims=True)  # same total variance
    null_stat = null_spectra[:, :k].sum(axis=1) / null_spectra.sum(axis=1)
    observed = topk_var(eig, k)
    u, lw_p = ledoit_wolf_sphericity(x)
    return SpectrumReport(
        n=n,
        p=p,
        eig=eig,
        topk=[topk_var(eig, j) for j in range(1, min(10, p) + 1)],
        eff_rank=eff_rank(eig),
        max_over_mean=max_over_mean(eig),
        mp_spikes=mp_spikes(eig, n),
        spikes=int((eig > np.quantile(null_spectra[:, 0], 0.95)).sum()),
        power_law_alpha=power_law_alpha(eig),
        k=k,
        pvalue=float((1 + (null_stat >= observed).sum()) / (draws + 1)),
        null_q05=np.quantile(null_spectra, 0.05, axis=0),
        null_q95=np.quantile(null_spectra, 0.95, axis=0),
        lw_u=u,
        lw_pvalue=lw_p,
    )


def top_directions(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(top-k principal directions [k, p] as orthonormal rows, their variances [k]) of rows `x`."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    return vt[:k], s[:k] ** 2 / (len(x) - 1)
