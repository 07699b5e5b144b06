"""Seed-level intervals and verdicts (`tc.stats.replicates`): the interval against scipy; the verdict table of the
module docstring, case by case and against a set-based oracle; and, on the report's own path
(`tc.report.verdicts.effect_of` with the report's claims and margins), the error rates at the null and at the margin
and the power against the noncentral t, under a realistic dependence (arms paired by seed, a shared per-seed
effect much larger than the arm effect). The shared effect is heavy-tailed (t3), but it cancels in the paired
difference; the error-rate tests therefore also draw each arm's own noise heavy-tailed (t4), which does not
cancel. The power test and the exact rate of "no difference" use Gaussian arm noise, where the noncentral t
and the oracle `_no_difference_rate` are exact."""

import math

import numpy as np
import pytest
from scipy import stats

from tc.report import experiments, verdicts
from tc.stats import replicates as R


def test_t_interval_matches_scipy():
    v = [0.91, 0.88, 0.95, 0.9, 0.93]
    mean, lo, hi = R.t_interval(v)
    ref = stats.ttest_1samp(v, 0.0).confidence_interval(0.95)
    assert mean == pytest.approx(np.mean(v)) and lo == pytest.approx(ref.low) and hi == pytest.approx(ref.high)
    assert math.isnan(R.t_interval([0.5])[1])


def test_the_issues_two_examples_honour_the_margin():
    # an interval inside ±margin is no effect of interest, whatever its sign (the old code: "reproduces", "differs")
    assert R.verdict(-0.005, -0.001, expected=-1, margin=0.01) == R.REFUTED
    assert R.verdict(0.001, 0.005, expected=0, margin=0.01) == R.NO_DIFFERENCE
    # the published freezing row: on the predicted side of 0, but reaching into the margin
    assert R.verdict(-0.012259, -0.000261, expected=-1, margin=0.01) == R.INCONCLUSIVE


M = 0.01
# Intervals of a - b against the margins -M, +M, named by where they lie.
INTERVALS = {
    "beyond +m": (0.02, 0.05),
    "straddles +m": (0.005, 0.02),
    "inside, above 0": (0.002, 0.008),
    "inside, around 0": (-0.005, 0.008),
    "inside, below 0": (-0.008, -0.002),
    "straddles -m": (-0.02, -0.005),
    "beyond -m": (-0.05, -0.02),
    "straddles both margins": (-0.02, 0.02),
    "straddles 0 and +m": (-0.005, 0.02),
    "straddles 0 and -m": (-0.02, 0.005),
    "starts at +m": (M, 0.05),
    "ends at -m": (-0.05, -M),
}
P, N, U, D, E = R.REPRODUCES, R.REFUTED, R.INCONCLUSIVE, R.DIFFERS, R.NO_DIFFERENCE
TABLE = {  # interval: verdict at (expected = +1, expected = -1, expected = 0); U: inconclusive
    "beyond +m": (P, N, D),
    "straddles +m": (U, N, U),
    "inside, above 0": (N, N, E),
    "inside, around 0": (N, N, E),
    "inside, below 0": (N, N, E),
    "straddles -m": (N, U, U),
    "beyond -m": (N, P, D),
    "straddles both margins": (U, U, U),
    "straddles 0 and +m": (U, N, U),
    "straddles 0 and -m": (N, U, U),
    "starts at +m": (U, N, U),  # boundaries are inconclusive
    "ends at -m": (N, U, U),
}


@pytest.mark.parametrize("where", list(TABLE))
@pytest.mark.parametrize("k, expected", [(0, 1), (1, -1), (2, 0)])
def test_verdict_table_inside_straddling_and_beyond_the_margin_on_each_side(where, k, expected):
    low, high = INTERVALS[where]
    assert R.verdict(low, high, expected, M) == TABLE[where][k]


@pytest.mark.parametrize(
    ("low", "high", "expected", "want"),
    [
        (0.01, 0.2, 1, P),
        (-0.2, -0.01, 1, N),
        (-0.2, 0.3, 1, U),
        (-0.2, -0.01, -1, P),
        (0.01, 0.2, -1, N),
        (0.01, 0.2, 0, D),
        (-0.2, -0.01, 0, D),
        (-0.001, 0.001, 0, U),  # without a margin nothing is "no difference"
        (math.nan, math.nan, 1, U),
        (math.nan, math.nan, 0, U),
    ],
)
def test_verdict_without_a_margin_is_the_sign_of_the_interval(low, high, expected, want):
    assert R.verdict(low, high, expected, 0.0) == want


def test_verdict_refuses_a_negative_margin_an_unknown_sign_and_a_reversed_interval():
    with pytest.raises(ValueError, match="margin"):
        R.verdict(0.1, 0.2, 1, -0.01)
    with pytest.raises(ValueError, match="expected"):
        R.verdict(0.1, 0.2, 2, 0.01)
    with pytest.raises(ValueError, match="low"):
        R.verdict(0.2, 0.1, 1, 0.01)


def _oracle(low, high, expected, margin):
    """The verdict from sets of effects: `reproduces` iff every effect in the interval is an effect of
    interest in the predicted direction, `does not reproduce` iff none is (for expected = 0: `differs` iff
    every effect is larger than the margin on one same side, `no difference` iff every effect is smaller
    than the margin in size), checked on a dense grid of the interval's points."""
    x = np.linspace(low, high, 2001)
    if expected == 0:
        if (x > margin).all() or (x < -margin).all():
            return D
        return E if (np.abs(x) < margin).all() else U
    interest = expected * x >= margin  # an effect at least the margin, in the predicted direction
    strictly = expected * x > margin
    if strictly.all():
        return P
    return N if not interest.any() else U


def test_verdict_matches_a_set_based_oracle_on_random_intervals():
    rng = np.random.default_rng(0)
    grid = np.round(np.arange(-0.06, 0.0605, 0.005), 4)  # endpoints on a grid that holds ±margin and 0
    for _ in range(3000):
        low, high = np.sort(rng.choice(grid, 2))
        expected, margin = int(rng.choice([-1, 0, 1])), float(rng.choice([0.0, 0.01, 0.02]))
        assert R.verdict(low, high, expected, margin) == _oracle(low, high, expected, margin), (
            low,
            high,
            expected,
            margin,
        )
        if expected:  # mirroring the interval and the claim's direction gives the same verdict
            assert R.verdict(-high, -low, -expected, margin) == R.verdict(low, high, expected, margin)


# ---- error rates and power on the report's path ---------------------------------------------------------

ARM_SD = 0.01


ARM_DF = 4  # the heavy-tailed arm noise of the error-rate tests: Student t with 4 degrees of freedom


def _metrics(rng, claim, n_seeds: int, effect: float, arm_df: int | None = None) -> dict[str, dict[str, float]]:
    """The report's per-result metrics for one experiment of the claim's two arms at n seeds: a per-seed
    effect shared by both arms (same init and data order; scale 0.05, t3 tails: it cancels in the paired
    difference) plus independent arm noise of sd ARM_SD (Gaussian, or Student t with `arm_df` degrees of
    freedom scaled to that sd: heavy tails that do not cancel), and `effect` added to arm a: the dependence
    the report's experiments have."""
    shared = 0.05 * rng.standard_t(3, n_seeds)
    out = {}
    for arm, shift in ((claim.a, effect), (claim.b, 0.0)):
        noise = (
            rng.standard_normal(n_seeds)
            if arm_df is None
            else rng.standard_t(arm_df, n_seeds) / math.sqrt(arm_df / (arm_df - 2))
        )
        values = 0.8 + shared + shift + ARM_SD * noise
        for s, v in enumerate(values):
            out.setdefault(f"{arm}/s{s}", {})[claim.metric] = float(v)
    return out


def _claim(claims, metric, a, b):
    return next(c for c in claims if (c.metric, c.a, c.b) == (metric, a, b))


HEADLINE = _claim(experiments.LABELS, "tc_kappa_test", "clean", "random")  # expected +1, margin 0
FREEZING = _claim(experiments.CONTROLS, "test_acc", "frozen", "base")  # expected -1, margin 0.01
FREEZE_TC = _claim(experiments.CONTROLS, "tc_test", "frozen", "base")  # expected 0, margin 0.01


def _verdicts(claim, effect, runs=2000, seed=0, n_seeds=5, arm_df=None):
    rng = np.random.default_rng(seed)
    return [verdicts.effect_of(claim, _metrics(rng, claim, n_seeds, effect, arm_df)) for _ in range(runs)]


def test_the_report_claims_have_the_margins_these_tests_assume():
    assert (HEADLINE.expected, HEADLINE.margin) == (1, 0.0)
    assert (FREEZING.expected, FREEZING.margin) == (-1, 0.01)
    assert (FREEZE_TC.expected, FREEZE_TC.margin) == (0, 0.01)


def test_no_effect_is_called_reproduces_at_most_alpha_over_two_and_the_interval_covers():
    """The headline claim under the null, heavy-tailed arm noise: 2000 experiments of 5 seeds; the 95%
    interval covers 0 in ~95%, and `reproduces` in ~2.5% (binomial sd 0.0035)."""
    effects = _verdicts(HEADLINE, 0.0, arm_df=ARM_DF)
    cover = np.mean([e.low <= 0 <= e.high for e in effects])
    wrong = np.mean([e.verdict == R.REPRODUCES for e in effects])
    assert 0.935 <= cover <= 0.965, cover
    assert 0.015 <= wrong <= 0.035, wrong
    assert all(e.n == 5 for e in effects)


def test_an_effect_exactly_at_the_margin_is_called_reproduces_at_most_alpha_over_two():
    """The freezing claim (a drop of at least 0.01) when the true drop is exactly 0.01, the least favourable
    point of "no effect of interest": `reproduces` in ~2.5%; and a true drop of 0.005 (inside the margin)
    is called `reproduces` even more rarely. Heavy-tailed arm noise."""
    at = np.mean([e.verdict == R.REPRODUCES for e in _verdicts(FREEZING, -FREEZING.margin, seed=1, arm_df=ARM_DF)])
    inside = np.mean([e.verdict == R.REPRODUCES for e in _verdicts(FREEZING, -0.005, seed=2, arm_df=ARM_DF)])
    assert 0.015 <= at <= 0.035, at
    assert inside <= at


def _no_difference_rate(effect: float, margin: float, n: int = 5, level: float = 0.95) -> float:
    """P(no difference) for Gaussian paired differences N(effect, 2·ARM_SD²) at n seeds, by integration
    (the oracle): the mean ~ N(effect, σ²/n) and the sd s ~ σ·χ_{n-1}/√(n-1) are independent, and the
    verdict is read when mean ± h lies inside ±margin, h = t·s/√n: for each s, P(−m + h < mean < m − h)."""
    from scipy import integrate

    sigma, t = ARM_SD * math.sqrt(2.0), stats.t.ppf(0.5 + level / 2, n - 1)
    se = sigma / math.sqrt(n)

    def inside(s: float) -> float:
        h = t * s / math.sqrt(n)
        if h >= margin:
            return 0.0
        return stats.norm.cdf((margin - h - effect) / se) - stats.norm.cdf((-margin + h - effect) / se)

    chi = stats.chi(n - 1, scale=sigma / math.sqrt(n - 1))
    return integrate.quad(lambda s: inside(s) * chi.pdf(s), 0, chi.ppf(1 - 1e-12), limit=200)[0]


def test_differs_is_read_at_most_alpha_over_two_when_the_true_difference_is_the_margin():
    """The freezing-consistency claim (any difference beyond ±0.01) at its least favourable points, a true
    difference of exactly +margin or −margin: `differs` (the interval entirely beyond ±margin) in ~2.5%;
    heavy-tailed arm noise."""
    for sign, seed in ((1, 4), (-1, 6)):
        effects = _verdicts(FREEZE_TC, sign * FREEZE_TC.margin, seed=seed, arm_df=ARM_DF)
        rate = np.mean([e.verdict == R.DIFFERS for e in effects])
        assert 0.015 <= rate <= 0.035, (sign, rate)


def test_no_difference_is_rarely_read_when_the_difference_is_the_margin():
    """At a true difference of +margin, `no difference` is read at the oracle's rate (below α/2 = 0.025: the
    interval, ~0.03 wide at 5 seeds, rarely fits inside ±0.01, so the test is conservative here), within 4
    binomial sd of it; and never above α/2 + MC."""
    runs = 2000
    found = np.mean([e.verdict == R.NO_DIFFERENCE for e in _verdicts(FREEZE_TC, FREEZE_TC.margin, runs, seed=3)])
    want = _no_difference_rate(FREEZE_TC.margin, FREEZE_TC.margin)
    assert 0.005 <= want <= 0.025, want
    assert abs(found - want) <= 4 * math.sqrt(want * (1 - want) / runs), (found, want)
    assert found <= 0.035, found


def _power(effect: float, margin: float, expected: int, n: int = 5, level: float = 0.95) -> float:
    """P(reproduces) from the noncentral t: the paired differences are N(effect, 2·ARM_SD²) (the shared seed
    effect cancels), and `reproduces` is expected·(mean − expected·margin)/(s/√n) > t_{n-1, (1+level)/2}."""
    sd = ARM_SD * math.sqrt(2.0)
    ncp = expected * (effect - expected * margin) / (sd / math.sqrt(n))
    return float(stats.nct.sf(stats.t.ppf(0.5 + level / 2, n - 1), n - 1, ncp))


@pytest.mark.parametrize(("claim", "effect"), [(FREEZING, -0.04), (HEADLINE, 0.025)])
def test_power_equals_the_noncentral_t(claim, effect):
    runs = 1500
    found = np.mean([e.verdict == R.REPRODUCES for e in _verdicts(claim, effect, runs=runs, seed=5)])
    want = _power(effect, claim.margin, claim.expected)
    assert abs(found - want) <= 4 * math.sqrt(want * (1 - want) / runs), (found, want)
    assert want >= 0.7  # a 4-point drop (3 beyond the margin), or a 2.5-point gain, is found at 5 seeds


def test_unpaired_seeds_are_left_out():
    claim = R.Claim("test_acc", "frozen", "base", expected=-1)
    e = R.paired_effect(claim, {0: 0.7, 1: 0.72, 2: math.nan, 3: 0.71}, {0: 0.8, 1: 0.81, 2: 0.8})
    assert e.n == 2 and e.diff == pytest.approx(-0.095)


def test_one_sample_claim_against_zero():
    e = R.paired_effect(R.Claim("tc_excess_test", "base"), {0: 0.4, 1: 0.5, 2: 0.45})
    assert e.verdict == R.REPRODUCES and e.n == 3 and math.isnan(e.mean_b)
