"""Search spaces and the statistics that score a measure as a predictor of generalization (SPEC 6, 6.1).

Pure functions: a search space is a plain dict, trials are a DataFrame (one row per trial), results are
DataFrames. Optuna appears only where a trial suggests values.

For models i = 1..M with measure μ_i and target g_i:
    τ (pairwise, SPEC 6.1) = 1/(M(M-1)) Σ_{i≠j} sign(μ_i - μ_j) sign(g_i - g_j)   -- reported as `kendall_pairs`;
    `kendall` is SciPy's tie-corrected τ-b with its p-value; `spearman` is Spearman's ρ with its p-value;
    Ψ (granulated, Jiang et al. 2020) = mean over hyperparameters h of ψ_h, ψ_h = mean of τ over groups of
    trials that agree on every other hyperparameter (floats within a relative tolerance, log-scale for
    log-uniform ones; others exactly), τ over the pairs of a group that differ in h only; ψ_h enters Ψ
    when it rests on >= 2 groups (`psi_entered`, `n_groups_<h>`, `n_pairs_<h>` are reported; see
    `granulated_kendall`);
    partial τ controlling for the hyperparameters: from the pseudo-inverse P of the τ-b matrix of
    (μ, g, h_1..h_k), τ_partial = -P_μg / sqrt(P_μμ P_gg) (the matrix form of Kendall's partial τ);
    95% bootstrap CIs resample trials with replacement (percentile method).
Sampling unit of every p-value and CI: the trial. Multiplicity (`multiplicity`): the pre-specified measure
HEADLINE against PRIMARY_TARGET is the one confirmatory test, at ALPHA on its own; every other (measure,
target) is exploratory, Holm-adjusted within its target's family (every measure counts, whatever its
dependence on the others); measures with the same ranks on these trials are flagged (`same_ranks`).
"""

from __future__ import annotations

import itertools
import json
import math
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from tc.config import TrainConfig
from tc.tracking.labels import gen_gap  # noqa: F401  (tc.sweep.gen_gap: the one definition lives in the light runinfo)

# The default space, for the sweep's default proxy (an MLP on digits trained to cross-entropy 0.01;
# docs/sweep.md, "The proxy"). `train_size` 0 is the whole training set; `default_space(n_train)` drops the
# choices a data set cannot satisfy, so the default space always fits the data (digits has 1438 training images).
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 0.02, "high": 0.2, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-4, "log": True},
    "width": {"type": "categorical", "choices": [32, 64, 128]},
    "label_noise": {"type": "categorical", "choices": [0.0, 0.1]},
    "train_size": {"type": "categorical", "choices": [500, 1000, 2000, 0]},
}

HEADLINE = "tc_kappa_test"  # the pre-specified (confirmatory) measure, docs/sweep.md; every other is exploratory
PRIMARY_TARGET = "test_acc"  # the confirmatory hypothesis: HEADLINE's Kendall τ with test accuracy is not 0
ALPHA = 0.05  # the level of the confirmatory test and of each exploratory family's family-wise error


def load_space(path: str | None) -> dict[str, dict[str, Any]]:
    """The default space, or one read from a YAML or JSON file mapping parameter -> spec; validated."""
    if path is None:
        return DEFAULT_SPACE
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"search_space={path!r}: no such file")
    try:
        import yaml

        space = yaml.safe_load(p.read_text()) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text())
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"search_space={path!r} is not valid YAML/JSON: {e}") from e
    validate_space(space, path)
    return space


def default_space(n_train: int) -> dict[str, dict[str, Any]]:
    """DEFAULT_SPACE fitted to a data set with `n_train` training examples: `train_size` choices larger than
    the data set are dropped (0, the whole set, always stays)."""
    space = {k: dict(v) for k, v in DEFAULT_SPACE.items()}
    space["train_size"]["choices"] = [c for c in DEFAULT_SPACE["train_size"]["choices"] if c <= n_train]
    return space


def check_space_fits(space: dict[str, dict[str, Any]], n_train: int, dataset: str, where: str = "search space") -> None:
    """Refuse, before any trial, a space with a value the data set cannot satisfy: a `train_size` choice or
    upper bound above its `n_train` training examples (load_data would fail that trial)."""
    spec = space.get("train_size")
    if spec is None:
        return
    values = spec["choices"] if spec["type"] == "categorical" else [spec["high"]]
    too_big = [v for v in values if isinstance(v, (int, float)) and v > n_train]
    if too_big:
        raise ValueError(
            f"{where}: train_size {too_big} exceeds the {n_train} training examples of {dataset}; "
            f"use values <= {n_train} (0 = the whole training set)"
        )


def qmc_sampler(seed: int, independent_seed: int | None = None):
    """Optuna's scrambled-Sobol QMCSampler: a space-filling design over the numeric parameters (categorical
    ones fall back to a seeded RandomSampler, as QMCSampler does for any non-numeric distribution). One
    scramble seed for the whole study, so that workers share one low-discrepancy sequence. Optuna samples
    the study's first trial independently (it learns the space from it); the Sobol sequence starts after it.
    `independent_seed` (default `seed`) seeds the RandomSampler for the categorical parameters."""
    import optuna

    independent = seed if independent_seed is None else independent_seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(
            qmc_type="sobol",
            scramble=True,
            seed=seed,
            independent_sampler=optuna.samplers.RandomSampler(seed=independent),
            warn_independent_sampling=False,
            warn_asynchronous_seeding=False,
        )


def seed_spread(first: dict[str, float], second: dict[str, float], measures: list[str]) -> dict[str, float]:
    """`<measure>_seed_sd`: the sample standard deviation |a - b| / sqrt(2) of each measure over the two seeds
    of one configuration (ddof = 1; sampling unit: the training seed), for the measures both seeds have."""
    out = {}
    for m in measures:
        a, b = first.get(m), second.get(m)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
            out[f"{m}_seed_sd"] = abs(a - b) / math.sqrt(2.0)
    return out


def split_converged(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials that enter the correlations, trials that never reached the stopping criterion). A trial with
    `converged` = 0 is left out: comparing it with converged ones would compare models at unequal fit. A
    trial without the column (no stopping criterion) enters."""
    if "converged" not in trials:
        return trials, trials.iloc[0:0]
    out = trials["converged"].astype(float) == 0
    return trials[~out].reset_index(drop=True), trials[out].reset_index(drop=True)


def validate_space(space: Any, where: str = "search space") -> None:
    fields = set(TrainConfig.__dataclass_fields__) - {"seed", "device", "data_dir", "download", "dataset", "model"}
    if not isinstance(space, dict) or not space:
        raise ValueError(f"{where}: expected a non-empty mapping of parameter -> spec")
    for name, spec in space.items():
        if name not in fields:
            raise ValueError(f"{where}: {name!r} is not a tunable training parameter; valid: {sorted(fields)}")
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind in ("float", "int"):
            if not {"low", "high"} <= set(spec):
                raise ValueError(f"{where}: {name} needs low and high, got {spec}")
            number = int if kind == "int" else (int, float)
            for bound in ("low", "high"):
                if isinstance(spec[bound], bool) or not isinstance(spec[bound], number):
                    what = "an integer" if kind == "int" else "a number"
                    raise ValueError(f"{where}: {name}.{bound} must be {what}, got {spec[bound]!r}")
            if not spec["low"] < spec["high"]:
                raise ValueError(f"{where}: {name} needs low < high, got {spec}")
        elif kind == "categorical":
            if not spec.get("choices"):
                raise ValueError(f"{where}: {name} needs a non-empty `choices` list")
        else:
            raise ValueError(f"{where}: {name} has type {kind!r}; use float, int or categorical")


def _of_type(value: Any, kind: type) -> bool:
    """Whether `value` (as YAML/JSON gave it) is a value of a TrainConfig field of type `kind`: bools only for
    bool fields, integers (not 32.0, not True) for int fields, any number but a bool for float fields."""
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def check_space_values(space: dict[str, dict[str, Any]], fixed: dict[str, Any], where: str = "search space") -> None:
    """Check every bound and every choice of every parameter against its TrainConfig field: its type
    (`choices: [32.5]` for batch_size, or `type: float` for an integer field, is refused), then TrainConfig's
    own validation with the sweep's `fixed` settings (label_noise 1.2, lr -1), so that a bad value is reported
    here, naming the parameter, before the first trial, and not as a traceback in the middle of a sweep.
    Numeric ranges are checked at both ends (TrainConfig's ranges are intervals, so the values between pass
    too)."""
    hints = typing.get_type_hints(TrainConfig)
    for name, spec in space.items():
        kind = hints[name]
        if spec["type"] != "categorical" and kind not in (int, float):
            raise ValueError(f"{where}: {name} takes {kind.__name__} values: use type categorical")
        if spec["type"] == "float" and kind is int:
            raise ValueError(
                f"{where}: {name} takes integers, and type float samples fractions: use int or categorical"
            )
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in values:
            if not _of_type(value, kind):
                raise ValueError(
                    f"{where}: {name}={value!r} is not a valid training value: {name} takes {kind.__name__} values"
                )
            try:
                TrainConfig(**{**fixed, name: value})
            except (ValueError, TypeError) as e:
                raise ValueError(f"{where}: {name}={value!r} is not a valid training value: {e}") from None


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Values for one Optuna trial."""
    out = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            out[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
        elif spec["type"] == "int":
            out[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec.get("log", False))
        else:
            out[name] = trial.suggest_categorical(name, spec["choices"])
    return out


def grid_of(space: dict[str, dict[str, Any]], points: int = 3) -> dict[str, list]:
    """A grid for Optuna's GridSampler: categorical choices, and `points` values across numeric ranges."""
    grid = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            grid[name] = list(spec["choices"])
        elif spec.get("log"):
            grid[name] = list(np.geomspace(spec["low"], spec["high"], points))
        else:
            values = np.linspace(spec["low"], spec["high"], points)
            grid[name] = [round(v) for v in values] if spec["type"] == "int" else list(values)
    return grid


# ---- scoring measures -------------------------------------------------------------------------------


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


# ---- the bootstrap, all resamples at once ----------------------------------------------------------------
# A resample is a row of `idx` (draws x n). Every pairwise sum over a resample's pairs,
# Σ_{i,j} f(idx_i, idx_j), equals Σ_{p,q} w_p w_q f(p, q) with w the resample's counts of each trial, so the
# sums behind τ-b are w^T M w for an n x n matrix M computed once: one BLAS product for all draws.


class _Signs(NamedTuple):
    """One variable: its n x n sign matrix S (NaN pairs as 0), S², and its NaN rows."""

    s: np.ndarray
    s2: np.ndarray
    nan: np.ndarray


def _signs(x: np.ndarray) -> _Signs:
    x = np.asarray(x, float)
    with np.errstate(invalid="ignore"):
        s = np.nan_to_num(np.sign(x[:, None] - x[None, :]))
    return _Signs(s, s * s, np.isnan(x))


def _counts(idx: np.ndarray) -> np.ndarray:
    """draws x n: how often each trial appears in each resample."""
    draws, n = idx.shape
    flat = (idx + n * np.arange(draws)[:, None]).ravel()
    return np.bincount(flat, minlength=draws * n).reshape(draws, n).astype(float)


def _quads(w: np.ndarray, mats: list[np.ndarray]) -> np.ndarray:
    """draws x len(mats): w^T M w per resample for each M, with one matrix product for all of them."""
    draws, n = w.shape
    if not mats:
        return np.zeros((draws, 0))
    prod = (w @ np.concatenate(mats, axis=1)).reshape(draws, len(mats), n)
    return np.einsum("dkp,dp->dk", prod, w)


def _tau_with(a: _Signs, others: list[_Signs], w: np.ndarray, dens: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(Σ S_a² per resample, draws x len(others) τ-b of `a` with each of `others`, whose Σ S² are `dens`).

    τ-b of a resample (SciPy's, ties from repeated trials included) is Σ S_a S_b / sqrt(Σ S_a² Σ S_b²) over
    its pairs; NaN where either is constant in it or it holds a NaN of either. Sampling unit: the trial."""
    q = _quads(w, [a.s2, *(a.s * b.s for b in others)])
    den_a, taus = q[:, 0], q[:, 1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, (b, den_b) in enumerate(zip(others, dens, strict=True)):
            taus[:, k] /= np.sqrt(den_a * den_b)
            taus[(w[:, a.nan | b.nan] > 0).any(axis=1), k] = np.nan
    return den_a, taus


def _kendall_draws(a: _Signs, b: _Signs, w: np.ndarray) -> np.ndarray:
    """τ-b of `a` and `b` on each resample (`_tau_with`)."""
    return _tau_with(a, [b], w, [_quads(w, [b.s2])[:, 0]])[1][:, 0]


def _spearman_draws(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each resample (average ranks, then Pearson per row); NaN for a constant resample."""
    rx, ry = stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))


def _partial_draws(tau_mg: np.ndarray, tau_mc: np.ndarray, tau_gc: np.ndarray, tau_cc: np.ndarray) -> np.ndarray:
    """`partial_kendall` of each resample from its τ-b matrices: tau_mg (draws), tau_mc and tau_gc
    (draws x c), tau_cc (draws x c x c, the controls' own; the same for every measure). An undefined τ enters
    as 0, which is also what dropping a control that is constant in the resample amounts to (its row and
    column of the matrix are then those of the identity, so P restricted to the others is unchanged)."""
    draws, c = tau_mc.shape
    t = np.zeros((draws, c + 2, c + 2))
    t[:, 0, 1] = t[:, 1, 0] = tau_mg
    t[:, 0, 2:] = t[:, 2:, 0] = tau_mc
    t[:, 1, 2:] = t[:, 2:, 1] = tau_gc
    t[:, 2:, 2:] = tau_cc
    t = np.nan_to_num(t, nan=0.0)
    t[:, np.arange(c + 2), np.arange(c + 2)] = 1.0
    p = np.linalg.pinv(t)
    return -p[:, 0, 1] / np.sqrt(np.maximum(p[:, 0, 0] * p[:, 1, 1], 1e-300))


def _percentile_ci(values: np.ndarray, draws: int) -> tuple[float, float]:
    """Percentile 95% interval over the defined resamples (a resample can repeat one trial and make a
    statistic undefined: it is skipped); fewer than half defined gives NaN."""
    values = values[~np.isnan(values)]
    if len(values) < draws // 2 or len(values) == 0:
        return math.nan, math.nan
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


class _RowSet:
    """What every measure scored on the same rows shares: Ψ's groups, the resamples (and their counts), the
    controls' sign matrices and mutual τ per resample, and each target's signs and τ-b denominators."""

    def __init__(self, rows: pd.DataFrame, space: dict, options: CorrelationOptions):
        n = len(rows)
        self.groups = granulated_groups(rows, space, options.tol)
        self.idx = np.random.default_rng(options.seed).integers(0, n, (options.draws, n))
        self.w = _counts(self.idx)
        controls = [c for c in space if rows[c].nunique() > 1]  # as partial_kendall chooses them
        values = _numeric(rows[controls]) if controls else pd.DataFrame(index=rows.index)
        self.controls = [_signs(values[c].to_numpy(float)) for c in controls]
        self.control_den = list(_quads(self.w, [s.s2 for s in self.controls]).T)
        c = len(controls)
        self.tau_cc = np.zeros((options.draws, c, c))
        for a in range(c - 1):
            tau = _tau_with(self.controls[a], self.controls[a + 1 :], self.w, self.control_den[a + 1 :])[1]
            self.tau_cc[:, a, a + 1 :] = tau
            self.tau_cc[:, a + 1 :, a] = tau
        self._targets: dict[str, tuple] = {}

    def variable(self, name: str, x: np.ndarray) -> tuple[_Signs, np.ndarray, np.ndarray]:
        """(signs, τ-b denominators, τ-b with each control) of a target, cached."""
        if name not in self._targets:
            s = _signs(x)
            self._targets[name] = (s, *_tau_with(s, self.controls, self.w, self.control_den))
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
        if len(sub) >= 3 and sub[measure].nunique() >= 2:
            key = tuple(sub.index)
            sub = sub.reset_index(drop=True)
            if key not in cache:
                cache[key] = _RowSet(sub[list(space)], space, options)
            rows.append(_scores(sub, measure, target, space, options, cache[key]))
    table = pd.DataFrame(rows)
    if not table.empty:
        twins = same_ranks(trials, [HEADLINE, *measures] if HEADLINE in measures else measures)
        table["same_ranks_as"] = table["measure"].map(twins).fillna("")
    return multiplicity(table)


def same_ranks(trials: pd.DataFrame, measures: list[str]) -> dict[str, str]:
    """{measure: the first earlier measure of `measures` whose ranks over the trials equal its own}: both
    are missing on the same trials and order the others identically (ties included), so every rank
    statistic of the two with any target is the same number on these trials. A flag only: two measures that
    differ in value can share ranks on one set of trials and not on another, so `multiplicity` counts each
    of them. Measures that are no one's twin are left out."""
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


def multiplicity(table: pd.DataFrame, headline: str = HEADLINE, primary: str = PRIMARY_TARGET) -> pd.DataFrame:
    """Add `role` and `kendall_p_holm`: the p-value to compare with α (ALPHA), adjusted within its family.

    - The confirmatory family is one hypothesis, fixed before the sweep: `headline` against `primary`
      (role `confirmatory`). It is tested alone at α: its `kendall_p_holm` is its own `kendall_p` (Holm over
      a family of one), whatever else was measured.
    - Every other (measure, target) is `exploratory`. The exploratory rows of each target form one family,
      Holm-adjusted on their own (step-down: the i-th smallest of the family's k p-values is rejected at α
      while every smaller one was and p_(i) <= α / (k - i + 1)), so that the chance of any false "predicts"
      among them stays <= α under any dependence between the measures. Every measure with a p-value counts,
      those with the same ranks on these trials (`same_ranks_as`, a flag) included: merging them would make
      the family's size depend on the data, and Holm's guarantee assumes a fixed family. A constant measure
      (no p-value) is not a member of any family.
    So there is one confirmatory test, and one exploratory family per target, each controlled at α on its
    own, not jointly: the confirmatory verdict does not pay for the exploratory measures, and the
    exploratory ones do not borrow from it. Sampling unit: the trial."""
    from tc.core.anisotropy import holm

    if table.empty:
        return table
    table = table.copy()
    if "same_ranks_as" not in table:
        table["same_ranks_as"] = ""
    confirmatory = (table["measure"] == headline) & (table["target"] == primary)
    table["role"] = np.where(confirmatory, "confirmatory", "exploratory")
    table["kendall_p_holm"] = np.nan
    table.loc[confirmatory, "kendall_p_holm"] = table.loc[confirmatory, "kendall_p"]
    explore = table[~confirmatory & table["kendall_p"].notna()]
    for _, family in explore.groupby("target"):
        table.loc[family.index, "kendall_p_holm"] = holm(family["kendall_p"].to_numpy(float))
    return table


def _bootstrap_draws(mu: np.ndarray, g: np.ndarray, target: str, shared: _RowSet) -> dict[str, np.ndarray]:
    """Spearman ρ, τ-b and partial τ (controls: the hyperparameters, as `partial_kendall`) of measure `mu`
    and target column `target` (values `g`) on each of `shared`'s resamples (NaN where undefined).
    Sampling unit: the trial."""
    gs, g_den, tau_gc = shared.variable(target, g)
    _, taus = _tau_with(_signs(mu), [gs, *shared.controls], shared.w, [g_den, *shared.control_den])
    tau_mg, tau_mc = taus[:, 0], taus[:, 1:]
    return {
        "spearman": _spearman_draws(mu, g, shared.idx),
        "kendall": tau_mg,
        "partial_kendall": _partial_draws(tau_mg, tau_mc, tau_gc, shared.tau_cc),
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
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = _percentile_ci(boot[name], options.draws)
    return row


def open_storage(spec: str):
    """An Optuna storage: an SQLAlchemy URL (anything with ://) becomes an RDBStorage with heartbeats (so a
    killed worker's trial is marked FAILED, not left RUNNING); anything else is a journal file path."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in spec:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable enough
                # A trial whose worker stopped beating for grace_period s is FAILED by the next worker that
                # starts a trial, and RetryFailedTrialCallback re-queues its parameters once as a new trial.
                return RDBStorage(
                    spec,
                    heartbeat_interval=30,
                    grace_period=120,
                    heartbeat_stale_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1),
                )
        except Exception as e:  # sqlalchemy raises many kinds: bad dialect, refused connection, bad auth
            raise ValueError(f"storage={spec!r}: cannot open this database: {type(e).__name__}: {e}"[:600]) from e
    path = Path(spec).expanduser()
    if not path.parent.is_dir():
        raise ValueError(f"storage={spec!r}: directory {path.parent} does not exist")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(path)))


def counts_toward_budget(state: str, user_attrs: dict) -> bool:
    """Whether a trial counts toward a sweep's n_trials: finished (COMPLETE, PRUNED), failed for a reason of
    its own (`fail_reason`: divergence, an impossible combination), or still to finish (RUNNING, WAITING).
    Trials that failed because their worker died (killed, heartbeat lost), that crashed on an error that is not
    their own (user attr `tc.error`, see `tc.sweep.study`) or that were surplus do not count, so a restarted sweep
    runs them again and ends with n_trials trials that did not crash."""
    if state in ("COMPLETE", "PRUNED", "RUNNING", "WAITING"):
        return True
    return state == "FAIL" and "fail_reason" in user_attrs


def measure_columns(columns: list[str]) -> list[str]:
    """The generalization measures among a trials table's columns: tc_*, drift_*, aniso_* and gm_* summaries
    (per-cut `_d<cut>` variants, the `_seconds` / `_cost_epochs` costs and the `_seed_sd` spreads left out)."""
    import re

    return [
        c
        for c in columns
        if c.startswith(("tc_", "drift_", "aniso_", "gm_"))
        and not re.search(r"(_d\d+|_seconds|_cost_epochs|_seed_sd)$", c)
    ]
