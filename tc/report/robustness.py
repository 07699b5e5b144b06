"""The verdicts across the report's environments (issue 23): every measure's robust row (τ per environment, pooled,
worst environment, `tc.stats.robust`), the primary test, τ per cut depth, and the single-run error estimates'
calibration beside GDE's with the pre-stated secondary test. Pure: the sweeps' tables in, tables and verdicts out.
The design is fixed in docs/report.md, "Confirmatory design (fixed before the run)"."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tc.report.results import SweepResult
from tc.report.verdicts import NO_EVIDENCE, NOT_MEASURED, PREDICTS
from tc.stats.calibration import calibration, compare_mae
from tc.stats.multiplicity import ALPHA, CONFIRMATORY_MEASURE, PRIMARY_TARGET, holm
from tc.stats.robust import per_cut_table, primary_predicts, robust_table
from tc.sweep.summary import measure_columns, split_converged

# The direction each measure is predicted to take with test accuracy, stated before the run (first match wins):
# agreement and κ up (a consistent network generalizes); divergences, distances, drift, error estimates, sharpness,
# norms, losses, training time and the two-seed disagreements down (Jiang et al. 2020; Jiang et al. 2022; Ru et al.
# 2021). None: no stated direction (the pooled τ's sign is taken, and paid for: `tc.stats.robust`).
PREDICTED_SIGN: tuple[tuple[str, int | None], ...] = (
    (r"tc_window_checkpoints", None),
    (r"tc_js_\w+|tc_mmd\w*|drift_\w+|err_hat_\w+", -1),
    (r"tc_\w+", +1),
    (r"gm_margin", +1),
    (r"gm_(js_)?disagreement|gm_sharpness|gm_dist_init|gm_param_norm|gm_log_spectral_product", -1),
    (r"gm_train_loss|gm_sum_train_loss|gm_steps_to_criterion", -1),
)


def predicted_sign(measure: str) -> int | None:
    """The measure's stated direction (PREDICTED_SIGN), None when none is stated."""
    return next((s for pattern, s in PREDICTED_SIGN if re.fullmatch(pattern, measure)), None)


def converged(sweep: SweepResult) -> pd.DataFrame:
    """The trials of a sweep that enter its correlations (converged), empty when it has none."""
    return split_converged(sweep.trials)[0] if len(sweep.trials) else sweep.trials


def _draws(sweeps: tuple[SweepResult, ...]) -> tuple[int, int]:
    cfg = sweeps[0].cfg if sweeps else None
    return (cfg.bootstrap, cfg.seed) if cfg is not None else (1000, 0)


def robust_of(sweeps: tuple[SweepResult, ...]) -> pd.DataFrame:
    """The robust table over every environment: one row per measure measured in any of them
    (`tc.stats.robust.robust_table`; the primary measure CONFIRMATORY_MEASURE); empty when none has trials with a
    test accuracy. An environment without them (its sweep failed, or none of its trials converged) stays in, as
    one where nothing was measured: "in every environment" cannot then be tested (p_IUT NaN, no verdict), rather
    than tested over the environments that happened to run."""
    trials = {s.env.name: converged(s) for s in sweeps}
    if not any(len(v) and PRIMARY_TARGET in v for v in trials.values()):
        return pd.DataFrame()
    measures = list(dict.fromkeys(m for df in trials.values() for m in measure_columns(list(df.columns))))
    if CONFIRMATORY_MEASURE in measures:
        measures = [CONFIRMATORY_MEASURE, *(m for m in measures if m != CONFIRMATORY_MEASURE)]
    draws, seed = _draws(sweeps)
    signs = {m: predicted_sign(m) for m in measures}
    return robust_table(trials, measures, CONFIRMATORY_MEASURE, signs, PRIMARY_TARGET, draws, seed)


def primary_verdict(robust: pd.DataFrame) -> str:
    """The report's one confirmatory verdict: PREDICTS when the primary test rejects (every environment's one-sided
    p < ALPHA), NO_EVIDENCE when it does not, NOT_MEASURED without the primary measure in every environment."""
    if robust.empty or CONFIRMATORY_MEASURE not in set(robust["measure"]):
        return NOT_MEASURED
    row = robust[robust["measure"] == CONFIRMATORY_MEASURE].iloc[0]
    if math.isnan(row["p_iut"]):
        return NOT_MEASURED
    return PREDICTS if primary_predicts(row) else NO_EVIDENCE


def per_cut_of(sweeps: tuple[SweepResult, ...], measure: str = CONFIRMATORY_MEASURE) -> pd.DataFrame:
    """τ of each cut's `measure` with test accuracy, per environment (`tc.stats.robust.per_cut_table`): columns
    env, cut, measure, tau, low, high, n; empty where trials.csv holds no per-cut column."""
    draws, seed = _draws(sweeps)
    parts = []
    for s in sweeps:
        df = converged(s)
        if len(df) and PRIMARY_TARGET in df:
            parts.append(per_cut_table(df, measure, PRIMARY_TARGET, draws, seed).assign(env=s.env.name))
    parts = [p for p in parts if len(p)]
    return (
        pd.concat(parts, ignore_index=True)[["env", "cut", "measure", "tau", "low", "high", "n"]]
        if parts
        else pd.DataFrame()
    )


# The single-run error estimates and GDE's (Jiang et al. 2022: the two seeds' test disagreement), against the
# error 1 - test_acc of the trial's own run; err_hat_<kind>_test is 1 - <its tc>, read off that tc where a table
# stored before issue 23 lacks the column (its definition: `tc.analysis.consistency`)
ESTIMATES = {"err_hat_tc_test": "tc_test", "err_hat_full_test": "tc_full_test", "gm_disagreement": None}
GDE = "gm_disagreement"
SECONDARY = "err_hat_full_test"  # the pre-stated secondary hypothesis: its mean |e - error| is smaller than GDE's


def _estimate(df: pd.DataFrame, name: str) -> np.ndarray | None:
    if name in df:
        return df[name].to_numpy(float)
    source = ESTIMATES.get(name)
    return 1.0 - df[source].to_numpy(float) if source and source in df else None


def calibration_of(sweeps: tuple[SweepResult, ...]) -> pd.DataFrame:
    """Per environment and estimate (ESTIMATES): `tc.stats.calibration.calibration` against 1 - test_acc over the
    converged trials (n, mae, slope, intercept and their intervals), and for the single-run estimates the paired
    comparison with GDE on the same trials (`compare_mae`: vs_gde, vs_gde_low, vs_gde_high, p_vs_gde).
    Sampling unit: the trial."""
    rows = []
    for s in sweeps:
        df = converged(s)
        if not len(df) or PRIMARY_TARGET not in df:
            continue
        error = 1.0 - df[PRIMARY_TARGET].to_numpy(float)
        gde = _estimate(df, GDE)
        for name in ESTIMATES:
            e = _estimate(df, name)
            if e is None:
                continue
            c = calibration(e, error)
            row = {"env": s.env.name, "estimate": name, **c.__dict__}
            if name != GDE and gde is not None:
                v = compare_mae(e, gde, error)
                row |= {"vs_gde": v.diff, "vs_gde_low": v.low, "vs_gde_high": v.high, "p_vs_gde": v.p}
            rows.append(row)
    return pd.DataFrame(rows)


def secondary_tests(cal: pd.DataFrame, envs: list[str]) -> pd.DataFrame:
    """The single-run estimates against GDE across the environments `envs`: per estimate, p_iut = the largest of
    the environments' one-sided paired p (smaller mean |e - error| than GDE's in EVERY environment: an
    intersection-union test), Holm-adjusted over the estimates compared (the calibration family, exploratory;
    SECONDARY is its pre-stated member): columns estimate, p_iut, p_holm, holds. Empty without comparisons."""
    if cal.empty or "p_vs_gde" not in cal:
        return pd.DataFrame()
    rows = []
    for name, part in cal.dropna(subset=["p_vs_gde"]).groupby("estimate", sort=False):
        p = part.set_index("env")["p_vs_gde"].reindex(envs)
        rows.append({"estimate": name, "p_iut": float(p.max()) if p.notna().all() else math.nan})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = np.nan
    ok = out["p_iut"].notna()
    out.loc[ok, "p_holm"] = holm(out.loc[ok, "p_iut"].to_numpy(float))
    out["holds"] = out["p_holm"] < ALPHA
    return out


@dataclass(frozen=True)
class CrossTables:
    """What the report computes across its environments (stored as robust.csv, per_cut.csv, calibration.csv)."""

    robust: pd.DataFrame
    per_cut: pd.DataFrame
    calibration: pd.DataFrame


def cross_tables(sweeps: tuple[SweepResult, ...]) -> CrossTables:
    """`robust_of`, `per_cut_of` and `calibration_of` of the sweeps."""
    return CrossTables(robust_of(sweeps), per_cut_of(sweeps), calibration_of(sweeps))
