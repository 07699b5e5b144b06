"""Seed-level confidence intervals, and the verdict each interval supports (docs/REPORT.md's experiments).

Sampling unit: the training seed. An experiment trains the same configuration at seeds 0..n-1 in each arm;
arms that share a seed share the initialisation and the data order, so arms are compared **paired by seed**:
d_s = metric(arm A, seed s) - metric(arm B, seed s), and the interval is Student's t over the n differences,

    mean(d) ± t_{n-1, 1-α/2} · sd(d) / sqrt(n)

(a one-sample interval when there is no second arm). Everything a seed shares inside a run (the same
evaluation samples at every checkpoint, one drift per step) stays inside that seed's one number, so the
seeds are the independent units the t interval assumes.

An interval respects its quantity's range [lo, hi] (`bounded_interval`; accuracy and agreement in [0, 1], κ in
[-1, 1], a difference of two such quantities in [lo_a - hi_b, hi_a - lo_b]: `difference_range`; the ranges
themselves: `tc.analysis.registry.metric_range`). The t interval is computed on a scale where the range is
unbounded and mapped back:

    both ends finite    z = log((x - lo) / (hi - x))    the logit of x's place in [lo, hi]; for [-1, 1] this is
                                                        2 atanh(x), Fisher's z
    only hi finite      z = -log(hi - x)
    only lo finite      z = log(x - lo)
    neither             z = x                           (the plain t interval above)

The map is increasing, so [z_low, z_high] maps to [x_low, x_high] inside (lo, hi); the point estimate stays
the arithmetic mean of the values. A value on a finite end (an accuracy of exactly 1.0) has no z: then, the
stated fallback, the interval is the plain t interval clipped to [lo, hi] (clipping loses no coverage: the
true mean lies in the range). Calibration (tests/test_replicates_ranges.py): on realistic nulls with
continuous seed noise (accuracy near 0.99, tc, κ, tc_excess, paired differences) at 2-5 seeds, coverage of the
mean 0.939-0.954 (±0.015 allowed), and no bound ever outside the range, which the plain t interval leaves in up
to 75% of 2-seed experiments. Its limit: accuracies on few samples tie at 1.0 across seeds, and seeds that tie
carry no spread; then no seed-level interval reaches 95% (0.71 at 2 seeds, 200 samples near 0.995, the plain
t interval alike).

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
from typing import NamedTuple

import numpy as np
from scipy import special, stats

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
    method: str = ""  # how the interval was made (`Interval.method`); "" read back from a table that predates it


Bounds = tuple[float, float]
UNBOUNDED: Bounds = (-math.inf, math.inf)
PLAIN, TRANSFORMED, CLIPPED = "t", "t on a transformed scale", "t clipped to the range"
SNAP = 1e-9  # values within SNAP (relative) outside the range are rounding: snapped onto the range's end


class Interval(NamedTuple):
    """A mean over independent units with its interval, and how the interval was made (PLAIN, TRANSFORMED
    or CLIPPED; "" with fewer than 2 units)."""

    mean: float
    low: float
    high: float
    method: str


def difference_range(a: Bounds, b: Bounds) -> Bounds:
    """The range of x - y for x in range a and y in range b."""
    return a[0] - b[1], a[1] - b[0]


def to_scale(x: np.ndarray, bounds: Bounds) -> np.ndarray:
    """x in the open range (lo, hi) on the unbounded scale of the module docstring (increasing in x)."""
    lo, hi = bounds
    with np.errstate(divide="ignore", invalid="ignore"):
        if math.isfinite(lo) and math.isfinite(hi):
            return np.log((x - lo) / (hi - x))
        if math.isfinite(hi):
            return -np.log(hi - x)
        if math.isfinite(lo):
            return np.log(x - lo)
    return np.asarray(x, dtype=float)


def from_scale(z: np.ndarray, bounds: Bounds) -> np.ndarray:
    """The inverse of `to_scale`: a value in [lo, hi] for every z (±inf to the ends)."""
    lo, hi = bounds
    if math.isfinite(lo) and math.isfinite(hi):
        return lo + (hi - lo) * special.expit(z)
    if math.isfinite(hi):
        return hi - np.exp(-z)
    if math.isfinite(lo):
        return lo + np.exp(z)
    return np.asarray(z, dtype=float)


def bounded_intervals(values: np.ndarray, bounds: Bounds = UNBOUNDED, level: float = 0.95) -> tuple[np.ndarray, ...]:
    """Vectorised `bounded_interval` over the rows of `values` (runs x n units, no NaN, n >= 2): (mean, low,
    high, clipped), each of length runs; `clipped` marks the rows that took the fallback (a value on an end)."""
    v = np.asarray(values, dtype=float)
    lo, hi = bounds
    n = v.shape[1]
    tq = stats.t.ppf(0.5 + level / 2, n - 1)

    def t_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half = tq * x.std(axis=1, ddof=1) / math.sqrt(n)
        return x.mean(axis=1) - half, x.mean(axis=1) + half

    mean = v.mean(axis=1)
    raw_low, raw_high = t_rows(v)
    if not (math.isfinite(lo) or math.isfinite(hi)):
        return mean, raw_low, raw_high, np.zeros(len(v), dtype=bool)
    on_end = ((v == lo) | (v == hi)).any(axis=1)
    # the rows with a value on an end take the fallback; any point inside the range stands in for them on z
    mid = (lo + hi) / 2 if math.isfinite(lo) and math.isfinite(hi) else hi - 1.0 if math.isfinite(hi) else lo + 1.0
    z_low, z_high = t_rows(to_scale(np.where(on_end[:, None], mid, v), bounds))
    low = np.where(on_end, np.clip(raw_low, lo, hi), from_scale(z_low, bounds))
    high = np.where(on_end, np.clip(raw_high, lo, hi), from_scale(z_high, bounds))
    same = v.min(axis=1) == v.max(axis=1)  # no spread: the interval is the value itself, on any scale
    return mean, np.where(same, v[:, 0], low), np.where(same, v[:, 0], high), on_end & ~same


def bounded_interval(values: Sequence[float], bounds: Bounds = UNBOUNDED, level: float = 0.95) -> Interval:
    """The mean over independent units (NaN left out) and its Student-t interval inside the quantity's range
    `bounds` (the module docstring: on the transformed scale, or clipped when a value lies on an end); NaN
    bounds below 2 units. A value outside the range is a range stated wrongly: ValueError."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return Interval(float(v.mean()) if len(v) else math.nan, math.nan, math.nan, "")
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"range {bounds}: its low end must be below its high end")
    tol_lo, tol_hi = SNAP * max(1.0, abs(lo)), SNAP * max(1.0, abs(hi))
    if (v < lo - tol_lo).any() or (v > hi + tol_hi).any():
        raise ValueError(f"values {v.tolist()} leave their quantity's range [{lo}, {hi}]")
    v = np.clip(v, lo, hi)
    mean, low, high, clipped = (a[0] for a in bounded_intervals(v[None, :], bounds, level))
    bounded = math.isfinite(lo) or math.isfinite(hi)
    method = CLIPPED if clipped else TRANSFORMED if bounded and v.min() < v.max() else PLAIN
    return Interval(float(mean), float(low), float(high), method)


def t_interval(values: Sequence[float], level: float = 0.95, bounds: Bounds = UNBOUNDED) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean over independent units (NaN below 2 units), inside
    the quantity's range `bounds` (`bounded_interval`; unbounded: the plain t interval)."""
    mean, low, high, _ = bounded_interval(values, bounds, level)
    return mean, low, high


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


def paired_effect(
    claim: Claim,
    a: dict[int, float],
    b: dict[int, float] | None = None,
    level: float = 0.95,
    bounds: Bounds = UNBOUNDED,
) -> Effect:
    """The claim's `Effect` from per-seed values {seed: value} of arm a (and arm b, paired on the seeds both
    have; a seed missing a value in either arm is left out). `bounds`: the range of what the interval is of,
    the value (one arm) or the difference a - b (`difference_range` of the arms' ranges); the interval stays
    inside it (`bounded_interval`)."""
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
    diff, low, high, method = bounded_interval(d, bounds, level)
    v = verdict(low, high, claim.expected, claim.margin)
    return Effect(claim, mean_a, mean_b, diff, low, high, len(seeds), v, method)
