"""Rank statistics that score a measure as a predictor of generalization across trials (SPEC 6, 6.1).

Pure functions: trials are a DataFrame (one row per trial, a column per hyperparameter and per measure), a
search space is a plain dict of hyperparameter -> spec ({"type": "float" | "int", "low", "high", "log"} or
{"type": "categorical", "choices"}), results are DataFrames. For models i = 1..M with measure μ_i and target g_i:
    τ (pairwise, SPEC 6.1) = 1/(M(M-1)) Σ_{i≠j} sign(μ_i - μ_j) sign(g_i - g_j)   -- reported as `kendall_pairs`;
    `kendall` is SciPy's tie-corrected τ-b with its p-value; `spearman` is Spearman's ρ with its p-value;
    Ψ (granulated, Jiang et al. 2020) = mean over hyperparameters h of ψ_h, ψ_h = mean of τ over groups of
    trials that agree on every other hyperparameter (floats within a relative tolerance, log-scale for
    log-uniform ones; others exactly), τ over the pairs of a group that differ in h only; ψ_h enters Ψ
    when it rests on >= 2 groups (`psi_entered`, `n_groups_<h>`, `n_pairs_<h>` are reported; see
    `granulated_kendall`);
    partial τ controlling for the hyperparameters: from the pseudo-inverse P of the τ-b matrix of
    (μ, g, h_1..h_k), τ_partial = -P_μg / sqrt(P_μμ P_gg) (the matrix form of Kendall's partial τ);
    95% bootstrap CIs resample trials with replacement (percentile method; `tc.stats.bootstrap`).
Sampling unit of every p-value and CI: the trial. Multiplicity (`tc.stats.multiplicity`): the pre-specified
CONFIRMATORY_MEASURE against PRIMARY_TARGET is the one confirmatory test, at ALPHA on its own; every other
(measure, target) is exploratory, Holm-adjusted within its target's family; measures with the same ranks on these
trials are flagged (`same_ranks`) and counted once.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from tc.stats import bootstrap
from tc.stats.multiplicity import CONFIRMATORY_MEASURE, multiplicity

MIN_TRIALS = 3  # the fewest trials a rank correlation is computed on (`correlation_table`)


def kendall_pairs(mu: np.ndarray, g: np.ndarray) -> float:
    """SPEC 6.1's τ over all ordered pairs (ties count 0)."""
    mu, g = np.asarray(mu, float), np.asarray(g, float)
    m = len(mu)
    if m < 2:
        return math.nan
    s = np.sign(mu[:, None] - mu[None, :]) * np.sign(g[:, None] - g[None, :])
    return float(s.sum() / (m * (m - 1)))


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(lambda c: c.astype(float) if c.dtype == bool else pd.to_numeric(c, errors="coerce"))


def _close(values: np.ndarray, spec: dict, tol: float) -> np.ndarray:
    """n x n: whether two trials agree on one hyperparameter (categorical and int exactly; numeric within
    `tol` of its range, log scale for log ranges). NaN follows the scalar rule it replaces: NaN != NaN for
    exact comparison, and |x - y| > tol·width is False for NaN (so a NaN numeric counts as close)."""
    if spec["type"] in ("categorical", "int"):
        return ~(values[:, None] != values[None, :])
    x = np.asarray(values, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        if spec.get("log"):
            x, width = np.log(x), math.log(spec["high"]) - math.log(spec["low"])
        else:
            width = spec["high"] - spec["low"]
        return ~(np.abs(x[:, None] - x[None, :]) > tol * width)


def granulated_groups(trials: pd.DataFrame, space: dict, tol: float = 0.1) -> dict[str, list[np.ndarray]]:
    """For each hyperparameter h, the groups of `granulated_kendall` as arrays of (a, b) row-position pairs
    (a < b, in row order) that differ in h; groups without such a pair are left out. Depends only on the
    trials' hyperparameters, `space` and `tol` (not on any measure), so one call serves every measure scored
    on the same rows. A group is seeded greedily by the first trial not yet grouped and takes every other
    ungrouped trial that matches it on the other hyperparameters; matching with a tolerance is not
    transitive, so the groups depend on which rows are present: recompute (or cache by row set) after
    dropping rows."""
    n = len(trials)
    close = {}
    for name, spec in space.items():
        col = trials[name]
        values = col.to_numpy(float) if spec["type"] == "float" else col.to_numpy(object)
        close[name] = _close(values, spec, tol)
    out = {}
    for h in space:
        same = np.ones((n, n), bool)
        for k in space:
            if k != h:
                same &= close[k]
        differ = ~close[h]
        groups, seen = [], np.zeros(n, bool)
        for i in range(n):
            if seen[i]:
                continue
            members = np.flatnonzero(same[i] & ~seen)
            seen[members] = True
            a, b = np.triu_indices(len(members), 1)  # row-major: itertools.combinations order
            a, b = members[a], members[b]
            keep = differ[a, b]
            if keep.any():
                groups.append(np.stack([a[keep], b[keep]], axis=1))
        out[h] = groups
    return out


class GranulatedKendall(NamedTuple):
    """Ψ and what it rests on. `entered`: the hyperparameters whose ψ_h was averaged into Ψ."""

    psi: float
    per_h: dict[str, float]
    groups: dict[str, int]
    pairs: dict[str, int]
    entered: list[str]


@dataclass(frozen=True)
class CorrelationOptions:
    """The rarely changed knobs of `correlation_table` and `granulated_kendall`.

    targets: the columns every measure is scored against; draws: bootstrap resamples (all three CIs, partial
    τ included, use all of them); seed: the resampling seed (the same resamples for every measure scored on
    the same rows); tol: the matching tolerance of Ψ's groups, as a fraction of a numeric range;
    min_groups / min_hyperparameters: when ψ_h enters Ψ and when Ψ is defined (`granulated_kendall`)."""

    targets: tuple[str, ...] = ("test_acc", "gen_gap")
    draws: int = 1000
    seed: int = 0
    tol: float = 0.1
    min_groups: int = 2
    min_hyperparameters: int = 2


def _psi(mu: np.ndarray, g: np.ndarray, groups: dict[str, list[np.ndarray]], options: CorrelationOptions):
    psi, counts, pairs = {}, {}, {}
    for h, parts in groups.items():
        taus = [float(np.mean(np.sign(mu[p[:, 0]] - mu[p[:, 1]]) * np.sign(g[p[:, 0]] - g[p[:, 1]]))) for p in parts]
        counts[h], pairs[h] = len(taus), sum(len(p) for p in parts)
        psi[h] = float(np.mean(taus)) if taus else math.nan
    entered = [h for h in groups if counts[h] >= options.min_groups and not math.isnan(psi[h])]
    enough = len(entered) >= max(options.min_hyperparameters, 1)
    value = float(np.mean([psi[h] for h in entered])) if enough else math.nan
    return GranulatedKendall(value, psi, counts, pairs, entered)


def granulated_kendall(
    trials: pd.DataFrame,
    measure: str,
    target: str,
    space: dict,
    tol: float | None = None,
    options: CorrelationOptions | None = None,
) -> GranulatedKendall:
    """Jiang et al. (2020)'s granulated Kendall coefficient, eq. (4)-(5):

        ψ_h = (1/m_h) Σ_groups τ_group,   Ψ = mean over the h that entered of ψ_h,
        τ_group = Σ_{a≠b in the group, θ_a(h) ≠ θ_b(h)} sign(μ_a - μ_b) sign(g_a - g_b)
                  / #{a≠b in the group, θ_a(h) ≠ θ_b(h)}

    A group for h: trials that match on every other hyperparameter (within `tol` of a numeric range, log
    scale for log ranges; categorical and int exactly) and take >= 2 distinct values of h
    (`granulated_groups`). Only pairs that differ in h count: two trials that repeat a setting (same seed or
    not) are no evidence about h, and the paper's groups hold one model per value of h. Sampling unit: the
    trial pair within a group.

    ψ_h enters Ψ only when it rests on >= `options.min_groups` groups (default 2: one group is a single τ,
    not an average over the other hyperparameters' settings); Ψ is NaN when fewer than
    `options.min_hyperparameters` (default 2) entered, because an "average over hyperparameters" of one ψ_h
    is just that ψ_h. `tol` (default `options.tol`, 0.1) overrides the options' tolerance.
    Returns (Ψ, {h: ψ_h}, {h: number of groups}, {h: number of pairs differing in h}, [h that entered])."""
    options = options or CorrelationOptions()
    rows = trials.reset_index(drop=True)
    groups = granulated_groups(rows, space, options.tol if tol is None else tol)
    return _psi(rows[measure].to_numpy(float), rows[target].to_numpy(float), groups, options)


def partial_kendall(trials: pd.DataFrame, measure: str, target: str, controls: list[str]) -> float:
    """Kendall's partial τ of `measure` and `target` controlling for `controls` (those constant in `trials`
    left out): -P_01 / sqrt(P_00 P_11) with P the pseudo-inverse of the τ-b matrix of (measure, target,
    controls); an undefined τ (constant column) enters as 0. Sampling unit: the trial."""
    cols = [measure, target, *[c for c in controls if trials[c].nunique() > 1]]
    data = _numeric(trials[cols]).to_numpy()
    k = len(cols)
    tau = np.eye(k)
    for a, b in itertools.combinations(range(k), 2):
        t = stats.kendalltau(data[:, a], data[:, b]).statistic
        tau[a, b] = tau[b, a] = 0.0 if np.isnan(t) else t
    p = np.linalg.pinv(tau)
    denom = math.sqrt(max(p[0, 0] * p[1, 1], 1e-300))
    return float(-p[0, 1] / denom)


def same_ranks(trials: pd.DataFrame, measures: list[str]) -> dict[str, str]:
    """{measure: the first earlier measure of `measures` whose ranks over the trials equal its own}: both
    are missing on the same trials and order the others identically (ties included), so every rank
    statistic of the two with any target is the same number on these trials: `multiplicity` counts them once
    in their Holm family (one test, not two). Measures that are no one's twin are left out."""
    out: dict[str, str] = {}
    keys: dict[tuple, str] = {}
    for m in dict.fromkeys(measures):  # first occurrence order
        ranks = trials[m].astype(float).rank(method="average").to_numpy()
        key = tuple(np.where(np.isnan(ranks), -1.0, ranks))  # NaN in the same trials, the same ranks elsewhere
        if key in keys:
            out[m] = keys[key]
        else:
            keys[key] = m
    return out


# ---- the table: every coefficient with its bootstrap CI, per (measure, target) -------------------------


class _RowSet:
    """What every measure scored on the same rows shares: Ψ's groups, the resamples (and their counts), the
    controls' sign matrices and mutual τ per resample, and each target's signs and τ-b denominators."""

    def __init__(self, rows: pd.DataFrame, space: dict, options: CorrelationOptions):
        n = len(rows)
        self.groups = granulated_groups(rows, space, options.tol)
        self.idx = np.random.default_rng(options.seed).integers(0, n, (options.draws, n))
        self.w = bootstrap.counts(self.idx)
        controls = [c for c in space if rows[c].nunique() > 1]  # as partial_kendall chooses them
        values = _numeric(rows[controls]) if controls else pd.DataFrame(index=rows.index)
        self.controls = [bootstrap.signs(values[c].to_numpy(float)) for c in controls]
        self.control_den = list(bootstrap.quads(self.w, [s.s2 for s in self.controls]).T)
        c = len(controls)
        self.tau_cc = np.zeros((options.draws, c, c))
        for a in range(c - 1):
            tau = bootstrap.tau_with(self.controls[a], self.controls[a + 1 :], self.w, self.control_den[a + 1 :])[1]
            self.tau_cc[:, a, a + 1 :] = tau
            self.tau_cc[:, a + 1 :, a] = tau
        self._targets: dict[str, tuple] = {}

    def variable(self, name: str, x: np.ndarray) -> tuple[bootstrap.Signs, np.ndarray, np.ndarray]:
        """(signs, τ-b denominators, τ-b with each control) of a target, cached."""
        if name not in self._targets:
            s = bootstrap.signs(x)
            self._targets[name] = (s, *bootstrap.tau_with(s, self.controls, self.w, self.control_den))
        return self._targets[name]


def correlation_table(
    trials: pd.DataFrame, measures: list[str], space: dict, options: CorrelationOptions | None = None
) -> pd.DataFrame:
    """One row per (measure, target): every coefficient of the module docstring with 95% bootstrap CIs, plus
    `same_ranks_as`, `role` and `kendall_p_holm` (`multiplicity`: the confirmatory test alone at α, Holm over
    each target's exploratory family). Sampling unit: the trial (one configuration of the space, scored on its own
    training run); every p-value and CI treats the trials as the independent units. Each (measure, target)
    uses the trials where both are present; what depends only on those rows (Ψ's groups, resamples, the
    controls' τ) is computed once per row set. CIs: `options.draws` resamples of the trials, the same for
    every coefficient, partial τ included."""
    options = options or CorrelationOptions()
    trials = trials.reset_index(drop=True)
    cache: dict[tuple[int, ...], _RowSet] = {}
    rows = []
    for measure, target in itertools.product(measures, options.targets):
        sub = trials[[measure, target, *space]].dropna(subset=[measure, target])
        if len(sub) >= MIN_TRIALS and sub[measure].nunique() >= 2:
            key = tuple(sub.index)
            sub = sub.reset_index(drop=True)
            if key not in cache:
                cache[key] = _RowSet(sub[list(space)], space, options)
            rows.append(_scores(sub, measure, target, space, options, cache[key]))
    table = pd.DataFrame(rows)
    if not table.empty:
        first = [CONFIRMATORY_MEASURE] if CONFIRMATORY_MEASURE in measures else []  # twins are named after it
        twins = same_ranks(trials, [*first, *measures])
        table["same_ranks_as"] = table["measure"].map(twins).fillna("")
    return multiplicity(table)


def _bootstrap_draws(mu: np.ndarray, g: np.ndarray, target: str, shared: _RowSet) -> dict[str, np.ndarray]:
    """Spearman ρ, τ-b and partial τ (controls: the hyperparameters, as `partial_kendall`) of measure `mu`
    and target column `target` (values `g`) on each of `shared`'s resamples (NaN where undefined).
    Sampling unit: the trial."""
    gs, g_den, tau_gc = shared.variable(target, g)
    _, taus = bootstrap.tau_with(bootstrap.signs(mu), [gs, *shared.controls], shared.w, [g_den, *shared.control_den])
    tau_mg, tau_mc = taus[:, 0], taus[:, 1:]
    return {
        "spearman": bootstrap.spearman_draws(mu, g, shared.idx),
        "kendall": tau_mg,
        "partial_kendall": bootstrap.partial_draws(tau_mg, tau_mc, tau_gc, shared.tau_cc),
    }


def _scores(sub: pd.DataFrame, measure: str, target: str, space: dict, options: CorrelationOptions, shared: _RowSet):
    n = len(sub)
    mu, g = sub[measure].to_numpy(float), sub[target].to_numpy(float)
    rho, tb = stats.spearmanr(mu, g), stats.kendalltau(mu, g)
    psi, per_h, counts, pairs, entered = _psi(mu, g, shared.groups, options)
    row = {
        "measure": measure,
        "target": target,
        "n_trials": n,
        "spearman": rho.statistic,
        "spearman_p": rho.pvalue,
        "kendall": tb.statistic,
        "kendall_p": tb.pvalue,
        "kendall_pairs": kendall_pairs(mu, g),
        "granulated_kendall": psi,
        "psi_entered": ",".join(entered),
        "worst_psi": min((per_h[h] for h in entered), default=math.nan),
        "partial_kendall": partial_kendall(sub, measure, target, list(space)),
    }
    for h in space:
        row[f"psi_{h}"], row[f"n_groups_{h}"], row[f"n_pairs_{h}"] = per_h[h], counts[h], pairs[h]
    boot = _bootstrap_draws(mu, g, target, shared)
    for name in ("spearman", "kendall", "partial_kendall"):
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = bootstrap.percentile_ci(boot[name], options.draws)
    return row
