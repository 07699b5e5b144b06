"""Multiplicity: Holm's step-down adjustment, and the sweep's one confirmatory test beside its exploratory families.

A sweep ranks many measures against two targets, so "some measure predicts" is almost sure by chance alone.
The design (docs/sweep.md) fixes one hypothesis before the sweep runs: CONFIRMATORY_MEASURE's Kendall τ with
PRIMARY_TARGET is not 0, tested alone at ALPHA. Every other (measure, target) is exploratory, Holm-adjusted
within its target's family (`multiplicity`). Sampling unit of every p-value: the trial.
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
      among them stays <= α under any dependence between the measures. Every measure with a p-value counts,
      those with the same ranks on these trials (`same_ranks_as`, a flag) included: merging them would make
      the family's size depend on the data, and Holm's guarantee assumes a fixed family. A constant measure
      (no p-value) is not a member of any family.
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
        table.loc[family.index, "kendall_p_holm"] = holm(family["kendall_p"].to_numpy(float))
    return table
