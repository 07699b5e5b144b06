"""Speed of `tc.stats.rankcorr.correlation_table` (vectorised bootstrap, Ψ groups once per row set) against the loop
it replaced (SciPy per resample, Ψ groups by pandas rows per measure), on one synthetic sweep table.

    python benchmarks/sweep_stats.py                   # 50 trials x 40 measures x 2 targets
    python benchmarks/sweep_stats.py --old-draws 20    # a shorter run of the old loop

The old loop runs at `--old-draws` (default 50; at 1000 it takes many minutes), the new code at the same
number of draws (so the two tables can be compared value by value: they must agree) and at `--draws`
(default 1000, what the report uses). The old loop is kept here as the reference, not in tc/.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time
import warnings

import numpy as np
import pandas as pd
from reference import old_granulated as _old_granulated  # benchmarks/ is the script's directory
from scipy import stats

from tc.stats.rankcorr import CorrelationOptions, correlation_table, partial_kendall
from tc.sweep.space import DEFAULT_SPACE

# ---- the replaced implementation (tc/sweep.py before the vectorised bootstrap) ----------------------------
# Ψ's old grouping lives in benchmarks/reference.py (also the tests' oracle); the old bootstrap loop is here.


def _old_bootstrap(fn, n, draws, seed):
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


def old_correlation_table(trials, measures, space, draws, seed=0, tol=0.1):
    out, ctl = [], list(space)
    for measure, target in itertools.product(measures, ("test_acc", "gen_gap")):
        sub = trials[[measure, target, *space]].dropna(subset=[measure, target]).reset_index(drop=True)
        n = len(sub)
        mu, g = sub[measure].to_numpy(float), sub[target].to_numpy(float)
        psi = _old_granulated(sub, measure, target, space, tol)[0]
        row = {"measure": measure, "target": target, "spearman": stats.spearmanr(mu, g).statistic}
        row |= {"kendall": stats.kendalltau(mu, g).statistic, "granulated_kendall": psi}
        row["partial_kendall"] = partial_kendall(sub, measure, target, ctl)
        row["spearman_ci_low"], row["spearman_ci_high"] = _old_bootstrap(
            lambda i, mu=mu, g=g: stats.spearmanr(mu[i], g[i]).statistic, n, draws, seed
        )
        row["kendall_ci_low"], row["kendall_ci_high"] = _old_bootstrap(
            lambda i, mu=mu, g=g: stats.kendalltau(mu[i], g[i]).statistic, n, draws, seed
        )
        row["partial_kendall_ci_low"], row["partial_kendall_ci_high"] = _old_bootstrap(
            lambda i, s=sub, m=measure, t=target: partial_kendall(s.iloc[i], m, t, ctl), n, min(draws, 200), seed
        )
        out.append(row)
    return pd.DataFrame(out)


# ---- the benchmark ----------------------------------------------------------------------------------------


def synthetic_trials(n_trials: int, n_measures: int, seed: int = 0) -> pd.DataFrame:
    """A sweep over DEFAULT_SPACE: categorical choices drawn from the space, log-uniform floats, targets
    that depend on lr and width, measures that track test_acc with noise (a few with ties, a few with NaN)."""
    rng = np.random.default_rng(seed)
    cols = {}
    for name, spec in DEFAULT_SPACE.items():
        if spec["type"] == "categorical":
            cols[name] = rng.choice(spec["choices"], n_trials)
        else:
            cols[name] = np.exp(rng.uniform(math.log(spec["low"]), math.log(spec["high"]), n_trials))
    df = pd.DataFrame(cols)
    df["test_acc"] = 0.9 + 0.02 * np.log(df["lr"]) + 1e-4 * df["width"] + rng.normal(0, 0.01, n_trials)
    df["gen_gap"] = 0.05 - 0.01 * np.log(df["lr"]) + rng.normal(0, 0.01, n_trials)
    for k in range(n_measures):
        m = df["test_acc"] + rng.normal(0, 0.01 * (1 + k % 5), n_trials)
        if k % 7 == 3:
            m = np.round(m, 2)  # ties
        if k % 9 == 4:
            m[rng.random(n_trials) < 0.1] = np.nan  # a measure some trials lack
        df[f"tc_m{k}"] = m
    return df


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--measures", type=int, default=40)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--old-draws", type=int, default=50)
    args = p.parse_args(argv)
    df = synthetic_trials(args.trials, args.measures)
    measures = [c for c in df if c.startswith("tc_m")]
    space = DEFAULT_SPACE
    print(
        f"{args.trials} trials x {len(measures)} measures x 2 targets, {len(space)} hyperparameters; "
        f"{os.cpu_count()} CPUs"
    )
    old, t_old = _timed(lambda: old_correlation_table(df, measures, space, args.old_draws))
    opts = CorrelationOptions(draws=args.old_draws)
    same, t_same = _timed(lambda: correlation_table(df, measures, space, opts))
    full, t_full = _timed(lambda: correlation_table(df, measures, space, CorrelationOptions(draws=args.draws)))
    diff = 0.0
    for c in old.columns.drop(["measure", "target"]):
        a, b = old[c].to_numpy(float), same[c].to_numpy(float)
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            raise AssertionError(f"{c}: the old and new tables differ in which values are undefined")
        ok = ~np.isnan(a)
        diff = max(diff, float(np.max(np.abs(a[ok] - b[ok]), initial=0.0)))
    print(f"old loop, draws={args.old_draws}: {t_old:.1f} s")
    print(
        f"new, draws={args.old_draws}: {t_same:.2f} s (speed-up {t_old / t_same:.0f}x; largest difference "
        f"from the old table {diff:.1e})"
    )
    print(f"new, draws={args.draws}: {t_full:.2f} s ({len(full)} rows)")


if __name__ == "__main__":
    main()
