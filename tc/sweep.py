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
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from tc.config import TrainConfig

# The default space, for the sweep's default proxy (an MLP on digits trained to cross-entropy 0.01; README
# "Sweep"). `train_size` 0 is the whole training set; `default_space(n_train)` drops the choices a data set
# cannot satisfy, so the default space always fits the data (digits has 1438 training images).
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 0.02, "high": 0.2, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-4, "log": True},
    "width": {"type": "categorical", "choices": [32, 64, 128]},
    "label_noise": {"type": "categorical", "choices": [0.0, 0.1]},
    "train_size": {"type": "categorical", "choices": [500, 1000, 2000, 0]},
}

HEADLINE = "tc_kappa_test"  # the pre-specified (confirmatory) measure, README "Sweep"; every other is exploratory


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


def gen_gap(metrics: dict[str, float]) -> float:
    """The generalization gap of a training run: accuracy on the whole training set with its ORIGINAL (clean)
    labels minus `test_acc`, both of the final model in eval mode, both logged by `tc.train.train` at its last
    epoch (`train_acc_clean`, `test_acc`: the whole test set, the same one as test_acc). Clean labels, because
    a noisy label is one the network should get wrong: train accuracy on noisy labels would count memorising
    noise as fitting. Sampling unit: none (a difference of two full-set accuracies). NaN when a run predates
    `train_acc_clean`."""
    if "train_acc_clean" not in metrics or "test_acc" not in metrics:
        return math.nan
    return float(metrics["train_acc_clean"] - metrics["test_acc"])


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


def check_space_values(space: dict[str, dict[str, Any]], fixed: dict[str, Any], where: str = "search space") -> None:
    """Build a TrainConfig (with the sweep's `fixed` settings) for every bound and every choice of every
    parameter, so that a value TrainConfig's own validation refuses (label_noise 1.2, lr -1, a string) is
    reported here, before the first trial, and not as a traceback in the middle of a sweep. Numeric ranges
    are checked at both ends (TrainConfig's ranges are intervals, so the values between pass too)."""
    for name, spec in space.items():
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in values:
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


def _same(a: pd.Series, b: pd.Series, space: dict, tol: float) -> bool:
    for name, spec in space.items():
        x, y = a[name], b[name]
        if spec["type"] == "categorical" or spec["type"] == "int":
            if x != y:
                return False
        else:
            x, y = (math.log(x), math.log(y)) if spec.get("log") else (x, y)
            width = (math.log(spec["high"]) - math.log(spec["low"])) if spec.get("log") else spec["high"] - spec["low"]
            if abs(x - y) > tol * width:
                return False
    return True


class GranulatedKendall(NamedTuple):
    """Ψ and what it rests on. `entered`: the hyperparameters whose ψ_h was averaged into Ψ."""

    psi: float
    per_h: dict[str, float]
    groups: dict[str, int]
    pairs: dict[str, int]
    entered: list[str]


def _differ(a: pd.Series, b: pd.Series, name: str, spec: dict, tol: float) -> bool:
    """Whether two trials differ in hyperparameter `name` (numeric: by more than `tol` of its range)."""
    return not _same(a, b, {name: spec}, tol)


def granulated_kendall(
    trials: pd.DataFrame,
    measure: str,
    target: str,
    space: dict,
    tol: float = 0.1,
    min_groups: int = 2,
    min_hyperparameters: int = 2,
) -> GranulatedKendall:
    """Jiang et al. (2020)'s granulated Kendall coefficient, eq. (4)-(5):

        ψ_h = (1/m_h) Σ_groups τ_group,   Ψ = mean over the h that entered of ψ_h,
        τ_group = Σ_{a≠b in the group, θ_a(h) ≠ θ_b(h)} sign(μ_a - μ_b) sign(g_a - g_b)
                  / #{a≠b in the group, θ_a(h) ≠ θ_b(h)}

    A group for h: trials that match on every other hyperparameter (within `tol` of a numeric range, log
    scale for log ranges; categorical and int exactly) and take >= 2 distinct values of h. Only pairs that
    differ in h count: two trials that repeat a setting (same seed or not) are no evidence about h, and the
    paper's groups hold one model per value of h. Sampling unit: the trial pair within a group.

    ψ_h enters Ψ only when it rests on >= `min_groups` groups (default 2: one group is a single τ, not an
    average over the other hyperparameters' settings); Ψ is NaN when fewer than `min_hyperparameters`
    (default 2) entered, because an "average over hyperparameters" of one ψ_h is just that ψ_h.
    Returns (Ψ, {h: ψ_h}, {h: number of groups}, {h: number of pairs differing in h}, [h that entered])."""
    psi, counts, pairs = {}, {}, {}
    rows = trials.reset_index(drop=True)
    mu_all, g_all = rows[measure].to_numpy(float), rows[target].to_numpy(float)
    for h in space:
        others = {k: v for k, v in space.items() if k != h}
        taus, n_pairs, seen = [], 0, set()
        for i in range(len(rows)):
            if i in seen:
                continue
            members = [j for j in range(len(rows)) if j not in seen and _same(rows.loc[i], rows.loc[j], others, tol)]
            seen.update(members)
            differing = [
                (a, b)
                for a, b in itertools.combinations(members, 2)
                if _differ(rows.loc[a], rows.loc[b], h, space[h], tol)
            ]
            if not differing:
                continue
            s = [np.sign(mu_all[a] - mu_all[b]) * np.sign(g_all[a] - g_all[b]) for a, b in differing]
            taus.append(float(np.mean(s)))
            n_pairs += len(differing)
        counts[h], pairs[h] = len(taus), n_pairs
        psi[h] = float(np.mean(taus)) if taus else math.nan
    entered = [h for h in space if counts[h] >= min_groups and not math.isnan(psi[h])]
    value = float(np.mean([psi[h] for h in entered])) if len(entered) >= max(min_hyperparameters, 1) else math.nan
    return GranulatedKendall(value, psi, counts, pairs, entered)


def partial_kendall(trials: pd.DataFrame, measure: str, target: str, controls: list[str]) -> float:
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


def _bootstrap(fn, n: int, draws: int, seed: int) -> tuple[float, float]:
    """Percentile 95% interval of `fn(indices)` over resamples; resamples where it is undefined are
    skipped (a resample can repeat one trial), and fewer than half defined gives NaN."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            v = fn(rng.integers(0, n, n))
        if not math.isnan(v):
            values.append(v)
    if len(values) < draws // 2:
        return math.nan, math.nan
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def correlation_table(
    trials: pd.DataFrame,
    measures: list[str],
    space: dict,
    targets: tuple[str, ...] = ("test_acc", "gen_gap"),
    draws: int = 1000,
    seed: int = 0,
    tol: float = 0.1,
) -> pd.DataFrame:
    """One row per (measure, target): every coefficient of the module docstring with 95% bootstrap CIs, plus
    `role` (`headline` for the pre-specified HEADLINE, `exploratory` for every other measure) and
    `kendall_p_holm`: Holm's step-down adjustment of `kendall_p` over the family of all measures scored
    against the same target (headline included), so that the chance of any false "predicts" over the ~30
    measures stays <= α (`multiplicity`)."""
    rows = []
    for measure, target in itertools.product(measures, targets):
        sub = trials[[measure, target, *space]].dropna(subset=[measure, target]).reset_index(drop=True)
        if len(sub) >= 3 and sub[measure].nunique() >= 2:
            rows.append(_scores(sub, measure, target, space, draws, seed, tol))
    return multiplicity(pd.DataFrame(rows))


def multiplicity(table: pd.DataFrame, headline: str = HEADLINE) -> pd.DataFrame:
    """Add `role` and `kendall_p_holm` (Holm over the measures of each target; see `correlation_table`)."""
    from tc.anisotropy import holm

    if table.empty:
        return table
    table = table.copy()
    table["role"] = np.where(table["measure"] == headline, "headline", "exploratory")
    table["kendall_p_holm"] = np.nan
    for _, idx in table.groupby("target").groups.items():
        p = table.loc[idx, "kendall_p"].to_numpy(float)
        ok = ~np.isnan(p)  # a constant measure has no p-value; it is not a member of the family
        adjusted = np.full(len(p), np.nan)
        adjusted[ok] = holm(p[ok])
        table.loc[idx, "kendall_p_holm"] = adjusted
    return table


def _scores(sub: pd.DataFrame, measure: str, target: str, space: dict, draws: int, seed: int, tol: float) -> dict:
    n = len(sub)
    mu, g = sub[measure].to_numpy(float), sub[target].to_numpy(float)
    rho, tb = stats.spearmanr(mu, g), stats.kendalltau(mu, g)
    psi, per_h, counts, pairs, entered = granulated_kendall(sub, measure, target, space, tol)
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
    row["spearman_ci_low"], row["spearman_ci_high"] = _bootstrap(
        lambda idx: stats.spearmanr(mu[idx], g[idx]).statistic, n, draws, seed
    )
    row["kendall_ci_low"], row["kendall_ci_high"] = _bootstrap(
        lambda idx: stats.kendalltau(mu[idx], g[idx]).statistic, n, draws, seed
    )
    row["partial_kendall_ci_low"], row["partial_kendall_ci_high"] = _bootstrap(
        lambda idx: partial_kendall(sub.iloc[idx], measure, target, list(space)), n, min(draws, 200), seed
    )
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
    Trials that failed because their worker died (killed, heartbeat lost) or that were surplus do not count,
    so a restarted sweep runs them again and ends with n_trials trials that did not crash."""
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
