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
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kw: Any) -> tuple[Figure, Any]:
    """`pyplot.subplots(..., constrained_layout=True)` without pyplot: a new Figure and its axes."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kw)


# Relative consistency's colour scale: linear and diverging about rc = 1 (white), from 0 to RC_CAP, so that a 10%
# loss and a 10% gain look alike. rc is unbounded (acc[t2, t2] near chance, e.g. the initialisation's deep part,
# divides by ~0.1): a cell above RC_CAP is drawn in the over colour with its value printed, the colour bar gets an
# extension arrow, and the block's title counts those cells and gives the largest value.
RC_CAP = 2.0
BOUNDED = {"agree": (0.0, 1.0), "acc": (0.0, 1.0)}  # matrix columns with a fixed range: a colour scale that covers it
HEAT_LABELS = {
    "agree": "agreement agree[t1, t2] of g[t1, t2] with the deep checkpoint's own network f(θ_t2), in [0, 1]",
    "rc": "relative consistency rc[t1, t2] = acc[t1, t2] / acc[t2, t2], unbounded (white: 1)",
    "acc": "accuracy acc[t1, t2] of g[t1, t2], in [0, 1]",
    "loss": "cross-entropy of g[t1, t2]",
}
HEAT_SHORT = {"agree": "agreement", "rc": "relative consistency"}
ANNOTATE_MAX = 16  # print the values of over-range cells when a panel has at most this many rows and columns


def heat_scale(value: str, data: pd.Series) -> tuple[Normalize, str, float | None]:
    """(norm, colour map, cap) of a heatmap block of matrix column `value`: rc on [0, RC_CAP] diverging about 1
    (cap RC_CAP), a bounded column (`BOUNDED`) on its range, any other on the data's own range (no cap)."""
    if value == "rc":
        return Normalize(0.0, RC_CAP), "RdBu_r", RC_CAP
    finite = data[np.isfinite(data)]
    lo, hi = BOUNDED.get(value, (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0))
    return Normalize(lo, hi if hi > lo else lo + 1.0), "viridis", hi if value in BOUNDED else None


def clipped_note(matrices: pd.DataFrame, value: str, cap: float | None) -> tuple[str, int]:
    """The clipping note of a heatmap block, and its count of cells above `cap`: how many cells lie above the
    colour scale (value printed in them) with the largest and where, and how many are NaN (grey)."""
    v = matrices[value]
    notes, over = [], 0
    if cap is not None:
        above = matrices[v > cap]  # inf (acc[t2, t2] = 0) included
        over = len(above)
        if over:
            top = above.loc[above[value].idxmax()]
            notes.append(
                f"{over} of {len(v)} cells above {cap:g} (dark, value printed; max {top[value]:.3g} at "
                f"{top['split']}, cut {top['cut']}, t1={top['t1']}, t2={top['t2']})"
            )
    if v.isna().any():
        notes.append(f"{int(v.isna().sum())} NaN cells (grey)")
    return "; ".join(notes), over


def consistency_heatmaps(matrices: pd.DataFrame, value: str = "rc") -> Figure:
    """Grid cuts (rows) x splits (columns) of `value`[t1, t2]: rows t1 (shallow), columns t2 (deep).
    The upper triangle (t1 < t2) is "earlier shallow, later deep". For rc, when the table has agreement
    (`agree`, bounded in [0, 1]), a block of agreement comes first and the block of rc below it, each with its
    colour bar. No value is hidden: a colour scale covers its quantity's range, or (rc above RC_CAP) the cell is
    drawn in the over colour with its value printed, the bar has an extension arrow and the block's title
    counts the cells and gives the largest; NaN cells are grey and counted."""
    cuts, splits = sorted(matrices["cut"].unique()), list(dict.fromkeys(matrices["split"]))
    values = [v for v in ("agree", "rc") if v in matrices] if value == "rc" else [value]
    fig = Figure(figsize=(3.0 * len(splits) + 1.4, (2.6 * len(cuts) + 0.7) * len(values)), layout="constrained")
    blocks = fig.subfigures(len(values), 1, squeeze=False)[:, 0]
    for block, v in zip(blocks, values, strict=True):
        _heat_block(block, matrices, v, cuts, splits)
    return fig


def _heat_block(block, matrices: pd.DataFrame, value: str, cuts: list, splits: list) -> None:
    """One block of `consistency_heatmaps`: cuts x splits panels of `value`, its colour bar and title."""
    norm, cmap_name, cap = heat_scale(value, matrices[value])
    cmap = colormaps[cmap_name].with_extremes(over="black", bad="lightgrey")
    note, over = clipped_note(matrices, value, cap)
    axes = block.subplots(len(cuts), len(splits), squeeze=False)
    image = None
    for r, cut in enumerate(cuts):
        for c, split in enumerate(splits):
            ax = axes[r][c]
            sub = matrices[(matrices["cut"] == cut) & (matrices["split"] == split)]
            grid = sub.pivot(index="t1", columns="t2", values=value)
            data = grid.to_numpy(dtype=float)
            image = ax.imshow(data, norm=norm, cmap=cmap, origin="upper", aspect="auto", interpolation="nearest")
            if cap is not None and max(data.shape) <= ANNOTATE_MAX:
                digits = 3 if data.shape[1] <= 8 else 2  # what fits in a cell
                for i, j in zip(*np.nonzero(data > cap), strict=True):
                    ax.text(j, i, f"{data[i, j]:.{digits}g}", ha="center", va="center", color="white", fontsize=7)
            ticks = np.arange(len(grid.columns))
            step = max(1, len(ticks) // 6)
            ax.set_xticks(ticks[::step], [str(t) for t in grid.columns[::step]], fontsize=7)
            ax.set_yticks(np.arange(len(grid.index))[::step], [str(t) for t in grid.index[::step]], fontsize=7)
            ax.set_title(f"{split}, cut {cut}", fontsize=9)
            if c == 0:
                ax.set_ylabel("t1: shallow step")
            if r == len(cuts) - 1:
                ax.set_xlabel("t2: deep step")
    label = HEAT_LABELS.get(value, value)
    if image is not None:
        block.colorbar(
            image, ax=axes, shrink=0.6, extend="max" if over else "neither", label=HEAT_SHORT.get(value, value)
        )
    block.suptitle(label + (f"\n{note}" if note else ""), fontsize=9)


def legend_outside(fig: Figure, axes, fontsize: int = 8) -> None:
    """One legend for the whole figure, below the panels (outside every axes, so that it covers no data): the
    entries of every panel, each label once."""
    entries: dict[str, Any] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(
            entries.values(), entries.keys(), loc="outside lower center", ncols=min(len(entries), 6), fontsize=fontsize
        )


def lag_curves(lags: pd.DataFrame) -> Figure:
    """Relative consistency r(Δ) against lag Δ (checkpoints), one panel per split, one line per cut. The y axis
    covers every value (rc is unbounded: r(Δ) > 1 when later deep parts do better on earlier features); lags
    whose r(Δ) is NaN are counted in the line's label."""
    splits = list(dict.fromkeys(lags["split"]))
    fig, axes = _subplots(1, len(splits), figsize=(4 * len(splits), 3.5), squeeze=False, sharey=True)
    for ax, split in zip(axes[0], splits, strict=True):
        for cut, sub in lags[lags["split"] == split].groupby("cut"):
            missing = int(sub["rc"].isna().sum())
            ax.plot(
                sub["lag"], sub["rc"], marker="o", ms=3, label=f"cut {cut}" + (f" ({missing} NaN)" if missing else "")
            )
        ax.axhline(0.9, color="grey", ls="--", lw=0.8, label="0.9 (half-life threshold)")
        ax.set_title(split)
        ax.set_xlabel("lag Δ (checkpoints)")
    finite = lags["rc"][np.isfinite(lags["rc"])]
    top = max(1.1, float(finite.max()) * 1.05) if len(finite) else 1.1
    axes[0][0].set_ylim(min(0.0, float(finite.min()) if len(finite) else 0.0), top)
    axes[0][0].set_ylabel("r(Δ) = mean_t rc[t, t+Δ]")
    legend_outside(fig, axes)
    return fig


def kde(values: np.ndarray, grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Gaussian KDE with Scott's rule: (grid, density, bandwidth); the default grid runs 3 bandwidths beyond
    the smallest and the largest value, so the whole density is drawn. None when the values are all equal
    (a KDE of a point mass is undefined)."""
    from scipy.stats import gaussian_kde

    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return None
    k = gaussian_kde(values, bw_method="scott")
    bw = float(k.factor * values.std(ddof=1))
    grid = np.linspace(values.min() - 3 * bw, values.max() + 3 * bw, 241) if grid is None else grid
    return grid, k(grid), bw


def per_sample_kde(per_sample: pd.DataFrame) -> Figure:
    """Density of per-sample consistency c(x) (Gaussian KDE, Scott's rule), one panel per cut, one line per
    split; a split whose c(x) is constant is drawn as a vertical line. c(x) lies in [0, 1]: the shaded area
    outside it is the kernel's spill, not data. c(x) = k/|W| is discrete, its point masses at 1 and 0 smeared
    by the kernel: each panel's title gives the share of samples at exactly 1 and 0, and its bandwidths; NaN
    c(x) are left out of the density and counted in its label."""
    cuts = sorted(per_sample["cut"].unique())
    fig, axes = _subplots(1, len(cuts), figsize=(3.4 * len(cuts), 3.8), squeeze=False, sharey=True)
    colours = {split: f"C{i}" for i, split in enumerate(dict.fromkeys(per_sample["split"]))}
    for ax, cut in zip(axes[0], cuts, strict=True):
        widths, ends = [], {1: [], 0: []}
        for split, sub in per_sample[per_sample["cut"] == cut].groupby("split", sort=False):
            c = sub["c"].to_numpy(dtype=float)
            missing = int(np.isnan(c).sum())
            c = c[~np.isnan(c)]
            label = split + (f" ({missing} NaN)" if missing else "")
            for end, shares in ends.items():
                shares.append(f"{split} {np.mean(c == end):.0%}" if len(c) else f"{split} none")
            est = kde(c)
            if est is None:
                ax.axvline(c[0] if len(c) else np.nan, color=colours[split], ls=":", label=label)
                widths.append(f"{split} all {c[0]:.2f}" if len(c) else f"{split} none")
            else:
                grid, density, bw = est
                ax.plot(grid, density, color=colours[split], label=label)
                widths.append(f"{split} {bw:.3f}")
        lo, hi = ax.get_xlim()
        for a, b in ((lo, 0.0), (1.0, hi)):  # only where the axis passes an end of [0, 1]
            if a < b:
                ax.axvspan(a, b, color="grey", alpha=0.12, lw=0)
        ax.set_xlim(lo, hi)  # the spans must not widen the axis
        shares = "".join(f"\nat {end}: " + ", ".join(v) for end, v in ends.items())
        ax.set_title(f"cut {cut}\nbandwidth: " + ", ".join(widths) + shares, fontsize=8)
        ax.set_xlabel("c(x) (in [0, 1]; grey: outside)")
    axes[0][0].set_ylabel("density")
    legend_outside(fig, axes)
    return fig


def drift_vs_consistency(drift: pd.DataFrame) -> Figure:
    """Feature drift of each checkpoint against the last (dashed), beside the final deep part's agreement on
    it (solid). A split whose drift was not recorded (NaN: the naive path keeps no features) says so."""
    splits = list(dict.fromkeys(drift["split"]))
    fig, axes = _subplots(1, len(splits), figsize=(4 * len(splits), 3.5), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        here = drift[drift["split"] == split]
        for cut, sub in here.groupby("cut"):
            line = ax.plot(sub["t1"], sub["drift"], ls="--", lw=1)[0]
            ax.plot(sub["t1"], sub["agree_final"], color=line.get_color(), marker="o", ms=3, label=f"cut {cut}")
        missing = int(here["drift"].isna().sum())
        note = "" if not missing else " (drift not recorded)" if missing == len(here) else f" ({missing} drift NaN)"
        ax.set_title(f"{split}: drift (dashed) vs agreement (solid){note}", fontsize=9)
        ax.set_xlabel("t1: shallow step")
    legend_outside(fig, axes)
    return fig


def spectra_vs_null(spectra: pd.DataFrame) -> Figure:
    """Eigen-spectra (log scale) of drift and gradient noise per cut, with the isotropic null's 5-95% band.
    Drift: the spectrum of the unit vectors that `tc.core.anisotropy.drift_test` tests (one per pair of samples);
    gradient noise: of the projected per-minibatch noise. Eigenvalues below 1e-9 of the largest (centring leaves
    one ~0 eigenvalue when n <= p) cannot be drawn on a log scale: the panel's title counts them."""
    kinds = list(dict.fromkeys(spectra["kind"]))
    cuts = sorted(spectra["cut"].unique())
    fig, axes = _subplots(len(kinds), len(cuts), figsize=(3.2 * len(cuts), 2.8 * len(kinds) + 0.4), squeeze=False)
    for r, kind in enumerate(kinds):
        for c, cut in enumerate(cuts):
            ax = axes[r][c]
            sub = spectra[(spectra["kind"] == kind) & (spectra["cut"] == cut)]
            drawn = sub[sub["eig"] > sub["eig"].max() * 1e-9]
            ax.fill_between(
                drawn["index"],
                drawn["null_q05"].clip(lower=1e-30),
                drawn["null_q95"],
                color="grey",
                alpha=0.35,
                label="isotropic null 5-95%",
            )
            ax.plot(drawn["index"], drawn["eig"], marker=".", ms=3, label="observed")
            ax.set_yscale("log")
            left = len(sub) - len(drawn)
            ax.set_title(f"{kind}, cut {cut}" + (f"\n{left} eigenvalues ≈ 0 not drawn" if left else ""), fontsize=9)
            ax.set_xlabel("eigenvalue index")
    legend_outside(fig, axes)
    return fig


def perturbation_curves(perturb: pd.DataFrame) -> Figure:
    """Final deep part's accuracy against perturbation norm ε ||z|| in k-dim subspaces of the feature space:
    the top-k drift directions, k random orthonormal directions and the bottom-k drift directions (same k,
    same norm), mean over draws with a 95% interval over draws inside [0, 1] (band; none with one draw, as the
    axis label says), one panel per cut. `perturb`: the per-draw table (cut, eps, kind, draw, acc) of
    `tc.analysis.anisotropy.anisotropy`."""
    from tc.analysis.anisotropy import perturbation_summary
    from tc.core.sgd_noise import KINDS

    if perturb.empty:  # no cut had any drift to perturb along
        fig, ax = _subplots(figsize=(4, 3))
        ax.set_title("no drift: perturbation test not run")
        return fig
    summary = perturbation_summary(perturb)
    cuts = sorted(summary["cut"].unique())
    fig, axes = _subplots(1, len(cuts), figsize=(3.2 * len(cuts), 3.4), squeeze=False, sharey=True)
    for ax, cut in zip(axes[0], cuts, strict=True):
        sub = summary[summary["cut"] == cut]
        clean = sub[sub["kind"] == "clean"]["acc"].iloc[0]
        for kind in KINDS:
            k = sub[sub["kind"] == kind].sort_values("eps")
            line = ax.plot([0, *k["eps"]], [clean, *k["acc"]], marker="o", ms=3, label=f"{kind}-k")[0]
            ax.fill_between(k["eps"], k["lo"], k["hi"], color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(f"cut {cut}")
        ax.set_xlabel("ε (noise norm / feature norm)")
    draws = int(summary.loc[summary["kind"] != "clean", "draws"].min())
    band = "95% CI over draws" if draws > 1 else "no CI: 1 draw"
    axes[0][0].set_ylabel(f"accuracy (band: {band})")
    legend_outside(fig, axes)
    return fig


VERDICT_COLOURS = {"reproduces": "tab:green", "does not reproduce": "tab:red", "differs": "tab:green"}


def effects_forest(effects: pd.DataFrame) -> Figure:
    """Every claim's paired difference with its 95% CI over seeds (`tc.report.verdicts.all_effects`), coloured by
    verdict (green: reproduces / differs, red: does not reproduce, grey: inconclusive or no difference). An end
    beyond [-1, 1] (tc_excess's interval, open below, at 2 seeds) would squash every other interval onto a point:
    the axis then covers the point estimates and the ends inside [-1, 1], and that end is drawn to the edge with
    its value printed."""
    rows = effects.iloc[::-1].reset_index(drop=True)
    fig, ax = _subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    inner = pd.concat([rows["diff"], rows["low"].where(rows["low"] >= -1), rows["high"].where(rows["high"] <= 1)])
    pad = 0.05 * max(inner.max() - inner.min(), 1.0 if len(inner.dropna()) < 2 else 1e-3)
    left, right = inner.min() - pad, inner.max() + pad  # NaN (nothing to draw): nothing is clipped
    for i, r in rows.iterrows():
        colour = VERDICT_COLOURS.get(r["verdict"], "tab:gray")
        if pd.notna(r["low"]):
            ax.plot([max(r["low"], left), min(r["high"], right)], [i, i], color=colour, lw=2)
            for end, x, ha, text in ((r["low"], left, "left", "← {:.3g}"), (r["high"], right, "right", "{:.3g} →")):
                if not left <= end <= right:
                    ax.text(x, i, text.format(end), ha=ha, va="bottom", fontsize=7, color=colour)
        ax.plot([r["diff"]], [i], "o", color=colour, ms=4)
    ax.axvline(0, color="black", lw=0.8)
    if ax.texts:
        ax.set_xlim(left, right)
    ax.set_yticks(range(len(rows)), [f"{r['section']}: {r['label']}" for _, r in rows.iterrows()], fontsize=7)
    ax.set_xlabel("difference (a − b, or the value) with 95% CI over seeds")
    return fig
