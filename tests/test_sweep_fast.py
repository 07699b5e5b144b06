"""ORACLE tests of the vectorised bootstrap and the cached Ψ groups of `tc.stats.rankcorr.correlation_table`: every
value equals the per-resample SciPy loop (and the scalar, pandas-row grouping) that they replaced."""

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks.reference import old_granulated as _old_granulated
from tc.stats import bootstrap, rankcorr

SPACE = {
    "lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
    "weight_decay": {"type": "float", "low": 0.0, "high": 1.0},
    "width": {"type": "categorical", "choices": [8, 16, 32]},
    "batch_size": {"type": "int", "low": 32, "high": 128},
}


def _trials(n, seed, jitter=0.0):
    """A sweep table with repeated settings (ties in every control), tolerance-close floats when `jitter` > 0,
    a measure with ties (`m_tied`) and one that is missing on some rows (`m_nan`)."""
    rng = np.random.default_rng(seed)
    lr = rng.choice([0.01, 0.1, 1.0], n) * np.exp(rng.uniform(-jitter, jitter, n))
    df = pd.DataFrame(
        {
            "lr": lr,
            "weight_decay": rng.choice([0.0, 0.5], n) + rng.uniform(0, jitter, n),
            "width": rng.choice([8, 16, 32], n),
            "batch_size": rng.choice([32, 128], n),
        }
    )
    df["test_acc"] = 0.5 + 0.1 * np.log10(df["lr"]) + rng.normal(0, 0.05, n)
    df["gen_gap"] = rng.random(n)
    df["m"] = df["test_acc"] + rng.normal(0, 0.05, n)
    df["m_tied"] = rng.integers(0, 3, n).astype(float)
    df["m_nan"] = df["m"].where(rng.random(n) > 0.25)
    return df


# ---- the replaced code: Ψ's old grouping from benchmarks/reference.py, the old CI loop here --------------


def _old_ci(values, draws):
    values = [v for v in values if not math.isnan(v)]
    if len(values) < draws // 2:
        return math.nan, math.nan
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def _per_resample(fn, idx):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return np.array([fn(row) for row in idx])


def _assert_same(got, expected):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    ok = ~np.isnan(expected)
    np.testing.assert_allclose(got[ok], expected[ok], rtol=0, atol=1e-12)


def _assert_same_granulated(got, expected):
    """Every field of a `GranulatedKendall` against the reference's (Ψ, ψ_h, groups, pairs, entered): the
    floats to 1e-12 with NaN where the reference has NaN, the counts and the entered list exactly.
    (pytest.approx does not compare nested structures since pytest 9.2, so each field is compared alone.)"""
    psi, per_h, groups, pairs, entered = expected
    assert len(tuple(got)) == 5
    _assert_same(np.array([got.psi]), np.array([psi]))
    assert list(got.per_h) == list(per_h)
    _assert_same(np.array([got.per_h[h] for h in per_h], float), np.array(list(per_h.values()), float))
    assert got.groups == groups and got.pairs == pairs
    assert list(got.entered) == list(entered)


# ---- the bootstrap --------------------------------------------------------------------------------------


def test_bootstrap_draws_equal_scipy_per_resample_with_ties_and_constant_resamples():
    df = _trials(6, seed=1)  # 6 trials: resamples repeat trials, some are constant in a measure or control
    options = rankcorr.CorrelationOptions(draws=250, seed=3)
    shared = rankcorr._RowSet(df[list(SPACE)], SPACE, options)
    idx = shared.idx
    np.testing.assert_array_equal(idx, np.random.default_rng(3).integers(0, 6, (250, 6)))
    undefined = 0
    for measure, target in [("m", "test_acc"), ("m_tied", "gen_gap"), ("m_tied", "test_acc")]:
        mu, g = df[measure].to_numpy(float), df[target].to_numpy(float)
        got = rankcorr._bootstrap_draws(mu, g, target, shared)
        kendall = _per_resample(lambda i, mu=mu, g=g: stats.kendalltau(mu[i], g[i]).statistic, idx)
        spearman = _per_resample(lambda i, mu=mu, g=g: stats.spearmanr(mu[i], g[i]).statistic, idx)
        partial = _per_resample(
            lambda i, m=measure, t=target: rankcorr.partial_kendall(df.iloc[i], m, t, list(SPACE)), idx
        )
        undefined += np.isnan(kendall).sum()
        _assert_same(got["kendall"], kendall)
        _assert_same(got["spearman"], spearman)
        _assert_same(got["partial_kendall"], partial)
    assert undefined > 0  # the undefined-resample case (a constant resample: NaN, skipped) is exercised


def test_kendall_draws_are_nan_when_a_resample_touches_a_missing_value():
    x = np.array([1.0, 2.0, np.nan, 4.0, 3.0])
    y = np.array([2.0, 1.0, 3.0, 5.0, 4.0])
    idx = np.random.default_rng(0).integers(0, 5, (200, 5))
    got = bootstrap.kendall_draws(bootstrap.signs(x), bootstrap.signs(y), bootstrap.counts(idx))
    _assert_same(got, _per_resample(lambda i: stats.kendalltau(x[i], y[i]).statistic, idx))


def _slow_table(df, measures, space, draws, seed):
    """correlation_table as the replaced code computed it: scipy per resample in a Python loop (with every
    draw for partial τ, as the new code uses), Ψ by the scalar grouping, each (measure, target) on its rows."""
    out = []
    for measure, target in itertools.product(measures, ("test_acc", "gen_gap")):
        sub = df[[measure, target, *space]].dropna(subset=[measure, target]).reset_index(drop=True)
        n = len(sub)
        mu, g = sub[measure].to_numpy(float), sub[target].to_numpy(float)
        rng = np.random.default_rng(seed)
        idx = np.stack([rng.integers(0, n, n) for _ in range(draws)])  # the old loop's draws, one at a time
        psi, per_h, counts, pairs, entered = _old_granulated(sub, measure, target, space)
        row = {
            "measure": measure,
            "target": target,
            "n_trials": n,
            "spearman": stats.spearmanr(mu, g).statistic,
            "kendall": stats.kendalltau(mu, g).statistic,
            "kendall_p": stats.kendalltau(mu, g).pvalue,
            "granulated_kendall": psi,
            "psi_entered": ",".join(entered),
            "partial_kendall": rankcorr.partial_kendall(sub, measure, target, list(space)),
        }
        for h in space:
            row[f"psi_{h}"], row[f"n_groups_{h}"], row[f"n_pairs_{h}"] = per_h[h], counts[h], pairs[h]
        stats_of = {
            "spearman": lambda i, mu=mu, g=g: stats.spearmanr(mu[i], g[i]).statistic,
            "kendall": lambda i, mu=mu, g=g: stats.kendalltau(mu[i], g[i]).statistic,
            "partial_kendall": lambda i, s=sub, m=measure, t=target: rankcorr.partial_kendall(
                s.iloc[i], m, t, list(space)
            ),
        }
        for name, fn in stats_of.items():
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = _old_ci(_per_resample(fn, idx), draws)
        out.append(row)
    return pd.DataFrame(out)


def test_correlation_table_equals_the_slow_reference_loop():
    df = _trials(14, seed=2, jitter=0.05)
    measures = ["m", "m_tied", "m_nan"]
    got = rankcorr.correlation_table(df, measures, SPACE, rankcorr.CorrelationOptions(draws=120, seed=5))
    expected = _slow_table(df, measures, SPACE, draws=120, seed=5)
    assert len(got) == len(expected) == 6
    for col in expected.columns:
        if pd.api.types.is_numeric_dtype(expected[col]):
            _assert_same(got[col].to_numpy(float), expected[col].to_numpy(float))
        else:
            assert list(got[col]) == list(expected[col]), col


# ---- Ψ's groups -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_granulated_groups_equal_the_scalar_grouping_with_tolerance_and_dropped_rows(seed):
    # jittered floats make "within tol" non-transitive, so which rows are present changes the groups: the
    # cache in correlation_table is keyed by row set, and must equal recomputation on the dropped table
    df = _trials(24, seed=seed, jitter=0.08)
    for tol in (0.02, 0.1):
        got = rankcorr.granulated_kendall(df, "m", "test_acc", SPACE, tol=tol)
        _assert_same_granulated(got, _old_granulated(df, "m", "test_acc", SPACE, tol))
    options = rankcorr.CorrelationOptions(draws=20, tol=0.1)
    table = rankcorr.correlation_table(df, ["m_nan", "m"], SPACE, options).set_index(["measure", "target"])
    for measure, target in itertools.product(["m_nan", "m"], options.targets):
        sub = df.dropna(subset=[measure, target])
        psi, per_h, counts, pairs, entered = _old_granulated(sub, measure, target, SPACE, 0.1)
        row = table.loc[(measure, target)]
        assert row["n_trials"] == len(sub) and row["psi_entered"] == ",".join(entered)
        assert row["granulated_kendall"] == pytest.approx(psi, nan_ok=True)
        for h in SPACE:
            assert row[f"psi_{h}"] == pytest.approx(per_h[h], nan_ok=True)
            assert (row[f"n_groups_{h}"], row[f"n_pairs_{h}"]) == (counts[h], pairs[h])
