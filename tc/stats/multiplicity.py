"""Multiplicity: Holm's step-down adjustment, and the sweep's one confirmatory test beside its exploratory families.

A sweep ranks many measures against two targets, so "some measure predicts" is almost sure by chance alone.
The design (docs/sweep.md) fixes one hypothesis before the sweep runs: CONFIRMATORY_MEASURE's Kendall τ with
PRIMARY_TARGET is not 0, tested alone at ALPHA. Every other (measure, target) is exploratory, Holm-adjusted
within its target's family, measures with identical ranks counted once (`multiplicity`). Sampling unit of every
p-value: the trial.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CONFIRMATORY_MEASURE = "tc_kappa_test"  # the pre-specified measure, docs/sweep.md; every other is exploratory
PRIMARY_TARGET = "test_acc"  # the confirmatory hypothesis: CONFIRMATORY_MEASURE's Kendall τ with it is not 0
ALPHA = 0.05  # the level of the confirmatory test and of each exploratory family's family-wise error


def holm(pvalues) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order: the i-th smallest becomes
    max_{j <= i} min(1, (m - j + 1) p_(j)). Reject where adjusted < α controls the family-wise error."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def holm_once(pvalues: pd.Series, twin_of: dict[str, str] | None = None) -> pd.Series:
    """Holm-adjusted p-values of a family indexed by measure, measures with identical ranks counted once:
    `twin_of` maps a measure to the earlier measure whose ranks its own equal (`tc.stats.rankcorr.same_ranks`).
    Each class of twins is one member of the family (its p: the smallest of its members', which are equal when
    the ranks are), and every member of a class gets the class's adjusted p. NaN p-values are no member."""
    twin_of = twin_of or {}
    p = pd.Series(pvalues, dtype=float).dropna()
    key = pd.Series({m: twin_of.get(m) or m for m in p.index}, dtype=object)
    per_class = p.groupby(key).min()
    adjusted = pd.Series(holm(per_class.to_numpy(float)), index=per_class.index)
    return key.map(adjusted).reindex(pd.Series(pvalues).index).astype(float)


def multiplicity(
    table: pd.DataFrame, measure: str = CONFIRMATORY_MEASURE, target: str = PRIMARY_TARGET
) -> pd.DataFrame:
    """Add `role` and `kendall_p_holm` to a table with one row per (measure, target) and its `kendall_p`: the
    p-value to compare with α (ALPHA), adjusted within its family.

    - The confirmatory family is one hypothesis, fixed before the sweep: `measure` against `target` (role
      `confirmatory`). It is tested alone at α: its `kendall_p_holm` is its own `kendall_p` (Holm over a
      family of one), whatever else was measured.
    - Every other (measure, target) is `exploratory`. The exploratory rows of each target form one family,
      Holm-adjusted on their own (step-down: the i-th smallest of the family's k p-values is rejected at α
      while every smaller one was and p_(i) <= α / (k - i + 1)), so that the chance of any false "predicts"
      among them stays <= α under any dependence between the measures. Measures with the same ranks on these
      trials (`same_ranks_as`: a monotone transform of another, such as κ of the agreement it is computed
      from) are one test, the same statistic and p-value, and are counted once (`holm_once`, issue 23): counting
      a test twice would only make the family pay for a copy. A constant measure (no p-value) is not a member
      of any family.
    So there is one confirmatory test, and one exploratory family per target, each controlled at α on its
    own, not jointly: the confirmatory verdict does not pay for the exploratory measures, and the
    exploratory ones do not borrow from it. Sampling unit: the trial."""
    if table.empty:
        return table
    table = table.copy()
    if "same_ranks_as" not in table:
        table["same_ranks_as"] = ""
    confirmatory = (table["measure"] == measure) & (table["target"] == target)
    table["role"] = np.where(confirmatory, "confirmatory", "exploratory")
    table["kendall_p_holm"] = np.nan
    table.loc[confirmatory, "kendall_p_holm"] = table.loc[confirmatory, "kendall_p"]
    explore = table[~confirmatory & table["kendall_p"].notna()]
    for _, family in explore.groupby("target"):
        twins = {m: t for m, t in zip(family["measure"], family["same_ranks_as"].fillna(""), strict=True) if t}
        p = pd.Series(family["kendall_p"].to_numpy(float), index=family["measure"].to_numpy())
        table.loc[family.index, "kendall_p_holm"] = holm_once(p, twins).to_numpy(float)
    return table
