"""Matplotlib figures from the analysis tables. Each function returns a Figure and never shows it or writes it
(`tc.analysis.files` writes figures).

Figures are built as `matplotlib.figure.Figure()` objects, not through pyplot: no global state (the backend
a user's notebook or GUI chose stays as it was, no figure is registered with pyplot's manager), and a figure
is freed like any object once it is no longer referenced. `Figure.savefig` renders PNGs headless by itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kw: Any) -> tuple[Figure, Any]:
    """`pyplot.subplots(..., constrained_layout=True)` without pyplot: a new Figure and its axes."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kw)


def consistency_heatmaps(matrices: pd.DataFrame, value: str = "rc") -> Figure:
    """Grid cuts (rows) x splits (columns) of `value`[t1, t2]: rows t1 (shallow), columns t2 (deep).
    The upper triangle (t1 < t2) is "earlier shallow, later deep"."""
    cuts, splits = sorted(matrices["cut"].unique()), list(dict.fromkeys(matrices["split"]))
    fig, axes = _subplots(len(cuts), len(splits), figsize=(3.2 * len(splits) + 1, 2.9 * len(cuts)), squeeze=False)
    image = None
    for r, cut in enumerate(cuts):
        for c, split in enumerate(splits):
            ax = axes[r][c]
            sub = matrices[(matrices["cut"] == cut) & (matrices["split"] == split)]
            grid = sub.pivot(index="t1", columns="t2", values=value)
            image = ax.imshow(
                grid.to_numpy(),
                vmin=0,
                vmax=1.05 if value == "rc" else 1,
                cmap="viridis",
                origin="upper",
                aspect="auto",
            )
            ticks = np.arange(len(grid.columns))
            step = max(1, len(ticks) // 6)
            ax.set_xticks(ticks[::step], [str(t) for t in grid.columns[::step]], fontsize=7)
            ax.set_yticks(np.arange(len(grid.index))[::step], [str(t) for t in grid.index[::step]], fontsize=7)
            ax.set_title(f"{split}, cut {cut}", fontsize=9)
            if c == 0:
                ax.set_ylabel("t1: shallow step")
            if r == len(cuts) - 1:
                ax.set_xlabel("t2: deep step")
    if image is not None:
        fig.colorbar(
            image, ax=axes, shrink=0.6, label={"rc": "relative consistency acc[t1,t2]/acc[t2,t2]"}.get(value, value)
        )
    return fig


def lag_curves(lags: pd.DataFrame) -> Figure:
    """Relative consistency r(Δ) against lag Δ (checkpoints), one panel per split, one line per cut."""
    splits = list(dict.fromkeys(lags["split"]))
    fig, axes = _subplots(1, len(splits), figsize=(4 * len(splits), 3.2), squeeze=False, sharey=True)
    for ax, split in zip(axes[0], splits, strict=True):
        for cut, sub in lags[lags["split"] == split].groupby("cut"):
            ax.plot(sub["lag"], sub["rc"], marker="o", ms=3, label=f"cut {cut}")
        ax.axhline(0.9, color="grey", ls="--", lw=0.8)
        ax.set_title(split)
        ax.set_xlabel("lag Δ (checkpoints)")
        ax.set_ylim(0, 1.1)
    axes[0][0].set_ylabel("r(Δ) = mean_t rc[t, t+Δ]")
    axes[0][-1].legend(fontsize=8)
    return fig


def kde(values: np.ndarray, grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Gaussian KDE with Scott's rule: (grid, density, bandwidth). None when the values are all equal
    (a KDE of a point mass is undefined)."""
    from scipy.stats import gaussian_kde

    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return None
    k = gaussian_kde(values, bw_method="scott")
    grid = np.linspace(-0.1, 1.1, 241) if grid is None else grid
    return grid, k(grid), float(k.factor * values.std(ddof=1))


def per_sample_kde(per_sample: pd.DataFrame) -> Figure:
    """Density of per-sample consistency c(x) (Gaussian KDE, Scott's rule), one panel per cut, one line per
    split; a split whose c(x) is constant is drawn as a vertical line."""
    cuts = sorted(per_sample["cut"].unique())
    fig, axes = _subplots(1, len(cuts), figsize=(3.4 * len(cuts), 3), squeeze=False, sharey=True)
    for ax, cut in zip(axes[0], cuts, strict=True):
        for split, sub in per_sample[per_sample["cut"] == cut].groupby("split", sort=False):
            est = kde(sub["c"].to_numpy())
            if est is None:
                ax.axvline(sub["c"].iloc[0], label=f"{split} (all {sub['c'].iloc[0]:.2f})", ls=":")
            else:
                grid, density, bw = est
                ax.plot(grid, density, label=f"{split} (bw {bw:.3f})")
        ax.set_title(f"cut {cut}")
        ax.set_xlabel("c(x)")
    axes[0][0].set_ylabel("density")
    axes[0][-1].legend(fontsize=7)
    return fig


def drift_vs_consistency(drift: pd.DataFrame) -> Figure:
    """Feature drift of each checkpoint against the last, beside the final deep part's agreement on it."""
    splits = list(dict.fromkeys(drift["split"]))
    fig, axes = _subplots(1, len(splits), figsize=(4 * len(splits), 3.2), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for cut, sub in drift[drift["split"] == split].groupby("cut"):
            line = ax.plot(sub["t1"], sub["drift"], ls="--", lw=1)[0]
            ax.plot(sub["t1"], sub["agree_final"], color=line.get_color(), marker="o", ms=3, label=f"cut {cut}")
        ax.set_title(f"{split}: drift (dashed) vs agreement (solid)", fontsize=9)
        ax.set_xlabel("t1: shallow step")
    axes[0][-1].legend(fontsize=8)
    return fig


def spectra_vs_null(spectra: pd.DataFrame) -> Figure:
    """Eigen-spectra (log scale) of drift and gradient noise per cut, with the isotropic null's 5-95% band.
    Drift: the spectrum of the unit vectors that `tc.core.anisotropy.drift_test` tests (one per pair of samples);
    gradient noise: of the projected per-minibatch noise."""
    kinds = list(dict.fromkeys(spectra["kind"]))
    cuts = sorted(spectra["cut"].unique())
    fig, axes = _subplots(len(kinds), len(cuts), figsize=(3.2 * len(cuts), 2.8 * len(kinds)), squeeze=False)
    for r, kind in enumerate(kinds):
        for c, cut in enumerate(cuts):
            ax = axes[r][c]
            sub = spectra[(spectra["kind"] == kind) & (spectra["cut"] == cut)]
            sub = sub[sub["eig"] > sub["eig"].max() * 1e-9]  # centring leaves one ~0 eigenvalue when n <= p
            ax.fill_between(
                sub["index"],
                sub["null_q05"].clip(lower=1e-30),
                sub["null_q95"],
                color="grey",
                alpha=0.35,
                label="isotropic null 5-95%",
            )
            ax.plot(sub["index"], sub["eig"], marker=".", ms=3, label="observed")
            ax.set_yscale("log")
            ax.set_title(f"{kind}, cut {cut}", fontsize=9)
            ax.set_xlabel("eigenvalue index")
    axes[0][0].legend(fontsize=7)
    return fig


def perturbation_curves(perturb: pd.DataFrame) -> Figure:
    """Final deep part's accuracy against perturbation norm ε ||z|| in k-dim subspaces of the feature space:
    the top-k drift directions, k random orthonormal directions and the bottom-k drift directions (same k,
    same norm), mean over draws with a 95% t interval over draws (band), one panel per cut. `perturb`: the
    per-draw table (cut, eps, kind, draw, acc) of `tc.analysis.anisotropy.anisotropy`."""
    from tc.core.sgd_noise import KINDS, perturbation_summary

    if perturb.empty:  # no cut had any drift to perturb along
        fig, ax = _subplots(figsize=(4, 3))
        ax.set_title("no drift: perturbation test not run")
        return fig
    summary = perturbation_summary(perturb)
    cuts = sorted(summary["cut"].unique())
    fig, axes = _subplots(1, len(cuts), figsize=(3.2 * len(cuts), 3), squeeze=False, sharey=True)
    for ax, cut in zip(axes[0], cuts, strict=True):
        sub = summary[summary["cut"] == cut]
        clean = sub[sub["kind"] == "clean"]["acc"].iloc[0]
        for kind in KINDS:
            k = sub[sub["kind"] == kind].sort_values("eps")
            line = ax.plot([0, *k["eps"]], [clean, *k["acc"]], marker="o", ms=3, label=f"{kind}-k")[0]
            ax.fill_between(k["eps"], k["lo"], k["hi"], color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(f"cut {cut}")
        ax.set_xlabel("ε (noise norm / feature norm)")
    axes[0][0].set_ylabel("accuracy (band: 95% CI over draws)")
    axes[0][-1].legend(fontsize=8)
    return fig


VERDICT_COLOURS = {"reproduces": "tab:green", "does not reproduce": "tab:red", "differs": "tab:green"}


def effects_forest(effects: pd.DataFrame) -> Figure:
    """Every claim's paired difference with its 95% CI over seeds (`tc.report.verdicts.all_effects`), coloured by
    verdict (green: reproduces / differs, red: does not reproduce, grey: inconclusive or no difference)."""
    rows = effects.iloc[::-1].reset_index(drop=True)
    fig, ax = _subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    for i, r in rows.iterrows():
        colour = VERDICT_COLOURS.get(r["verdict"], "tab:gray")
        if pd.notna(r["low"]):
            ax.plot([r["low"], r["high"]], [i, i], color=colour, lw=2)
        ax.plot([r["diff"]], [i], "o", color=colour, ms=4)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{r['section']}: {r['label']}" for _, r in rows.iterrows()], fontsize=7)
    ax.set_xlabel("difference (a − b, or the value) with 95% CI over seeds")
    return fig
