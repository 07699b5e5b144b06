"""Temporal-consistency quantities from composite outputs (SPEC section 2): pure tensors in, numbers out.

Indices i (shallow checkpoint t1) and j (deep checkpoint t2) run over the same checkpoint list within a run;
T is the last checkpoint.

    acc[i, j]   = mean_x 1[argmax g[i, j](x) = y]
    agree[i, j] = mean_x 1[argmax g[i, j](x) = argmax f(x; θ_j)]        (f(·; θ_j) = g[j, j])
    loss[i, j]  = mean_x CE(g[i, j](x), y)
    rc[i, j]    = acc[i, j] / acc[j, j]
    tc          = mean_{i in W} agree[i, T]          W = checkpoints in the last half of training, before T
    tc_full     = mean_{i in W} mean_x 1[f(x; θ_i) = f(x; θ_T)]     (whole networks: the convergence baseline)
    tc_gain     = tc - tc_full                       (in [-1, 1]: the stable convergence-adjusted score)
    tc_excess   = (tc - tc_full) / max(1 - tc_full, EXCESS_FLOOR)   (the ratio, its denominator floored)
    κ(a, b)     = (p_o - p_e) / (1 - p_e)            Cohen's kappa; 0 when p_e = 1
    tc_kappa    = mean_{i in W} κ(g[i, T](x), f(x; θ_T))
    m(Δ)        = mean_{i in W} acc[i, i + Δ];   r(Δ) = mean_{i in W} rc[i, i + Δ]   (rows of the window only)
    half-life   = min {Δ : r(Δ) < 0.9}   (in checkpoints; None if r never falls below 0.9 = censored)
    c(x)        = mean_{i in W} 1[argmax g[i, T](x) = y]

Sampling unit of every agreement and κ: the evaluated sample x (one split, shared by all checkpoints).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from tc.core.compose import CompositeOutputs


def acc_matrix(out: CompositeOutputs, y: torch.Tensor) -> torch.Tensor:
    """[n_shallow, n_deep] accuracy; NaN where the pair was not evaluated."""
    acc = (out.pred == y).double().mean(dim=2)
    return acc.masked_fill(~out.done, math.nan)


def agree_matrix(out: CompositeOutputs, reference_pred: torch.Tensor) -> torch.Tensor:
    """[n_shallow, n_deep] fraction of x where g[i, j] predicts what `reference_pred[j]` (the deep
    checkpoint's own network) predicts; NaN where not evaluated."""
    agree = (out.pred == reference_pred[None]).double().mean(dim=2)
    return agree.masked_fill(~out.done, math.nan)


def loss_matrix(out: CompositeOutputs) -> torch.Tensor:
    return out.nll.double().mean(dim=2).masked_fill(~out.done, math.nan)


def own_predictions(out: CompositeOutputs) -> torch.Tensor:
    """[n_deep, N] predictions of f(·; θ_j) = g[j, j], from a square output (same checkpoints both ways)."""
    return torch.stack([out.pred[j, j] for j in range(out.pred.shape[1])])


def relative_consistency(acc: torch.Tensor) -> torch.Tensor:
    """rc[i, j] = acc[i, j] / acc[j, j] (the deep checkpoint's own accuracy as the reference)."""
    diag = torch.diagonal(acc)
    return acc / diag[None, :]


def window(steps: Sequence[int], fraction: float = 0.5) -> list[int]:
    """Indices of the checkpoints in the last `fraction` of training, excluding the final one. Falls back
    to every earlier checkpoint when the window holds none."""
    last = steps[-1]
    idx = [i for i, s in enumerate(steps[:-1]) if s >= (1 - fraction) * last]
    return idx or list(range(len(steps) - 1))


def tc_score(agree: torch.Tensor, win: Sequence[int]) -> float:
    """tc_d = mean_{i in W} agree_d[i, T]: mean agreement of the final deep part on earlier shallow features
    over the window (T = the last column of `agree`)."""
    return float(agree[list(win), -1].mean())


def lag_curve(matrix: torch.Tensor, rows: Sequence[int] | None = None) -> np.ndarray:
    """m(Δ) = mean_{i in rows} matrix[i, i+Δ] (earlier shallow, later deep); NaN if no pair is done.
    `rows` defaults to every row; Δ runs from 0 to n - 1 - min(rows), the longest lag those rows observe."""
    n = matrix.shape[0]
    rows = sorted(rows) if rows is not None else list(range(n))
    values = []
    for lag in range(n - rows[0]):
        cells = torch.stack([matrix[i, i + lag] for i in rows if i + lag < n])
        cells = cells[~torch.isnan(cells)]
        values.append(float(cells.mean()) if len(cells) else math.nan)
    return np.array(values)


def half_life(rel_lag: np.ndarray, threshold: float = 0.9) -> int | None:
    """The first lag (in checkpoints) where relative consistency falls below `threshold`; None if never."""
    below = np.nonzero(rel_lag < threshold)[0]
    return int(below[0]) if len(below) else None


def half_life_metric(rel_lag: np.ndarray) -> float:
    """The logged half-life: `half_life(rel_lag)`, or, when censored (r never falls below 0.9 over the lags
    observed), len(rel_lag), the number of lags observed: a lower bound."""
    hl = half_life(rel_lag)
    return float(hl if hl is not None else len(rel_lag))


def drift_score(drift: torch.Tensor, win: Sequence[int]) -> float:
    """drift_d = mean_{i in W} mean_x ||z_i(x) - z_T(x)|| / ||z_T(x)|| from the per-sample relative drift
    [n_shallow, N] of `CompositeOutputs.drift`."""
    return float(drift.mean(dim=1)[list(win)].mean())


def corruption_scores(
    out: CompositeOutputs, y: torch.Tensor, win: Sequence[int], corruption: list[str], severity: list[int]
) -> list[tuple[str, int, float, float]]:
    """Per (corruption, severity) group of samples: (name, severity, tc, acc) with tc = mean over the group's
    x of mean_{i in W} 1[g[i, T](x) = f(x; θ_T)] and acc the final network's accuracy on the group."""
    import pandas as pd

    T = out.pred.shape[1] - 1
    frame = pd.DataFrame({"corruption": corruption, "severity": severity})
    frame["agree"] = (out.pred[list(win), T] == own_predictions(out)[T]).double().mean(0).numpy()
    frame["correct"] = (out.pred[T, T] == y).double().numpy()
    return [
        (name, int(sev), grp["agree"].mean(), grp["correct"].mean())
        for (name, sev), grp in frame.groupby(["corruption", "severity"])
    ]


def window_lag_curve(matrix: torch.Tensor, win: Sequence[int]) -> np.ndarray:
    """The lag curve over the window's rows and the final row: shallow checkpoints i in W ∪ {T} only, so
    that the initialisation and early training (features no later deep part reads) do not set the half-life."""
    return lag_curve(matrix, [*win, matrix.shape[0] - 1])


def kappa(pred_a: torch.Tensor, pred_b: torch.Tensor, num_classes: int) -> float:
    """Cohen's κ between two label vectors of the same samples (Cohen 1960):

        p_o = mean_x 1[a(x) = b(x)],   p_e = Σ_k P(a = k) P(b = k),   κ = (p_o - p_e) / (1 - p_e),

    defined as 0 when p_e = 1 (both predictors constant on the same class: agreement is all chance).
    Equals `sklearn.metrics.cohen_kappa_score` wherever that is defined. Sampling unit: the sample x."""
    a, b = pred_a.flatten().long(), pred_b.flatten().long()
    n = len(a)
    p_o = float((a == b).double().mean())
    pa = torch.bincount(a, minlength=num_classes).double() / n
    pb = torch.bincount(b, minlength=num_classes).double() / n
    p_e = float((pa * pb).sum())
    if p_e >= 1 - 1e-12:
        return 0.0
    return (p_o - p_e) / (1 - p_e)


def tc_kappa(out: CompositeOutputs, final_pred: torch.Tensor, win: Sequence[int], num_classes: int) -> float:
    """tc_kappa = mean_{i in W} κ(g[i, T](x), f(x; θ_T)): the tc agreement corrected for chance. A network
    that predicts one class agrees with itself on any features (tc = 1) but gets κ = 0."""
    return float(np.mean([kappa(out.pred[i, -1], final_pred, num_classes) for i in win]))


def tc_full(network_pred: torch.Tensor, win: Sequence[int]) -> float:
    """tc_full = mean_{i in W} mean_x 1[f(x; θ_i) = f(x; θ_T)] from whole-network predictions
    `network_pred` [n_checkpoints, N] (row T last): how much the network's outputs stop changing anyway
    (learning rate annealed, convergence). The baseline that tc must exceed to say anything about features."""
    return float((network_pred[list(win)] == network_pred[-1][None]).double().mean())


# The floor of tc_excess's denominator 1 - tc_full (its one statement; docs/analyze.md and the registry cite it).
# Without it the ratio's denominator vanishes as the network converges (tc_full -> 1), and with it the ratio's
# sampling error: on n samples 1 - tc_full counts about n (1 - tc_full) disagreeing samples, fewer than one at
# tc_full = 0.999 and n = 500. At 0.05 the denominator counts at least 25 samples of 500 (10 of 200); below it the
# ratio is tc_gain / 0.05, as stable as tc_gain (tests/test_gain_coverage.py simulates both).
EXCESS_FLOOR = 0.05


def tc_gain(tc: float, full: float) -> float:
    """tc_gain = tc - tc_full, in [-1, 1]: how much more often the final deep part agrees with the final network
    on earlier features (the composites g_d[t, T]) than the earlier whole networks f(θ_t) do, over the same window
    and samples. 0: no better than the convergence baseline. A difference of two agreement rates on the same n
    samples: its sampling error stays of order 1/sqrt(n) however close tc_full is to 1, unlike `tc_excess`'s."""
    return tc - full


def tc_excess(tc: float, full: float) -> float:
    """tc_excess = (tc - tc_full) / max(1 - tc_full, EXCESS_FLOOR): the fraction of the disagreement left by
    the whole networks that the composite removes (1: the composite always agrees; 0: no better than the
    network baseline; negative: worse), its denominator floored at EXCESS_FLOOR. Where 1 - tc_full >=
    EXCESS_FLOOR this is the plain ratio (tc - tc_full) / (1 - tc_full); below it (a converged network) it is
    tc_gain / EXCESS_FLOOR, so it no longer divides by a vanishing, noisy count. At most 1; at least
    -1 / EXCESS_FLOOR. Read `tc_gain` for intervals and claims."""
    return (tc - full) / max(1.0 - full, EXCESS_FLOOR)


def per_sample_consistency(out: CompositeOutputs, y: torch.Tensor, win: Sequence[int]) -> torch.Tensor:
    """c(x) in [0, 1] for every sample: how often the final deep part classifies earlier features right."""
    return (out.pred[list(win), -1] == y).double().mean(dim=0)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> tuple[float, float]:
    """Unbiased squared maximum mean discrepancy (Gretton et al. 2012) with a Gaussian kernel
    k(a, b) = exp(-||a - b||² / (2 h²)); h = the median pairwise distance of the pooled sample unless given.

        MMD² = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)

    Returns (MMD², h). Rows of `x` [n, d] and `y` [m, d] are samples. One distance matrix of the pooled
    sample serves both the median and the kernel: its blocks are k(x, x), k(y, y) and k(x, y)."""
    x, y = x.double().flatten(1), y.double().flatten(1)
    n, m = len(x), len(y)
    pooled = torch.cat([x, y])
    d = torch.cdist(pooled, pooled)
    if bandwidth is None:  # the lower median of the distinct pairs (the upper triangle, row by row: 3x a mask)
        bandwidth = float(torch.cat([d[i, i + 1 :] for i in range(len(d))]).median())
    h2 = 2 * max(bandwidth, 1e-12) ** 2
    # exp(-d² / h²) in place on the three blocks (d is spent): the same roundings as exp(-(d ** 2) / h2)
    kxx, kyy, kxy = (b.square_().div_(-h2).exp_() for b in (d[:n, :n], d[n:, n:], d[:n, n:]))
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2 * kxy.mean()), bandwidth


def steps_at_fractions(steps: Sequence[int], fractions: Sequence[float]) -> list[int]:
    """The checkpoint step nearest to each fraction f of training (f * final step; ties go to the earlier
    step), so that runs of different lengths (a stopping criterion) are compared at matched fractions."""
    if not steps:
        raise ValueError("steps_at_fractions: the run has no checkpoints")
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"fractions must lie in [0, 1], got {f}")
    last = steps[-1]
    return [min(steps, key=lambda s: (abs(s - f * last), s)) for f in fractions]


def phase_windows(steps: Sequence[int], phases: Sequence[str] = ("early", "middle", "late")) -> dict[str, list[int]]:
    """Split training (0, T] into len(phases) equal fractions and give each phase the indices of its
    checkpoints s (s / T in ((k-1)/n, k/n]), excluding the final checkpoint T, which is the reference deep
    part (as in `window`). Fractions, not epochs, so runs that stop at different steps get matched windows;
    step 0 (the initialisation) belongs to no phase. A phase that holds no checkpoint (too few checkpoints)
    raises, rather than silently sharing a neighbour's."""
    if len(steps) < 2:
        raise ValueError(f"phase_windows: need at least 2 checkpoints, got {len(steps)}")
    if list(steps) != sorted(set(steps)) or steps[-1] <= 0:
        raise ValueError("phase_windows: steps must be increasing and end after step 0")
    n, last = len(phases), steps[-1]
    out: dict[str, list[int]] = {}
    for k, name in enumerate(phases):
        lo, hi = k / n * last, (k + 1) / n * last
        out[name] = [i for i, s in enumerate(steps[:-1]) if lo < s <= hi]
        if not out[name]:
            raise ValueError(
                f"phase_windows: phase {name!r} (steps in ({lo:g}, {hi:g}]) holds no checkpoint before the "
                f"final one; save checkpoints more often (checkpoint_every)"
            )
    return out
