"""How many converged trials an environment needs for τ's 95% bootstrap interval to be at most ±0.15 wide.

    python benchmarks/env_sizing.py                 # simulated at τ 0.3, 0.5, 0.7; checked on the report's trials
    python benchmarks/env_sizing.py --reps 100 --taus 0.5

The interval is the sweep's own: the percentile 95% interval of τ-b over `draws` bootstrap resamples of the trials
(`tc.stats.bootstrap`, as `tc.stats.rankcorr.correlation_table` computes it; sampling unit: the trial). Simulated
trials: a measure and test accuracy drawn bivariate normal with correlation r = sin(πτ/2), which gives Kendall's
τ = τ (Greiner's relation), so that the only input is the τ the environment is expected to have. `halfwidth`
is the median over `reps` simulated sweeps of the interval's half-width (high - low) / 2; `trials_needed` the
fewest trials on a grid whose median half-width is <= the goal. The check on real trials: the converged trials
of tests/fixtures/legacy_report/report/trials.csv (the 50 digits trials of the report of 2026-11-29, docs/ at
commit 4eb747d), all of them and those with clean labels, the
half-width of `tc_kappa_test` against test accuracy at their own size, projected to n trials as
hw(N)·sqrt(N / n) (a rank correlation's standard error falls as 1/sqrt(n)), beside the simulated one.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's tc
    sys.path.insert(0, str(ROOT))

from tc.stats import bootstrap  # noqa: E402

GOAL = 0.15  # issue 23: τ's 95% interval at most ±0.15 wide


def interval(mu: np.ndarray, g: np.ndarray, draws: int, rng: np.random.Generator) -> tuple[float, float]:
    """The sweep's percentile 95% bootstrap interval of τ-b(mu, g) (trials resampled with replacement)."""
    n = len(mu)
    w = bootstrap.counts(rng.integers(0, n, (draws, n)))
    return bootstrap.percentile_ci(bootstrap.kendall_draws(bootstrap.signs(mu), bootstrap.signs(g), w), draws)


def simulated(n: int, tau: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n trials (measure, target) bivariate normal with Kendall's τ = `tau`: correlation sin(πτ/2)."""
    r = math.sin(math.pi * tau / 2)
    z = rng.standard_normal((n, 2))
    return z[:, 0], r * z[:, 0] + math.sqrt(1 - r * r) * z[:, 1]


def halfwidth(n: int, tau: float, reps: int = 200, draws: int = 1000, seed: int = 0) -> float:
    """Median over `reps` simulated sweeps of n trials of the bootstrap interval's half-width."""
    rng = np.random.default_rng(seed)
    widths = []
    for _ in range(reps):
        low, high = interval(*simulated(n, tau, rng), draws, rng)
        widths.append((high - low) / 2)
    return float(np.median(widths))


def sampling_halfwidth(n: int, tau: float, reps: int = 2000, seed: int = 0) -> float:
    """The brute-force counterpart: 1.96 x the standard deviation of τ-b over `reps` independent sweeps of n
    trials (what a bootstrap interval's half-width estimates)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    taus = [stats.kendalltau(*simulated(n, tau, rng)).statistic for _ in range(reps)]
    return 1.96 * float(np.std(taus, ddof=1))


def trials_needed(tau: float, goal: float = GOAL, grid: range = range(30, 201, 10), **kw) -> int | None:
    """The fewest trials on `grid` whose median half-width (`halfwidth`) is <= `goal`; None if none is."""
    for n in grid:
        if halfwidth(n, tau, **kw) <= goal:
            return n
    return None


def real_check(path: Path, measure: str, draws: int, sizes: list[int]) -> None:
    """τ, its interval and half-width on the real trials at `path` (converged, all and clean labels), and that
    half-width projected to `sizes`."""
    import pandas as pd

    trials = pd.read_csv(path)
    trials = trials[trials["converged"] == 1]
    subsets = {"all converged": trials}
    if "label_noise" in trials:
        subsets["clean labels"] = trials[trials["label_noise"] == 0]
    for name, sub in subsets.items():
        sub = sub.dropna(subset=[measure, "test_acc"])
        mu, g = sub[measure].to_numpy(float), sub["test_acc"].to_numpy(float)
        from scipy import stats

        tau = stats.kendalltau(mu, g).statistic
        low, high = interval(mu, g, draws, np.random.default_rng(0))
        hw, n = (high - low) / 2, len(sub)
        projected = ", ".join(f"{m}: ±{hw * math.sqrt(n / m):.3f}" for m in sizes)
        print(f"real, {name} ({n} trials): {measure} τ {tau:.2f} [{low:.2f}, {high:.2f}] = ±{hw:.3f}; at {projected}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--taus", default="0.3,0.5,0.7")
    p.add_argument("--sizes", default="30,40,50,60,70,80,100,120")
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--draws", type=int, default=1000, help="bootstrap resamples (the report's: 1000)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"median 95% half-width of τ-b over {args.reps} simulated sweeps ({args.draws} resamples each)")
    print("| τ | " + " | ".join(f"n={n}" for n in sizes) + f" | fewest with ≤ ±{GOAL} |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for tau in (float(t) for t in args.taus.split(",")):
        widths = [halfwidth(n, tau, args.reps, args.draws) for n in sizes]
        fewest = next((n for n, w in zip(sizes, widths, strict=True) if w <= GOAL), None)
        print(f"| {tau} | " + " | ".join(f"±{w:.3f}" for w in widths) + f" | {fewest or '> ' + str(sizes[-1])} |")
    real_check(ROOT / "tests/fixtures/legacy_report/report/trials.csv", "tc_kappa_test", args.draws, sizes)


if __name__ == "__main__":
    main()
