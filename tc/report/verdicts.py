"""The verdicts of the report. Pure: metrics and tables in, `Effect`s, verdicts and tables out.

- Each claim's seed-level paired interval and verdict (`tc.stats.replicates`), with the random-label
  precondition (both arms memorised their labels), as `Effect`s by section and as one table (effects.csv);
  and the same read back from a stored table with the current verdict rules.
- The sweep's confirmatory verdict: does the confirmatory measure (pre-specified:
  `tc.stats.multiplicity.CONFIRMATORY_MEASURE`) predict test accuracy, and how it compares with the best
  baseline; SPEC's bar on point estimates."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from tc.analysis.registry import metric_range
from tc.report.experiments import LEGACY_CLAIMS, NOISE_ARMS, OPTIONAL_SECTIONS, SECTION_CLAIMS
from tc.stats.multiplicity import ALPHA, CONFIRMATORY_MEASURE, PRIMARY_TARGET
from tc.stats.replicates import (
    DIFFERS,
    INCONCLUSIVE,
    NO_DIFFERENCE,
    REFUTED,
    REPRODUCES,
    Bounds,
    Claim,
    Effect,
    difference_range,
    paired_effect,
    verdict,
)

MAX_COST_EPOCHS = 2.0  # the bar: a consistency measure must cost at most this many training epochs per trial
MIN_TAU = 0.5  # the bar: |Kendall τ| with test accuracy at least this
MEMORISED = 0.99  # random labels: every seed's final training accuracy on its labels must reach this
NOT_TESTED = "not tested (a run did not memorise its labels)"
NOT_NOISE_TESTED = "not tested (a run did not reach its training criterion)"
INTERVAL_VERDICTS = (REPRODUCES, REFUTED, INCONCLUSIVE, DIFFERS, NO_DIFFERENCE)


def seed_values(metrics: dict[str, dict[str, float]], arm: str, metric: str) -> dict[int, float]:
    """{seed: metric} over the results named `<arm>/s<seed>` (NaN where the metric was not logged)."""
    out = {}
    for name, m in metrics.items():
        a, _, seed = name.partition("/s")
        if a == arm and seed.isdigit():
            out[int(seed)] = float(m.get(metric, math.nan))
    return out


def claim_range(claim: Claim) -> Bounds:
    """The range of what the claim's interval is of: its metric's (`tc.analysis.registry.metric_range`) for a
    one-arm claim, that of the difference of its two metrics for a paired one."""
    if claim.b is None:
        return metric_range(claim.metric)
    return difference_range(metric_range(claim.metric), metric_range(claim.metric_b or claim.metric))


def effect_of(claim: Claim, metrics: dict[str, dict[str, float]]) -> Effect:
    """The claim's seed-level `Effect` from the experiments' metrics, its interval inside `claim_range`."""
    a = seed_values(metrics, claim.a, claim.metric)
    b = seed_values(metrics, claim.b, claim.metric_b or claim.metric) if claim.b else None
    return paired_effect(claim, a, b, bounds=claim_range(claim))


def memorised(metrics: dict[str, dict[str, float]], arm: str) -> float:
    """The lowest final training accuracy on its own labels (eval mode) over the arm's seeds."""
    values = seed_values(metrics, arm, "train_eval_acc").values()
    return min(values, default=math.nan)


def reached(metrics: dict[str, dict[str, float]], arm: str) -> bool:
    """Whether every seed of the arm reached its training criterion (`converged` = 1; False without seeds)."""
    values = seed_values(metrics, arm, "converged").values()
    return bool(values) and all(v == 1.0 for v in values)


def section_effects(metrics: dict[str, dict[str, float]]) -> dict[str, list[Effect]]:
    """Every claim's `Effect`, by section (SECTION_CLAIMS), with its final verdict: the random-label claims
    are NOT_TESTED unless both arms memorised their labels (>= MEMORISED at every seed), because a control
    that never fitted its labels says nothing about them; the label-noise claims are NOT_NOISE_TESTED unless every
    run of both arms reached its training criterion (`reached`): the arms are compared at the same fit."""
    out = {name: [effect_of(c, metrics) for c in claims] for name, claims in SECTION_CLAIMS.items()}
    if not all(memorised(metrics, arm) >= MEMORISED for arm in ("clean", "random")):
        out["labels"] = [replace(e, verdict=NOT_TESTED) for e in out["labels"]]
    if not all(reached(metrics, arm) for arm in NOISE_ARMS):
        out["noise"] = [replace(e, verdict=NOT_NOISE_TESTED) for e in out["noise"]]
    return out


def effects_from_table(table: pd.DataFrame) -> dict[str, list[Effect]]:
    """`section_effects` rebuilt from a stored effects.csv (`all_effects`): each row is matched to its claim
    by section and label, and its verdict is read again off its interval with the claim's current sign and
    margin (`tc.stats.replicates.verdict`); a stored verdict that is not an interval's (NOT_TESTED: a precondition
    failed) is kept. A section whose current claims have no rows is read with the claims an earlier report made
    (`tc.report.experiments.LEGACY_CLAIMS`: section 1 on tc_excess before tc_gain); a section an earlier report
    did not run (OPTIONAL_SECTIONS, no row at all) is empty. Any other claim of SECTION_CLAIMS without a row:
    ValueError naming the missing ones."""
    out, missing = {}, []
    for section, claims in SECTION_CLAIMS.items():
        rows = table[table["section"] == section]
        if rows.empty and section in OPTIONAL_SECTIONS:
            out[section] = []
            continue
        for version in (claims, *LEGACY_CLAIMS.get(section, ())):
            effects, lacking = _stored_effects(rows, version)
            if not lacking:
                break
        else:  # no version is complete: name what the current one lacks
            effects, lacking = _stored_effects(rows, claims)
        missing += [f"{section}: {label}" for label in lacking]
        out[section] = effects
    if missing:
        raise ValueError(f"effects table has no row for claim(s) {missing}; re-run the report")
    return out


def _stored_effects(rows: pd.DataFrame, claims) -> tuple[list[Effect], list[str]]:
    """(the effects of `claims` read off one section's stored `rows`, the labels of those without a row)."""
    effects, lacking = [], []
    for c in claims:
        match = rows[rows["label"] == c.label()]
        if len(match) > 1:
            match = match[match["claim"] == c.text]
        if len(match) != 1:
            lacking.append(c.label())
            continue
        r = match.iloc[0]
        low, high = float(r["low"]), float(r["high"])
        stored = str(r["verdict"])
        v = verdict(low, high, c.expected, c.margin) if stored in INTERVAL_VERDICTS else stored
        method = r.get("interval", "")  # absent (or empty) in a table stored before intervals kept their range
        method = method if isinstance(method, str) else ""
        n = int(r["n_seeds"])
        effects.append(Effect(c, float(r["mean_a"]), float(r["mean_b"]), float(r["diff"]), low, high, n, v, method))
    return effects, lacking


def all_effects(metrics: dict[str, dict[str, float]], effects: dict[str, list[Effect]] | None = None) -> pd.DataFrame:
    """Every claim of sections 1, 2, 2b, 4 and 5 as one table (report/effects.csv, the forest figure), with each
    claim's interval method (`interval`: `tc.stats.replicates.Interval.method`), sign and margin, and its final
    verdict (`section_effects`, or the `effects` given)."""
    effects = effects if effects is not None else section_effects(metrics)
    rows = []
    for section, items in effects.items():
        for e in items:
            c = e.claim
            rows.append(
                {
                    "section": section,
                    "claim": c.text,
                    "label": c.label(),
                    "mean_a": e.mean_a,
                    "mean_b": e.mean_b,
                    "diff": e.diff,
                    "low": e.low,
                    "high": e.high,
                    "n_seeds": e.n,
                    "interval": e.method,
                    "expected": c.expected,
                    "margin": c.margin,
                    "verdict": e.verdict,
                }
            )
    return pd.DataFrame(rows)


def verdict_changes(old: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    """The claims whose verdict differs between two effects tables, in words (old → new)."""
    key = ["section", "label"]
    both = old[[*key, "verdict"]].merge(new[[*key, "verdict"]], on=key, suffixes=("_old", "_new"))
    changed = both[both["verdict_old"] != both["verdict_new"]]
    return [f"`{r.label}` ({r.section}): {r.verdict_old} → {r.verdict_new}" for r in changed.itertuples()]


def meets_the_bar(tau_tc: float, tau_baseline: float, cost_epochs: float | None) -> bool:
    """The bar for "consistency predicts generalization": |τ| with test accuracy ≥ `MIN_TAU`, above the best
    baseline's |τ|, at a cost of at most `MAX_COST_EPOCHS` training epochs per trial (unknown cost: 0)."""
    return tau_tc >= MIN_TAU and tau_tc > tau_baseline and (cost_epochs or 0) <= MAX_COST_EPOCHS


def abs_interval(low: float, high: float) -> tuple[float, float]:
    """The interval of |τ| given the interval [low, high] of τ (from 0 when it spans 0)."""
    if low <= 0 <= high:
        return 0.0, max(-low, high)
    return min(abs(low), abs(high)), max(abs(low), abs(high))


def is_confirmatory(name: str, row) -> bool:
    """The row's role; a table stored before the roles were renamed says `headline` for the confirmatory one;
    a table without roles: the pre-specified CONFIRMATORY_MEASURE."""
    role = row.get("role", None)
    return role in ("confirmatory", "headline") if isinstance(role, str) else name == CONFIRMATORY_MEASURE


def confirmatory_predicts(h) -> bool:
    """The verdict of the confirmatory measure's row: its τ interval excludes 0 and its p < ALPHA."""
    return bool((h.kendall_ci_low > 0 or h.kendall_ci_high < 0) and h.get("kendall_p_holm", math.nan) < ALPHA)


PREDICTS, NO_EVIDENCE, NOT_MEASURED = "predicts", "no evidence", "no verdict"


def confirmatory_verdict(corr: pd.DataFrame) -> str:
    """The sweep's verdict in one word: PREDICTS, NO_EVIDENCE, or NOT_MEASURED (no row for the confirmatory
    measure)."""
    if corr.empty:
        return NOT_MEASURED
    acc = corr[corr["target"] == PRIMARY_TARGET].set_index("measure")
    return (
        NOT_MEASURED
        if CONFIRMATORY_MEASURE not in acc.index
        else PREDICTS
        if confirmatory_predicts(acc.loc[CONFIRMATORY_MEASURE])
        else NO_EVIDENCE
    )


BETTER, WORSE, NOT_DISTINGUISHABLE = "better than", "worse than", "not distinguishable from"


def best_baseline(acc: pd.DataFrame) -> str | None:
    """The baseline measure (`gm_*`) of largest |τ| in `acc` (the correlations with test accuracy, indexed by
    measure; the first of equals); None when no baseline was measured."""
    gm = [n for n in acc.index if n.startswith("gm_")]
    return max(gm, key=lambda n: abs(acc.loc[n, "kendall"])) if gm else None


def versus_baseline(confirmatory: pd.Series, baseline: pd.Series) -> str:
    """How the confirmatory measure's |τ| interval compares with a baseline's (rows of the correlation table):
    BETTER when it lies entirely above, WORSE when entirely below, else NOT_DISTINGUISHABLE. Non-overlapping
    intervals are the criterion: conservative."""
    h_lo, h_hi = abs_interval(confirmatory.kendall_ci_low, confirmatory.kendall_ci_high)
    b_lo, b_hi = abs_interval(baseline.kendall_ci_low, baseline.kendall_ci_high)
    return BETTER if h_lo > b_hi else WORSE if h_hi < b_lo else NOT_DISTINGUISHABLE
