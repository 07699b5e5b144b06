"""Section 6 of docs/REPORT.md: one sweep per environment (its design, correlation table, comparison with the best
baseline and figures), then the verdicts across the environments (`tc.report.robust_section`). Pure: the sweeps'
tables in, lines out (the verdicts themselves: `tc.report.verdicts`, `tc.report.robustness`)."""

from __future__ import annotations

import math

import pandas as pd

from tc.report.costs import cost_of
from tc.report.markdown import fmt, fmt_p, model_name
from tc.report.results import Results, SweepResult, sweeps_of
from tc.report.robust_section import across_lines
from tc.report.robustness import converged, cross_tables
from tc.report.verdicts import (
    MAX_COST_EPOCHS,
    MIN_TAU,
    NOT_DISTINGUISHABLE,
    abs_interval,
    best_baseline,
    is_confirmatory,
    meets_the_bar,
    versus_baseline,
)
from tc.stats.multiplicity import ALPHA, CONFIRMATORY_MEASURE, PRIMARY_TARGET
from tc.stats.rankcorr import MIN_TRIALS

COST_NOTE = (
    "Cost: total compute relative to ONE training run of the trial: the training runs a measure needs beyond the "
    "trial's own (1 for the measures that need a second seed's network, `gm_disagreement`, `gm_js_disagreement`, "
    "`tc_test_crossseed` and the seed spreads: a second training run) plus its analysis time over the trial's "
    "training time (`tc.report.costs.run_costs`)."
)


def _evaluated(every: int) -> str:
    """When a sweep with `test_every` = `every` evaluated the test set (`tc.core.train.tests_at`), in words."""
    return {0: "at the last epoch only", 1: "at every epoch"}.get(every, f"every {every} epochs and at the last")


def cost_note(sweeps: tuple[SweepResult, ...]) -> str:
    """COST_NOTE, and the training time the costs divide by as each sweep ran it: a test-set pass at each epoch its
    `test_every` evaluated (a sweep stored before test_every existed evaluated every epoch: read back as 1)."""
    every = {s.env.name: s.cfg.test_every for s in sweeps if s.cfg is not None}
    if not every:
        return COST_NOTE
    if len(set(every.values())) == 1:
        (e,) = set(every.values())
        where = f"with the test set evaluated {_evaluated(e)} (the sweep's `test_every={e}`)"
        where += ": it holds no per-epoch test pass" if e == 0 else ""
    else:
        where = "with the test set evaluated in " + ", ".join(
            f"`{name}` {_evaluated(e)} (`test_every={e}`)" for name, e in every.items()
        )
    return f"{COST_NOTE} The training time is the trial's as it ran, {where}."


def sweep_section(r: Results) -> list[str]:
    """Section 6: the design, each environment's sweep, then the verdicts across environments."""
    sweeps = sweeps_of(r)
    n = sum(len(converged(s)) for s in sweeps)
    where = f" in {len(sweeps)} environments" if len(sweeps) > 1 else ""
    names = ", ".join(f"{s.env.title} (`{s.env.name}`)" for s in sweeps)
    lines = [
        f"## 6. Does consistency predict generalization? {n} converged trials{where}",
        "",
        f"One sweep per environment ({names}), each its own study, scored on its own (Dziugaite et al., NeurIPS "
        "2020: a measure is judged by its worst environment, not by an average). Sampling unit: the trial (one "
        "configuration, scored on its own training run). Kendall τ-b of each measure with test accuracy and with the "
        "gap (clean training accuracy − test accuracy, whole test set), with a bootstrap 95% CI over trials; Ψ "
        "(Jiang et al. 2020: τ within fixed values of each other hyperparameter) where groups exist. **One "
        'confirmatory test**, fixed before the run (docs/report.md, "Confirmatory design"): '
        f"`{CONFIRMATORY_MEASURE}`'s τ with test accuracy is > 0 in every environment, each environment's one-sided "
        f"p < α = {ALPHA:g} (an intersection-union test: it needs no correction). Every other measure, and every "
        "measure against the gap, is exploratory: Holm-adjusted within its family. = `name` marks a measure with "
        "identical ranks, the same ranks as `name` on these trials (so the same τ and p): one test, counted once in "
        f"its family. {cost_note(sweeps)}",
        "",
    ]
    for k, s in enumerate(sweeps, 1):
        lines += environment_lines(s, f"6.{k}" if len(sweeps) > 1 else "6.1")
    lines += across_lines(sweeps, cross_tables(sweeps), f"6.{len(sweeps) + 1}", r.legacy_tables)
    return [*lines, ""]


def _design(s: SweepResult) -> str:
    cfg = s.cfg
    space = ", ".join(k.replace("_", " ") for k in s.space) or "the search space"
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
    trials, conv = s.trials, converged(s)
    return (
        f"`sweep` over {space} with {design}: the {cfg.dataset} {model_name(cfg.model)} trained at {cfg.seeds} "
        f"seed{'s' if cfg.seeds > 1 else ''} per configuration {fit}. {len(trials)} trials ran; "
        f"{len(trials) - len(conv)} hit the cap and are left out."
    )


def environment_lines(s: SweepResult, number: str) -> list[str]:
    """One environment's subsection: its design, then its correlation table and the comparison with its best
    baseline, or why there is none; its figures."""
    conv = converged(s)
    lines = [f"### {number} {s.env.title} (`{s.env.name}`): {len(conv)} converged trials", "", _design(s), ""]
    if s.error:
        lines += [f"**No verdict.** The sweep failed: {s.error}", ""]
    elif len(s.corr):
        # epochs per run over every trial of trials.csv: the trials the costs are averaged over (`run_costs`), and
        # what turned a stored table's epochs into runs (`runs_from_epochs`), so its epochs come back unchanged
        trials = s.trials
        epochs = trials["epochs_trained"].astype(float).mean() if "epochs_trained" in trials else math.nan
        lines += correlation_lines(s.corr, s.costs, epochs)
    else:
        lines += [
            f"**No verdict.** Only {len(conv)} converged trial{'s' if len(conv) != 1 else ''}: a rank correlation "
            f"needs at least {MIN_TRIALS}, so no correlation was computed. Rerun with more trials (`-P trials=`).",
            "",
        ]
    for key, alt in (("sweep_scatter", f"{CONFIRMATORY_MEASURE} vs test accuracy"), ("sweep_bars", "|τ| per measure")):
        if key in s.figures:
            lines += [f"![{alt}, {s.env.name}]({s.figures[key]})", ""]
    return lines


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


def correlation_lines(corr: pd.DataFrame, costs: dict[str, float], epochs_per_run: float = math.nan) -> list[str]:
    """An environment's correlation table (sorted by |τ| with test accuracy) and its comparison with its best
    baseline (`baseline_lines`)."""
    acc = corr[corr["target"] == PRIMARY_TARGET].set_index("measure")
    gap = corr[corr["target"] == "gen_gap"].set_index("measure")
    # by |τ|; among equal |τ|, the confirmatory measure first, then a measure before its rank twins
    twin = acc["same_ranks_as"].fillna("").astype(str) != "" if "same_ranks_as" in acc else False
    first = [not is_confirmatory(n, acc.loc[n]) for n in acc.index]
    keys = acc.assign(a=-acc["kendall"].abs(), c=first, t=twin)
    order = keys.sort_values(["a", "c", "t"], kind="stable").index
    lines = [
        "| measure | τ with test acc [95% CI] | p (two-sided; confirmatory: alone; others: Holm) | ρ | Ψ (worst ψ_h) "
        "| partial τ | τ with gap [95% CI] | cost (training runs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        g = gap.loc[name] if name in gap.index else None
        lines.append(_correlation_row(name, acc.loc[name], g, cost_of(name, costs)))
    return lines + baseline_lines(acc, costs, epochs_per_run)


def baseline_lines(acc: pd.DataFrame, costs: dict[str, float], epochs_per_run: float = math.nan) -> list[str]:
    """Exploratory, in one environment: the confirmatory measure's τ, and whether its |τ| interval lies above the
    best baseline's (gm_*), at what cost; SPEC's bar on point estimates. The verdict itself is the primary test's
    (`tc.report.robust_section`)."""
    if CONFIRMATORY_MEASURE not in acc.index:
        return ["", f"The confirmatory measure `{CONFIRMATORY_MEASURE}` was not measured on these trials."]
    h = acc.loc[CONFIRMATORY_MEASURE]
    h_lo, h_hi = abs_interval(h.kendall_ci_low, h.kendall_ci_high)
    cost = cost_of(CONFIRMATORY_MEASURE, costs)
    lines = [
        "",
        f"In this environment `{CONFIRMATORY_MEASURE}` has τ = {fmt(h.kendall, 2)} [{fmt(h.kendall_ci_low, 2)}, "
        f"{fmt(h.kendall_ci_high, 2)}] with test accuracy, at a cost of {fmt(cost, 2)} training runs per trial.",
    ]
    best = best_baseline(acc)
    if best is not None:
        b = acc.loc[best]
        b_lo, b_hi = abs_interval(b.kendall_ci_low, b.kendall_ci_high)
        versus = versus_baseline(h, b)
        cmp = f"**{versus}** the best baseline" + (" at this number of trials" if versus == NOT_DISTINGUISHABLE else "")
        lines[-1] += (
            f" Its |τ| interval [{h_lo:.2f}, {h_hi:.2f}] is {cmp}, `{best}` (|τ| interval [{b_lo:.2f}, {b_hi:.2f}], "
            f"cost {fmt(cost_of(best, costs), 2)} training runs; exploratory). Non-overlapping intervals are the "
            "criterion: conservative."
        )
        # SPEC's bar is in training epochs: the cost in runs times the trials' mean epochs per run
        epochs = cost * epochs_per_run if cost is not None and math.isfinite(epochs_per_run) else None
        met = meets_the_bar(abs(h.kendall), abs(b.kendall), epochs)
        lines += [
            "",
            f"SPEC's bar (|τ| ≥ {MIN_TAU}, above every baseline, at most {MAX_COST_EPOCHS:g} training epochs: here "
            f"{fmt(epochs, 1)}, at {fmt(epochs_per_run, 0)} epochs per run), on point estimates: "
            f"{'met' if met else 'not met'}.",
        ]
    return [*lines, ""]
