"""The bootstrap of rank statistics, all resamples at once (the CIs of `tc.stats.rankcorr.correlation_table`).

A resample is a row of `idx` (draws x n): n trials drawn with replacement (percentile method, sampling unit:
the trial). Every pairwise sum over a resample's pairs, Σ_{i,j} f(idx_i, idx_j), equals Σ_{p,q} w_p w_q f(p, q)
with w the resample's counts of each trial, so the sums behind τ-b are w^T M w for an n x n matrix M computed
once: one BLAS product for all draws. tests/test_sweep_fast.py checks every statistic against SciPy per
resample, ties, repeated trials and undefined resamples included.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats


class Signs(NamedTuple):
    """One variable: its n x n sign matrix S (NaN pairs as 0), S², and its NaN rows."""

    s: np.ndarray
    s2: np.ndarray
    nan: np.ndarray


def signs(x: np.ndarray) -> Signs:
    """The `Signs` of the values x (n), sign(x_i - x_j) for every pair."""
    x = np.asarray(x, float)
    with np.errstate(invalid="ignore"):
        s = np.nan_to_num(np.sign(x[:, None] - x[None, :]))
    return Signs(s, s * s, np.isnan(x))


def counts(idx: np.ndarray) -> np.ndarray:
    """draws x n: how often each trial appears in each resample."""
    draws, n = idx.shape
    flat = (idx + n * np.arange(draws)[:, None]).ravel()
    return np.bincount(flat, minlength=draws * n).reshape(draws, n).astype(float)


def quads(w: np.ndarray, mats: list[np.ndarray]) -> np.ndarray:
    """draws x len(mats): w^T M w per resample for each M, with one matrix product for all of them."""
    draws, n = w.shape
    if not mats:
        return np.zeros((draws, 0))
    prod = (w @ np.concatenate(mats, axis=1)).reshape(draws, len(mats), n)
    return np.einsum("dkp,dp->dk", prod, w)


def tau_with(a: Signs, others: list[Signs], w: np.ndarray, dens: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(Σ S_a² per resample, draws x len(others) τ-b of `a` with each of `others`, whose Σ S² are `dens`).

    τ-b of a resample (SciPy's, ties from repeated trials included) is Σ S_a S_b / sqrt(Σ S_a² Σ S_b²) over
    its pairs; NaN where either is constant in it or it holds a NaN of either. Sampling unit: the trial."""
    q = quads(w, [a.s2, *(a.s * b.s for b in others)])
    den_a, taus = q[:, 0], q[:, 1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, (b, den_b) in enumerate(zip(others, dens, strict=True)):
            taus[:, k] /= np.sqrt(den_a * den_b)
            taus[(w[:, a.nan | b.nan] > 0).any(axis=1), k] = np.nan
    return den_a, taus


def kendall_draws(a: Signs, b: Signs, w: np.ndarray) -> np.ndarray:
    """τ-b of `a` and `b` on each resample (`tau_with`)."""
    return tau_with(a, [b], w, [quads(w, [b.s2])[:, 0]])[1][:, 0]


def spearman_draws(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each resample (average ranks, then Pearson per row); NaN for a constant resample."""
    rx, ry = stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))


def partial_draws(tau_mg: np.ndarray, tau_mc: np.ndarray, tau_gc: np.ndarray, tau_cc: np.ndarray) -> np.ndarray:
    """`tc.stats.rankcorr.partial_kendall` of each resample from its τ-b matrices: tau_mg (draws), tau_mc and tau_gc
    (draws x c), tau_cc (draws x c x c, the controls' own; the same for every measure). An undefined τ enters
    as 0, which is also what dropping a control that is constant in the resample amounts to (its row and
    column of the matrix are then those of the identity, so P restricted to the others is unchanged)."""
    draws, c = tau_mc.shape
    t = np.zeros((draws, c + 2, c + 2))
    t[:, 0, 1] = t[:, 1, 0] = tau_mg
    t[:, 0, 2:] = t[:, 2:, 0] = tau_mc
    t[:, 1, 2:] = t[:, 2:, 1] = tau_gc
    t[:, 2:, 2:] = tau_cc
    t = np.nan_to_num(t, nan=0.0)
    t[:, np.arange(c + 2), np.arange(c + 2)] = 1.0
    p = np.linalg.pinv(t)
    return -p[:, 0, 1] / np.sqrt(np.maximum(p[:, 0, 0] * p[:, 1, 1], 1e-300))


def percentile_ci(values: np.ndarray, draws: int) -> tuple[float, float]:
    """Percentile 95% interval over the defined resamples (a resample can repeat one trial and make a
    statistic undefined: it is skipped); fewer than half defined gives NaN."""
    values = values[~np.isnan(values)]
    if len(values) < draws // 2 or len(values) == 0:
        return math.nan, math.nan
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))
