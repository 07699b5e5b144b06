"""Section 6's verdicts across the report's environments: the robust table (τ per environment, pooled, worst
environment, predicts?), τ per cut depth, the single-run error estimates' calibration beside GDE's, and the verdict
paragraph, from the primary test alone. Pure: `tc.report.robustness`'s tables in, lines out."""

from __future__ import annotations

import math

import pandas as pd

from tc.report.costs import cost_of
from tc.report.markdown import fmt, fmt_p
from tc.report.results import SweepResult
from tc.report.robustness import GDE, SECONDARY, CrossTables, primary_verdict, secondary_tests
from tc.report.verdicts import NOT_MEASURED, PREDICTS
from tc.stats.multiplicity import ALPHA, CONFIRMATORY_MEASURE


def _ci(x, lo, hi, digits: int = 2) -> str:
    return f"{fmt(x, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def _cost(c: float | None) -> str:
    return fmt(c, 2) if c is not None else "n/a"


POST_HOC = (
    " These trials were run before this design was fixed (a re-rendering of a report stored before issue 23): on "
    "them it is a re-reading, not a confirmation."
)


def across_lines(sweeps: tuple[SweepResult, ...], cross: CrossTables, number: str, post_hoc: bool = False) -> list[str]:
    """The subsection across environments: robust table, per-cut τ, calibration, and the verdict. `post_hoc`: the
    trials were seen before the design was fixed (tables stored before issue 23), and the text says so."""
    envs = [s.env.name for s in sweeps]
    lines = [f"### {number} Across environments: robust verdicts", ""]
    if cross.robust.empty:
        lines += ["No environment has converged trials with a test accuracy: no robust verdict.", ""]
    else:
        lines += robust_lines(cross.robust, envs, sweeps)
    lines += per_cut_lines(cross.per_cut, envs)
    lines += calibration_lines(cross.calibration, envs, post_hoc)
    return lines + verdict_lines(cross.robust, envs, post_hoc)


def robust_lines(robust: pd.DataFrame, envs: list[str], sweeps: tuple[SweepResult, ...]) -> list[str]:
    """The robust table: per measure τ per environment, pooled τ, the worst environment and whether it predicts."""
    costs = {s.env.name: s.costs for s in sweeps}
    favour = robust["direction"] * robust["worst_tau"]
    order = robust.assign(f=favour.fillna(-math.inf), p=robust["role"] != "primary")
    order = order.sort_values(["p", "f"], ascending=[True, False], kind="stable")
    head = " | ".join(f"τ `{e}` [95% CI]" for e in envs)
    lines = [
        "Each measure's τ with test accuracy per environment, pooled over every environment's trials "
        "(stratified bootstrap; descriptive: it also ranks the environments against each other, whose "
        "accuracy and measure levels differ, so it can exceed or reverse every environment's τ), and its "
        "**worst environment**: the one least favourable in its predicted direction (`+`: higher is better; "
        "`−`: lower; `?`: none stated before the run, the pooled sign taken and its p doubled). p: the "
        'largest of the environments\' one-sided p (an intersection-union test of "in every environment"); the '
        f"primary measure's alone, every other Holm-adjusted over the exploratory measures (rank twins once). The "
        f"primary measure **predicts** when its p < {ALPHA:g} (its test, the verdict below); every other when that "
        f"p < {ALPHA:g} and its worst environment's interval lies on the predicted side of 0. Cost: training runs, "
        "per environment.",
        "",
        f"| measure | dir. | {head} | pooled [95% CI] | worst environment: τ [95% CI] | p | predicts? | cost |",
        "|---|---|" + "---|" * len(envs) + "---|---|---|---|---|",
    ]
    for r in order.to_dict("records"):  # records: environment names are no identifiers (digits-mlp)
        role = " (primary)" if r["role"] == "primary" else ""
        twin = r["same_ranks_as"] if isinstance(r["same_ranks_as"], str) else ""
        twin = f" = `{twin}`" if twin else ""
        sign = "?" if not r["stated"] else "+" if r["direction"] > 0 else "−"
        per = " | ".join(
            _ci(r[f"tau_{e}"], r[f"tau_{e}_low"], r[f"tau_{e}_high"]) if f"tau_{e}" in r else "n/a" for e in envs
        )
        cost = " / ".join(_cost(cost_of(r["measure"], costs[e])) for e in envs)
        worst = (
            f"`{r['worst_env']}` {_ci(r['worst_tau'], r['worst_low'], r['worst_high'])}" if r["worst_env"] else "n/a"
        )
        lines.append(
            f"| `{r['measure']}`{role}{twin} | {sign} | {per} | {_ci(r['pooled'], r['pooled_low'], r['pooled_high'])} "
            f"| {worst} | {fmt_p(r['p_holm'])} | {'**yes**' if r['predicts'] else 'no'} | {cost} |"
        )
    return [*lines, ""]


def per_cut_lines(per_cut: pd.DataFrame, envs: list[str]) -> list[str]:
    """τ of the primary measure at each cut depth, per environment (exploratory: which depth carries the signal)."""
    title = f"**Per cut.** τ of `{CONFIRMATORY_MEASURE}_d<cut>` (the measure at one cut depth) with test accuracy"
    if per_cut.empty:
        return [
            f"{title}: not in these trials (their trials table holds no per-cut column: a sweep run before "
            "per-cut scores reached trials.csv).",
            "",
        ]
    cuts = sorted(per_cut["cut"].unique())
    lines = [
        f"{title}, per environment, with its bootstrap 95% CI (exploratory, no test: which depth carries the "
        "signal; the primary measure is their mean over cuts).",
        "",
        "| cut | " + " | ".join(f"τ `{e}` [95% CI]" for e in envs) + " |",
        "|---|" + "---|" * len(envs),
    ]
    table = per_cut.set_index(["env", "cut"])
    # an environment whose architectures have different numbers of cuts (ResNet-8 and -14) scores a cut index on
    # part of its trials only, and there the index is a different place in each network: the cell says on how many
    full = per_cut.groupby("env")["n"].max() if "n" in per_cut else pd.Series(dtype=float)
    partial = False
    for cut in cuts:
        cells = []
        for e in envs:
            if (e, cut) not in table.index:
                cells.append("n/a")
                continue
            cell = _ci(*table.loc[(e, cut), ["tau", "low", "high"]])
            n = table.loc[(e, cut), "n"] if "n" in table else full.get(e)
            if e in full and n < full[e]:
                cell += f" (n = {int(n)} of {int(full[e])})"
                partial = True
            cells.append(cell)
        lines.append(f"| {cut} | " + " | ".join(cells) + " |")
    if partial:
        lines += [
            "",
            "(n = k of m): the cut exists in k of the environment's m trials only (an architecture with fewer "
            "cuts has none there), so its τ is over those trials, and a cut index is not the same depth in "
            "networks of different depth.",
        ]
    return [*lines, ""]


def calibration_lines(cal: pd.DataFrame, envs: list[str], post_hoc: bool = False) -> list[str]:
    """The single-run error estimates beside GDE's, against the trial's test error, and the secondary test."""
    if cal.empty:
        return ["**Single-run error estimates.** Not measured on these trials.", ""]
    lines = [
        "**Single-run error estimates beside GDE.** Each estimate against the trial's test error (1 − test "
        "accuracy), over the same converged trials (sampling unit: the trial): mean |estimate − error| with its t "
        "95% CI, and the least-squares line error = a + b · estimate (calibrated: b = 1, a = 0) with t CIs. "
        "`err_hat_tc_test` = 1 − `tc_test` and `err_hat_full_test` = 1 − `tc_full_test` come from ONE training run; "
        f"GDE (`{GDE}`) needs two. Δ: the paired mean of |estimate − error| − |GDE − error| (negative: closer than "
        "GDE), with its one-sided paired t p.",
        "",
        "| environment | estimate | n | mean abs. error [95% CI] | slope [95% CI] | intercept [95% CI] | Δ vs GDE "
        "[95% CI] | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in cal.itertuples():
        vs = _ci(r.vs_gde, r.vs_gde_low, r.vs_gde_high, 3) if hasattr(r, "vs_gde") and not pd.isna(r.vs_gde) else "—"
        p = fmt_p(r.p_vs_gde) if hasattr(r, "p_vs_gde") and not pd.isna(r.p_vs_gde) else "—"
        lines.append(
            f"| `{r.env}` | `{r.estimate}` | {r.n} | {_ci(r.mae, r.mae_low, r.mae_high, 3)} | "
            f"{_ci(r.slope, r.slope_low, r.slope_high)} | {_ci(r.intercept, r.intercept_low, r.intercept_high, 3)} | "
            f"{vs} | {p} |"
        )
    tests = secondary_tests(cal, envs)
    if len(tests):
        sec = tests.set_index("estimate")
        if SECONDARY in sec.index:
            row = sec.loc[SECONDARY]
            lines += [
                "",
                f"**Secondary hypothesis (pre-stated, exploratory):** `{SECONDARY}`'s mean |e − error| is smaller than "
                f"GDE's in every environment (the largest one-sided paired p, {fmt_p(row.p_iut)}; Holm over the "
                f"{len(tests)} single-run estimates compared: {fmt_p(row.p_holm)}): "
                + (
                    "**holds**."
                    if row.holds
                    else "**not tested**: an environment has no comparison."
                    if pd.isna(row.p_iut)
                    else _against(cal, envs)
                )
                + (POST_HOC if post_hoc else ""),
            ]
    return [*lines, ""]


def _against(cal: pd.DataFrame, envs: list[str]) -> str:
    """The secondary hypothesis not shown: "contradicted" where an environment's Δ interval lies wholly above 0 (GDE
    significantly closer: the data point the other way), else "not shown"."""
    rows = cal[cal["estimate"] == SECONDARY].set_index("env") if "vs_gde_low" in cal else pd.DataFrame()
    worse = [e for e in envs if e in rows.index and rows.loc[e, "vs_gde_low"] > 0]
    if not worse:
        return "**not shown** at these trials."
    said = ", ".join(
        f"`{e}` Δ = {_ci(rows.loc[e, 'vs_gde'], rows.loc[e, 'vs_gde_low'], rows.loc[e, 'vs_gde_high'], 3)}"
        for e in worse
    )
    return f"**contradicted**: GDE's estimate is closer to the test error, its interval above 0, in {said}."


def verdict_lines(robust: pd.DataFrame, envs: list[str], post_hoc: bool = False) -> list[str]:
    """The verdict paragraph, from the primary test alone."""
    verdict = primary_verdict(robust)
    if verdict == NOT_MEASURED:
        return [
            f"**Verdict.** The primary measure `{CONFIRMATORY_MEASURE}` was not measured with a test accuracy in every "
            "environment: no verdict.",
            "",
        ]
    row = robust[robust["measure"] == CONFIRMATORY_MEASURE].iloc[0]
    taus = {e: _ci(row[f"tau_{e}"], row[f"tau_{e}_low"], row[f"tau_{e}_high"]) for e in envs}
    per = "; ".join(f"`{e}` τ = {taus[e]}, one-sided p {fmt_p(row[f'p_{e}'])}" for e in envs)
    said = (
        "it **predicts** test accuracy in every environment"
        if verdict == PREDICTS
        else f"there is **no evidence** that it predicts test accuracy in every environment (worst: `{row.worst_env}`)"
    )
    return [
        f"**Verdict.** The primary test: `{CONFIRMATORY_MEASURE}` with test accuracy, {per}. Every environment's "
        f"p < {ALPHA:g} is needed: {said}. Pooled over the environments τ = "
        f"{_ci(row.pooled, row.pooled_low, row.pooled_high)} (descriptive: it mixes the environments' levels; the "
        "verdict reads each environment)." + (POST_HOC if post_hoc else ""),
        "",
    ]
