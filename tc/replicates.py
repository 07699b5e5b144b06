"""Seed-level confidence intervals, and the verdict each interval supports (docs/REPORT.md's experiments).

Sampling unit: the training seed. An experiment trains the same configuration at seeds 0..n-1 in each arm;
arms that share a seed share the initialisation and the data order, so arms are compared **paired by seed**:
d_s = metric(arm A, seed s) - metric(arm B, seed s), and the interval is Student's t over the n differences,

    mean(d) ± t_{n-1, 1-α/2} · sd(d) / sqrt(n)

(a one-sample interval when there is no second arm). Everything a seed shares inside a run (the same
evaluation samples at every checkpoint, one drift per step) stays inside that seed's one number, so the
seeds are the independent units the t interval assumes.

A verdict is read off the interval, never off a point estimate:
- `reproduces`: the interval lies entirely on the side of 0 that the claim predicts;
- `does not reproduce`: it lies entirely on the other side, or entirely inside ±`margin` (an effect, if
  any, smaller than the smallest one that would matter);
- `inconclusive`: anything else (it straddles 0 and reaches past the margin).
A claim without a direction (`expected=0`) reads `differs` / `no difference larger than the margin` /
`inconclusive`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

REPRODUCES, REFUTED, INCONCLUSIVE = "reproduces", "does not reproduce", "inconclusive"
DIFFERS, NO_DIFFERENCE = "differs", "no difference larger than the margin"


@dataclass(frozen=True)
class Claim:
    """What an experiment predicts about `metric`: arm `a` minus arm `b` has the sign `expected` (+1, -1, or
    0 for "differs"); `margin`: the smallest difference that would matter (for "does not reproduce")."""

    metric: str
    a: str
    b: str | None = None  # None: a one-sample claim about arm a's values against 0
    expected: int = 1
    margin: float = 0.0
    metric_b: str | None = None  # arm b's metric when it is another one (default: `metric`)
    text: str = ""  # the claim in words, for the report

    def label(self) -> str:
        if self.b is None:
            return f"{self.metric} ({self.a})"
        other = self.metric_b or self.metric
        if other == self.metric:
            return f"{self.metric}: {self.a} − {self.b}"
        return (
            f"{self.metric} − {other} ({self.a})"
            if self.a == self.b
            else f"{self.metric} ({self.a}) − {other} ({self.b})"
        )


@dataclass(frozen=True)
class Effect:
    """A claim's seed-level estimate: the mean of each arm, the mean paired difference with its interval,
    the number of seeds, and the verdict."""

    claim: Claim
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    n: int
    verdict: str


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean over independent units (NaN below 2 units)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return (float(v.mean()) if len(v) else math.nan), math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def verdict(low: float, high: float, expected: int = 1, margin: float = 0.0) -> str:
    """The verdict an interval [low, high] of (a - b) supports for a claim of sign `expected` (module doc)."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    inside_margin = margin > 0 and -margin < low and high < margin
    if expected == 0:
        if low > 0 or high < 0:
            return DIFFERS
        return NO_DIFFERENCE if inside_margin else INCONCLUSIVE
    lo, hi = sorted((expected * low, expected * high))
    if lo > 0:
        return REPRODUCES
    if hi < 0 or inside_margin:
        return REFUTED
    return INCONCLUSIVE


def paired_effect(claim: Claim, a: dict[int, float], b: dict[int, float] | None = None, level: float = 0.95) -> Effect:
    """The claim's `Effect` from per-seed values {seed: value} of arm a (and arm b, paired on the seeds both
    have; a seed missing a value in either arm is left out)."""
    if claim.b is None:
        seeds = sorted(s for s, v in a.items() if not math.isnan(v))
        d = [a[s] for s in seeds]
        mean_b = math.nan
    else:
        if b is None:
            raise ValueError(f"claim {claim.metric}: arm {claim.b!r} has no values")
        seeds = sorted(s for s in set(a) & set(b) if not (math.isnan(a[s]) or math.isnan(b[s])))
        d = [a[s] - b[s] for s in seeds]
        mean_b = float(np.mean([b[s] for s in seeds])) if seeds else math.nan
    mean_a = float(np.mean([a[s] for s in seeds])) if seeds else math.nan
    diff, low, high = t_interval(d, level)
    return Effect(claim, mean_a, mean_b, diff, low, high, len(seeds), verdict(low, high, claim.expected, claim.margin))
