"""What a sweep draws: its headline measure against test accuracy (`measure_scatter`) and every measure's Kendall
τ-b with its interval and p (`correlation_bars`), the headline marked in both (`HEADLINE_COLOUR`, "(headline)").

Its own module, beside `tc.sweep.console` (what a sweep prints), rather than in `tc.analysis.plots` (the
figures of one analysis): these draw a sweep's correlation table. Figures are `Figure()` objects, never pyplot,
as in `tc.analysis.plots`, and `tc.analysis.files.save_figures` writes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tc.stats.multiplicity import CONFIRMATORY_MEASURE

HEADLINE_COLOUR = "tab:orange"  # the headline measure's mark in the sweep's figures; every other one is blue


def _figure(figsize: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def tau_text(row: Any) -> str:
    """`τ +0.43 [+0.12, +0.71], p 0.003`: a correlation-table row's Kendall τ-b with its bootstrap 95% interval
    and its p to compare with α (`kendall_p_holm`: Holm-adjusted, or for the confirmatory row its own p, tested
    alone)."""

    def num(x: Any, spec: str = "+.2f") -> str:
        return "n/a" if x is None or pd.isna(x) else format(float(x), spec)

    return (
        f"τ {num(row['kendall'])} [{num(row['kendall_ci_low'])}, {num(row['kendall_ci_high'])}], "
        f"p {num(row.get('kendall_p_holm'), '.2g')}"
    )


def p_words(row: Any) -> str:
    """How a row's p was adjusted: `p tested alone` for the confirmatory row (`role`), else `p Holm-adjusted`."""
    return "p tested alone" if row.get("role") == "confirmatory" else "p Holm-adjusted"


def measure_scatter(
    trials: pd.DataFrame,
    measure: str,
    target: str,
    hparams: list[str],
    stats: Any = None,
    headline: bool = False,
) -> Figure:
    """`measure` against `target` per trial, coloured by the hyperparameter with the most distinct values. `stats`:
    the measure's correlation-table row, shown in the title (`tau_text`, `p_words`); `headline`: the measure is the
    sweep's headline, said in the title and the x label."""
    varying = [h for h in hparams if h in trials and trials[h].nunique() > 1]
    colour = max(varying, key=lambda h: trials[h].nunique()) if varying else None
    fig, ax = _figure((5, 4))
    if colour is None:
        ax.scatter(trials[measure], trials[target])
    else:
        values = pd.to_numeric(
            trials[colour].astype(float) if trials[colour].dtype == bool else trials[colour], errors="coerce"
        )
        sc = ax.scatter(trials[measure], trials[target], c=values, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=colour)
    mark = " (headline)" if headline else ""
    ax.set_xlabel(measure + mark)
    ax.set_ylabel(target)
    title = f"{measure}{mark}: {len(trials)} trials"
    if stats is not None:
        title += f"\n{tau_text(stats)} ({p_words(stats)}; bootstrap 95% CI)"
    ax.set_title(title, fontsize=9)
    return fig


def correlation_bars(
    table: pd.DataFrame, target: str = "test_acc", headline: str | None = None, note: str = ""
) -> Figure:
    """Kendall τ-b of each measure with `target` (bar), with its bootstrap 95% interval (error line) and, beside
    each bar, τ, the interval and its p (`tau_text`). The `headline` measure (default: the confirmatory one) is the
    top bar, orange, labelled "(headline)"; the others follow by |τ|. `note` is added to the title (e.g. too few
    trials to interpret)."""
    headline = headline or CONFIRMATORY_MEASURE
    sub = table[table["target"] == target] if len(table) else pd.DataFrame()
    fig, ax = _figure((9, 0.3 * len(sub) + 1.4))
    if sub.empty:
        ax.set_title(f"no correlations with {target}" + (f"; {note}" if note else ""), fontsize=9)
        return fig
    first = sub.assign(h=sub["measure"] == headline, a=sub["kendall"].abs()).sort_values(["h", "a"], ascending=False)
    rows = first.iloc[::-1].reset_index(drop=True)  # barh draws from the bottom: the headline goes on top
    tau = rows["kendall"].to_numpy(float)
    low = (tau - rows["kendall_ci_low"].to_numpy(float)).clip(min=0)
    high = (rows["kendall_ci_high"].to_numpy(float) - tau).clip(min=0)
    colours = [HEADLINE_COLOUR if h else "tab:blue" for h in rows["h"]]
    labels = [f"{m} (headline)" if h else m for m, h in zip(rows["measure"], rows["h"], strict=True)]
    ax.barh(rows.index, np.nan_to_num(tau), xerr=[np.nan_to_num(low), np.nan_to_num(high)], color=colours, alpha=0.85)
    ax.set_yticks(rows.index, labels, fontsize=8)
    for tick, h in zip(ax.get_yticklabels(), rows["h"], strict=True):
        if h:
            tick.set_color(HEADLINE_COLOUR)
            tick.set_fontweight("bold")
    for i, r in rows.iterrows():  # every τ with its interval and p, at the right of the axes
        ax.text(1.02, i, tau_text(r), va="center", fontsize=7, transform=ax.get_yaxis_transform(), clip_on=False)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel(f"Kendall τ-b with {target} (line: bootstrap 95% CI; p: Holm, the confirmatory one tested alone)")
    ax.set_title(f"{int(rows['n_trials'].max())} trials" + (f"; {note}" if note else ""), fontsize=9)
    return fig
