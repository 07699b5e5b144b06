"""Section 6 of docs/REPORT.md: the sweep's design, its correlation table and its verdict paragraph. Pure:
the sweep's tables in, lines out (the verdicts themselves: `tc.report.verdicts`)."""

from __future__ import annotations

import math

import pandas as pd

from tc.report.costs import cost_of
from tc.report.markdown import fmt, fmt_p, model_name
from tc.report.results import Results, sweep_config_of
from tc.report.verdicts import (
    MAX_COST_EPOCHS,
    MIN_TAU,
    NOT_DISTINGUISHABLE,
    abs_interval,
    best_baseline,
    confirmatory_predicts,
    is_confirmatory,
    meets_the_bar,
    versus_baseline,
)
from tc.stats.multiplicity import ALPHA, CONFIRMATORY_MEASURE, PRIMARY_TARGET
from tc.stats.rankcorr import MIN_TRIALS
from tc.sweep.summary import split_converged


def sweep_section(r: Results) -> list[str]:
    """Section 6: the sweep's design, then its correlation table and verdict, or why there is none."""
    cfg = sweep_config_of(r)
    trials = r.trials
    conv = split_converged(trials)[0] if len(trials) else trials
    space = ", ".join(k.replace("_", " ") for k in r.space) or "the search space"
    design = (
        "Optuna's scrambled-Sobol QMC sampler (a space-filling design, not an optimiser)"
        if cfg.sampler == "qmc"
        else f"Optuna's {cfg.sampler} sampler"
    )
    fit = (
        f"until its training cross-entropy is <= {cfg.target_loss:g} (cap {cfg.epochs} epochs): every trial at "
        "equal fit"
        if cfg.target_loss
        else f"for {cfg.epochs} epochs"
    )
    lines = [
        f"## 6. Does consistency predict generalization? {len(conv)} converged trials",
        "",
        f"`sweep` over {space} with {design}: the {cfg.dataset} {model_name(cfg.model)} trained at {cfg.seeds} "
        f"seed{'s' if cfg.seeds > 1 else ''} per configuration {fit}. {len(trials)} trials ran; "
        f"{len(trials) - len(conv)} hit the cap and are left out. Sampling unit: the trial (one configuration, "
        "scored on its own training run). Kendall τ-b of each measure with test accuracy and with the gap (clean "
        "training accuracy − test accuracy, whole test set) with a bootstrap 95% CI over trials; Ψ where groups "
        "exist. **One confirmatory test**, fixed before the run (docs/sweep.md): "
        f"`{CONFIRMATORY_MEASURE}` against test "
        f"accuracy, at α = {ALPHA:g} on its own (its p is its own p-value). Every other measure, and every "
        "measure against the gap, is exploratory: p-values Holm-adjusted over every exploratory measure of the "
        "same target. = `name` marks a measure with identical ranks here, the same ranks as `name` on these "
        "trials (so the same τ and raw p); it is a flag, and the measure still counts in its family. Cost: "
        "seconds per trial over the trial's seconds per epoch.",
        "",
    ]
    if r.sweep_error:
        lines += [f"**No verdict.** The sweep failed: {r.sweep_error}", ""]
    elif len(r.corr):
        lines += correlation_lines(r.corr, r.costs)
    else:
        lines += [
            f"**No verdict.** Only {len(conv)} converged trial{'s' if len(conv) != 1 else ''}: a rank correlation "
            f"needs at least {MIN_TRIALS}, so no correlation was computed. Rerun with more trials (`-P trials=`).",
        ]
    for key, alt in (("sweep_scatter", f"{CONFIRMATORY_MEASURE} vs test accuracy"), ("sweep_bars", "|τ| per measure")):
        if key in r.figures:
            lines += ["", f"![{alt}]({r.figures[key]})"]
    return [*lines, ""]


def _correlation_row(name: str, a, g, cost: float | None) -> str:
    """One measure's row: its correlations with test accuracy (`a`) and with the gap (`g`), and its cost."""
    gap = f"{fmt(g.kendall, 2)} [{fmt(g.kendall_ci_low, 2)}, {fmt(g.kendall_ci_high, 2)}]" if g is not None else "n/a"
    role = " (confirmatory)" if is_confirmatory(name, a) else ""
    twin = a.get("same_ranks_as", "")
    twin = f" = `{twin}`" if isinstance(twin, str) and twin else ""
    return (
        f"| `{name}`{role}{twin} | {fmt(a.kendall, 2)} [{fmt(a.kendall_ci_low, 2)}, {fmt(a.kendall_ci_high, 2)}] | "
        f"{fmt_p(a.get('kendall_p_holm', math.nan))} | {fmt(a.spearman, 2)} | "
        f"{fmt(a.granulated_kendall, 2)} ({fmt(a.worst_psi, 2)}) | {fmt(a.partial_kendall, 2)} | {gap} | "
        f"{fmt(cost, 2) if cost is not None else 'n/a'} |"
    )


def correlation_lines(corr: pd.DataFrame, costs: dict[str, float]) -> list[str]:
    """The sweep's correlation table (sorted by |τ| with test accuracy) and the verdict paragraph."""
    acc = corr[corr["target"] == PRIMARY_TARGET].set_index("measure")
    gap = corr[corr["target"] == "gen_gap"].set_index("measure")
    # by |τ|; among equal |τ|, the confirmatory measure first, then a measure before its rank twins
    twin = acc["same_ranks_as"].fillna("").astype(str) != "" if "same_ranks_as" in acc else False
    first = [not is_confirmatory(n, acc.loc[n]) for n in acc.index]
    keys = acc.assign(a=-acc["kendall"].abs(), c=first, t=twin)
    order = keys.sort_values(["a", "c", "t"], kind="stable").index
    lines = [
        "| measure | τ with test acc [95% CI] | p (confirmatory: alone; others: Holm) | ρ | Ψ (worst ψ_h) "
        "| partial τ | τ with gap [95% CI] | cost (epochs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        g = gap.loc[name] if name in gap.index else None
        lines.append(_correlation_row(name, acc.loc[name], g, cost_of(name, costs)))
    return lines + sweep_verdict(acc, costs)


def sweep_verdict(acc: pd.DataFrame, costs: dict[str, float]) -> list[str]:
    """The one-paragraph answer, from intervals and the confirmatory test only: does the pre-specified
    confirmatory measure predict test accuracy (its τ interval excludes 0 and its own p < ALPHA: the sweep's
    multiplicity rules), and does it beat the best baseline gm_* (its |τ| interval lies above the baseline's)
    at no greater cost?"""
    if CONFIRMATORY_MEASURE not in acc.index:
        return ["", f"The confirmatory measure `{CONFIRMATORY_MEASURE}` was not measured on these trials: no verdict."]
    h = acc.loc[CONFIRMATORY_MEASURE]
    h_lo, h_hi = abs_interval(h.kendall_ci_low, h.kendall_ci_high)
    p = h.get("kendall_p_holm", math.nan)
    predicts = confirmatory_predicts(h)
    lines = [
        "",
        "**Verdict.** The confirmatory test: the confirmatory measure "
        f"`{CONFIRMATORY_MEASURE}` has τ = {fmt(h.kendall, 2)} "
        f"[{fmt(h.kendall_ci_low, 2)}, {fmt(h.kendall_ci_high, 2)}] with test accuracy (p {fmt_p(p)}, tested alone "
        f"at α = {ALPHA:g}): "
        + (
            "it **predicts** test accuracy on these trials"
            if predicts
            else "there is **no evidence** that it predicts test accuracy on these trials"
        )
        + f", at a cost of {fmt(cost_of(CONFIRMATORY_MEASURE, costs), 2)} training epochs per trial.",
    ]
    best = best_baseline(acc)
    if best is not None:
        b = acc.loc[best]
        b_lo, b_hi = abs_interval(b.kendall_ci_low, b.kendall_ci_high)
        versus = versus_baseline(h, b)
        cmp = f"**{versus}** the best baseline" + (" at this number of trials" if versus == NOT_DISTINGUISHABLE else "")
        lines[-1] += (
            f" Its |τ| interval [{h_lo:.2f}, {h_hi:.2f}] is {cmp}, `{best}` (|τ| interval [{b_lo:.2f}, {b_hi:.2f}], "
            f"cost {fmt(cost_of(best, costs), 2)} epochs; exploratory). Non-overlapping intervals are the "
            "criterion: conservative."
        )
        met = meets_the_bar(abs(h.kendall), abs(b.kendall), cost_of(CONFIRMATORY_MEASURE, costs))
        lines += [
            "",
            f"SPEC's bar (|τ| ≥ {MIN_TAU}, above every baseline, at most {MAX_COST_EPOCHS:g} epochs), on point "
            f"estimates: {'met' if met else 'not met'}.",
        ]
    return lines
