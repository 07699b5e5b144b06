"""How well an estimate of test error matches the error, over trials (Jiang et al., ICLR 2022, GDE): a
calibrated estimate ê has ê ≈ err on every trial. Pure: arrays in, numbers out.

Sampling unit: the trial (one trained configuration; its estimate and its error are one pair). The pairs are
taken as independent; two seeds of one configuration are one trial, never two pairs.

For trials i = 1..n with estimate e_i and error y_i:

    MAE = (1/n) Σ_i |e_i - y_i|                      (mean absolute calibration error; GDE's |ê - err|)
    y_i = a + b e_i + ε_i                            (ordinary least squares of the error ON the estimate)
    b = Σ (e_i - ē)(y_i - ȳ) / Σ (e_i - ē)²,   a = ȳ - b ē
    s² = Σ (y_i - a - b e_i)² / (n - 2),   se(b) = s / sqrt(Σ (e_i - ē)²),   se(a) = s sqrt(1/n + ē² / Σ (e_i - ē)²)
    95% intervals: b ± t_{0.975, n-2} se(b), a ± t_{0.975, n-2} se(a); MAE ± t_{0.975, n-1} sd(|e - y|) / sqrt(n)

A perfectly calibrated estimate has slope 1 and intercept 0 (and MAE 0); slope < 1 means it overstates the
spread of the errors. The intervals assume normal residuals: with few trials they are approximate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_TRIALS = 3  # a line through n points has n - 2 residual degrees of freedom: with 2, no interval


@dataclass(frozen=True)
class Calibration:
    """The calibration of one estimate over `n` trials (module doc): NaN where the trials cannot tell it."""

    n: int
    mae: float  # mean |estimate - error|
    mae_low: float
    mae_high: float
    slope: float  # OLS slope of the error on the estimate (1: calibrated)
    slope_low: float
    slope_high: float
    intercept: float  # OLS intercept (0: calibrated)
    intercept_low: float
    intercept_high: float


def calibration(estimate, error, level: float = 0.95) -> Calibration:
    """Calibration of `estimate` against the true `error` (two length-n sequences, one pair per trial; pairs with a
    NaN in either are dropped): mean |estimate - error| and the OLS line error = a + b · estimate, each with its
    `level` t interval (module doc). With fewer than `MIN_TRIALS` pairs, or estimates that are all equal (no
    slope), the undefined parts are NaN."""
    e, y = np.asarray(estimate, dtype=float), np.asarray(error, dtype=float)
    if e.shape != y.shape or e.ndim != 1:
        raise ValueError(f"calibration: estimate and error must be 1-d of one length, got {e.shape} and {y.shape}")
    keep = np.isfinite(e) & np.isfinite(y)
    e, y = e[keep], y[keep]
    n, nan = len(e), math.nan
    q = (1 + level) / 2
    dev = np.abs(e - y)
    mae = float(dev.mean()) if n else nan
    mae_half = float(stats.t.ppf(q, n - 1) * dev.std(ddof=1) / math.sqrt(n)) if n >= 2 else nan
    sxx = float(((e - e.mean()) ** 2).sum()) if n else 0.0
    if n < MIN_TRIALS or np.ptp(e) == 0:  # all estimates equal: no slope (sxx is then rounding, not 0)
        return Calibration(n, mae, mae - mae_half, mae + mae_half, nan, nan, nan, nan, nan, nan)
    b = float(((e - e.mean()) * (y - y.mean())).sum() / sxx)
    a = float(y.mean() - b * e.mean())
    s = math.sqrt(float(((y - a - b * e) ** 2).sum()) / (n - 2))
    t = float(stats.t.ppf(q, n - 2))
    se_b, se_a = s / math.sqrt(sxx), s * math.sqrt(1 / n + e.mean() ** 2 / sxx)
    return Calibration(
        n, mae, mae - mae_half, mae + mae_half, b, b - t * se_b, b + t * se_b, a, a - t * se_a, a + t * se_a
    )


@dataclass(frozen=True)
class MaeComparison:
    """Paired comparison of two estimates' calibration over the same `n` trials: the mean of
    d_i = |a_i - err_i| - |b_i - err_i| (negative: `a` is closer to the error), its `level` t interval, and the
    one-sided p of H0: mean d >= 0 against mean d < 0 (paired t test)."""

    n: int
    diff: float
    low: float
    high: float
    p: float


def compare_mae(a, b, error, level: float = 0.95) -> MaeComparison:
    """Is estimate `a` closer to the error than estimate `b` on the same trials (module doc: one pair per trial;
    trials with a NaN in any of the three dropped)? d_i = |a_i - err_i| - |b_i - err_i|; mean d with its t
    interval, and the one-sided paired t test of mean d < 0 (sampling unit: the trial; the t test leans on the
    mean of d being near normal, which the central limit theorem gives over tens of trials). Fewer than 2
    trials, or d constant: NaN."""
    a, b, y = (np.asarray(v, dtype=float) for v in (a, b, error))
    keep = np.isfinite(a) & np.isfinite(b) & np.isfinite(y)
    d = np.abs(a[keep] - y[keep]) - np.abs(b[keep] - y[keep])
    n, nan = len(d), math.nan
    if n < 2 or np.ptp(d) == 0:
        return MaeComparison(n, float(d.mean()) if n else nan, nan, nan, nan)
    se = float(d.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * se
    p = float(stats.t.cdf(float(d.mean()) / se, n - 1))
    return MaeComparison(n, float(d.mean()), float(d.mean()) - half, float(d.mean()) + half, p)
