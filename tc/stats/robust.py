"""Robust verdicts over environments (Dziugaite et al., NeurIPS 2020, "In search of robust measures of
generalization"): a measure is judged by its worst environment, not by an average over them. Pure: trials in,
tables out.

An environment is a family of trainable configurations (a data set, a model family, a search space); its trials
are scored on their own. For a measure μ, a target g (test accuracy) and environments e = 1..E:

    τ_e        Kendall τ-b of (μ, g) over e's trials, with its 95% percentile bootstrap interval over e's trials
    pooled τ   τ-b over the union of every environment's trials; its interval from a stratified bootstrap (each
               environment's trials resampled within it, its size kept)
    s          the direction the measure is predicted to take (+1: higher μ, higher accuracy), stated before the
               run (`signs`); where none is stated, the sign of the pooled τ (post-hoc: its p-values are then
               doubled, the two-sided test that a direction chosen from the data needs)
    p_e        one-sided p of τ_e in direction s (H0: s·τ_e <= 0; SciPy's τ-b test, ties included)
    worst      argmin_e s·τ_e: the environment least favourable to the prediction, with its interval
    p_IUT      max_e p_e: the intersection-union test (Berger 1982) of "s·τ_e > 0 in EVERY environment". It
               rejects only when every environment's own test rejects at α, and its level is α without any
               correction: under any point of the null some environment e has s·τ_e <= 0, and the IUT rejects only
               if that environment's level-α test does.

`robust_table`: one row per measure. The primary measure (fixed before the run) is tested alone, by p_IUT < α
(role `primary`); every other measure is `exploratory`, its p_IUT Holm-adjusted over the exploratory measures,
measures with identical ranks in every environment counted once (`tc.stats.multiplicity.holm_once`). An
exploratory measure "predicts" when its adjusted p < α and its worst environment's interval lies on the predicted
side of 0; the primary one when its test rejects (p_IUT < α: every environment's own test rejects), the verdict
the report states, whatever the bootstrap intervals.
Sampling unit of every p-value and interval: the trial (one configuration scored on its own training run).
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from tc.stats import bootstrap
from tc.stats.multiplicity import ALPHA, holm_once
from tc.stats.rankcorr import MIN_TRIALS, same_ranks


class TauCI(NamedTuple):
    """Kendall τ-b over `n` trials and its 95% percentile bootstrap interval (NaN where undefined)."""

    tau: float
    low: float
    high: float
    n: int


def _pairs(x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x and y without the pairs that hold a NaN, and the mask of the pairs kept."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep], keep


def kendall_interval(x, y, draws: int = 1000, seed: int = 0, strata=None) -> TauCI:
    """τ-b of x and y (pairs with a NaN dropped) and its percentile interval over `draws` resamples of the
    trials (`strata`: a label per trial; each stratum is resampled within itself, its size kept). Fewer than
    MIN_TRIALS pairs or a constant variable: NaN."""
    x, y, keep = _pairs(x, y)
    n = len(x)
    if n < MIN_TRIALS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return TauCI(math.nan, math.nan, math.nan, n)
    tau = float(stats.kendalltau(x, y).statistic)
    if draws <= 0:
        return TauCI(tau, math.nan, math.nan, n)
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, int) if strata is None else pd.factorize(np.asarray(strata)[keep])[0]
    idx = np.empty((draws, n), int)
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        idx[:, members] = members[rng.integers(0, len(members), (draws, len(members)))]
    values = bootstrap.kendall_draws(bootstrap.signs(x), bootstrap.signs(y), bootstrap.counts(idx))
    low, high = bootstrap.percentile_ci(values, draws)
    return TauCI(tau, low, high, n)


def one_sided_p(x, y, sign: int) -> float:
    """p of H0: sign·τ <= 0 against sign·τ > 0 (SciPy's τ-b test; pairs with a NaN dropped); NaN below
    MIN_TRIALS pairs or for a constant variable."""
    x, y, _ = _pairs(x, y)
    if len(x) < MIN_TRIALS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.kendalltau(x, y, alternative="greater" if sign > 0 else "less").pvalue)


def iut_p(pvalues) -> float:
    """The intersection-union test's p-value: the largest of the environments' (module doc); NaN when an
    environment has none (the hypothesis "in every environment" cannot be tested)."""
    p = np.asarray(list(pvalues), float)
    return float(p.max()) if len(p) and np.isfinite(p).all() else math.nan


def robust_row(envs: dict[str, tuple], sign: int | None, draws: int = 1000, seed: int = 0) -> dict:
    """One measure's robust scores over environments `envs` ({name: (measure values, target values)}), in the
    stated direction `sign` (+1, -1; None: the pooled τ's sign, p-values doubled): per environment `tau_<e>`,
    `tau_<e>_low`, `tau_<e>_high`, `n_<e>`, `p_<e>`; `pooled` (stratified interval), `direction`, `stated`,
    `worst_env` and its `worst_tau`, `worst_low`, `worst_high`; `p_iut`."""
    row: dict = {}
    taus = {}
    for k, (name, (x, y)) in enumerate(envs.items()):
        taus[name] = kendall_interval(x, y, draws, seed + k)
    xs = np.concatenate([np.asarray(x, float) for x, _ in envs.values()]) if envs else np.array([])
    ys = np.concatenate([np.asarray(y, float) for _, y in envs.values()]) if envs else np.array([])
    strata = np.concatenate([[k] * len(x) for k, (x, _) in enumerate(envs.values())]) if envs else np.array([])
    pooled = kendall_interval(xs, ys, draws, seed, strata)
    stated = sign is not None
    direction = sign if stated else (1 if not pooled.tau < 0 else -1)
    factor = 1.0 if stated else 2.0
    ps = {}
    for name, (x, y) in envs.items():
        p = one_sided_p(x, y, direction)
        ps[name] = min(1.0, factor * p) if not math.isnan(p) else math.nan
        t = taus[name]
        row |= {f"tau_{name}": t.tau, f"tau_{name}_low": t.low, f"tau_{name}_high": t.high}
        row |= {f"n_{name}": t.n, f"p_{name}": ps[name]}
    row |= {"pooled": pooled.tau, "pooled_low": pooled.low, "pooled_high": pooled.high, "n_pooled": pooled.n}
    row |= {"direction": direction, "stated": stated}
    # the worst environment: least favourable in the predicted direction; one not measured is the worst of all
    worst = min(taus, key=lambda e: -math.inf if math.isnan(taus[e].tau) else direction * taus[e].tau, default="")
    w = taus.get(worst, TauCI(math.nan, math.nan, math.nan, 0))
    row |= {"worst_env": worst, "worst_tau": w.tau, "worst_low": w.low, "worst_high": w.high}
    row["p_iut"] = iut_p(ps.values())
    return row


def on_predicted_side(direction: int, low: float, high: float) -> bool:
    """Whether the interval [low, high] lies entirely on the side of 0 that `direction` predicts."""
    return bool(low > 0) if direction > 0 else bool(high < 0)


def twins_everywhere(trials: dict[str, pd.DataFrame], measures: list[str]) -> dict[str, str]:
    """{measure: an earlier measure whose ranks equal its own in EVERY environment} (`same_ranks` per
    environment): only then is every rank statistic of the two the same number."""
    per_env = []
    for df in trials.values():
        present = [m for m in measures if m in df]
        per_env.append(same_ranks(df, present) if len(df) else {})
    if not per_env:
        return {}
    first = per_env[0]
    return {m: t for m, t in first.items() if all(e.get(m) == t for e in per_env[1:])}


def robust_table(
    trials: dict[str, pd.DataFrame],
    measures: list[str],
    primary: str,
    signs: dict[str, int | None],
    target: str = "test_acc",
    draws: int = 1000,
    seed: int = 0,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """One row per measure of `measures` (module doc) over the environments' trials `trials` ({name: trials of
    that environment, the converged ones}): `robust_row`'s columns, `role` (`primary` for `primary`, else
    `exploratory`), `same_ranks_as` (a twin in every environment), `p_holm` (primary: its own p_IUT; others:
    Holm over the exploratory measures, twins once) and `predicts`. `signs`: each measure's stated direction
    (missing or None: post-hoc, `robust_row`)."""
    rows, empty = [], (np.array([]), np.array([]))
    for m in measures:
        # every environment, in its order; one without the measure or the target as one with no trials
        envs = {
            name: (df[m].to_numpy(float), df[target].to_numpy(float)) if m in df and target in df else empty
            for name, df in trials.items()
        }
        rows.append({"measure": m, **robust_row(envs, signs.get(m), draws, seed)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    twins = twins_everywhere(trials, [primary, *measures] if primary in measures else measures)
    table["same_ranks_as"] = table["measure"].map(twins).fillna("")
    table["role"] = np.where(table["measure"] == primary, "primary", "exploratory")
    explore = table["role"] == "exploratory"
    p = pd.Series(table.loc[explore, "p_iut"].to_numpy(float), index=table.loc[explore, "measure"].to_numpy())
    table["p_holm"] = np.nan
    table.loc[explore, "p_holm"] = holm_once(p, twins).to_numpy(float)
    table.loc[~explore, "p_holm"] = table.loc[~explore, "p_iut"]
    # the primary: its pre-stated test alone (what the verdict paragraph says); the exploratory measures: their
    # adjusted p and, besides, their worst environment's interval on the predicted side
    table["predicts"] = [
        bool(r.p_holm < alpha) and (r.role == "primary" or on_predicted_side(r.direction, r.worst_low, r.worst_high))
        for r in table.itertuples()
    ]
    return table


def primary_predicts(row) -> bool:
    """The primary test's verdict from its robust row: the IUT rejects at α, every environment's own one-sided
    p < ALPHA (module doc). The intervals are reported beside it; the verdict is the test's."""
    return bool(row["p_iut"] < ALPHA)


CUT = re.compile(r"_d(\d+)$")


def per_cut_table(trials: pd.DataFrame, measure: str, target: str = "test_acc", draws: int = 1000, seed: int = 0):
    """τ-b of each cut's variant of `measure` (columns `<measure>_d<cut>`) with `target` over `trials`, with its
    bootstrap interval: one row per cut (cut, measure, tau, low, high, n), in cut order; empty without such
    columns. Which depth carries the signal: exploratory, no test."""
    cols = sorted(
        (int(CUT.search(c).group(1)), c) for c in trials.columns if c.startswith(f"{measure}_d") and CUT.search(c)
    )
    cols = [(cut, c) for cut, c in cols if c == f"{measure}_d{cut}"]
    rows = []
    for cut, c in cols:
        t = kendall_interval(trials[c], trials[target], draws, seed)
        rows.append({"cut": cut, "measure": c, "tau": t.tau, "low": t.low, "high": t.high, "n": t.n})
    return pd.DataFrame(rows, columns=["cut", "measure", "tau", "low", "high", "n"])
