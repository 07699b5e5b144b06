"""Seed-level confidence intervals, and the verdict each interval supports (docs/REPORT.md's experiments).

Sampling unit: the training seed. An experiment trains the same configuration at seeds 0..n-1 in each arm;
arms that share a seed share the initialisation and the data order, so arms are compared **paired by seed**:
d_s = metric(arm A, seed s) - metric(arm B, seed s), and the interval is Student's t over the n differences,

    mean(d) ± t_{n-1, 1-α/2} · sd(d) / sqrt(n)

(a one-sample interval when there is no second arm). Everything a seed shares inside a run (the same
evaluation samples at every checkpoint, one drift per step) stays inside that seed's one number, so the
seeds are the independent units the t interval assumes.

A verdict is read off the interval, never off a point estimate. `margin` m >= 0 is the smallest effect of
interest (SESOI): a difference smaller than m would not matter, whatever its sign. The verdicts are those of
an equivalence test (TOST) and its one-sided companion at the interval's level, for an interval [L, H] of
a - b:

    claim                        interval                         verdict
    -------------------------    -----------------------------    -------------------------------------
    expected = +1 (a > b)        L > m                            reproduces
                                 H < m                            does not reproduce
                                 otherwise (L <= m <= H)          inconclusive
    expected = -1 (a < b)        H < -m                           reproduces
                                 L > -m                           does not reproduce
                                 otherwise (L <= -m <= H)         inconclusive
    expected = 0 (a != b)        L > m  or  H < -m                differs
                                 -m < L  and  H < m               no difference larger than the margin
                                 otherwise                        inconclusive

In words: a directional claim is that the effect, in the predicted direction, is at least m. It
`reproduces` when the whole interval lies beyond the margin on the predicted side; it `does not reproduce`
when the whole interval lies short of that margin: inside ±m (any effect too small to matter, even one of
the predicted sign), straddling the margin on the other side, or beyond it on the other side; anything that
contains the margin is `inconclusive`. With m = 0 this is the plain sign test of the interval. A claim
without a direction reads `differs` when the interval lies entirely beyond ±m on one side and `no difference
larger than the margin` when it lies entirely inside ±m; an interval that reaches a margin is
`inconclusive` (with m = 0 "no difference" is never read: an interval of positive width is never inside
[0, 0]). Boundaries count as inconclusive. Error rates at a 95% interval: P(reproduces) <= 2.5% when the true
effect is at most m in the predicted direction, P(no difference) <= 2.5% per side when the true |effect| is
at least m (tests/test_replicates.py checks both, and the power, on the report's own path).
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
    0 for "differs"); `margin`: the smallest difference that would matter (the smallest effect of interest
    of `verdict`'s table; 0: any difference matters)."""

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
    """The verdict an interval [low, high] of (a - b) supports for a claim of sign `expected` (+1, -1 or 0)
    with smallest effect of interest `margin` >= 0: the table of the module docstring. NaN bounds (fewer
    than 2 seeds) are inconclusive."""
    if expected not in (-1, 0, 1):
        raise ValueError(f"expected={expected!r}: use +1 (a > b), -1 (a < b) or 0 (a differs from b)")
    if not margin >= 0:
        raise ValueError(f"margin={margin!r}: the smallest effect of interest must be >= 0")
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if low > high:
        raise ValueError(f"interval [{low}, {high}]: low must not exceed high")
    if expected == 0:
        if low > margin or high < -margin:
            return DIFFERS
        return NO_DIFFERENCE if -margin < low and high < margin else INCONCLUSIVE
    # the effect in the predicted direction, x = expected * (a - b), has the interval [lo, hi]
    lo, hi = (low, high) if expected == 1 else (-high, -low)
    if lo > margin:
        return REPRODUCES
    if hi < margin:
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
