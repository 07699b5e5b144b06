"""The implementations that tc's fast paths replaced, frozen here as references: the benchmarks time the new
code against them, and the tests (tests/test_sweep_fast.py) use them as oracles. One home: tests may import
benchmarks/, benchmarks never import tests/ (a benchmark runs from a checkout without the test suite).

`old_same` and `old_granulated`: `tc.sweep`'s Ψ grouping before the cached row-set groups (scalar comparisons
over pandas rows, one measure at a time).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def old_same(a, b, space, tol):
    """Whether trials (pandas rows) a and b match on every hyperparameter of `space` (the old scalar rule)."""
    for name, spec in space.items():
        x, y = a[name], b[name]
        if spec["type"] in ("categorical", "int"):
            if x != y:
                return False
        else:
            x, y = (math.log(x), math.log(y)) if spec.get("log") else (x, y)
            width = (math.log(spec["high"]) - math.log(spec["low"])) if spec.get("log") else spec["high"] - spec["low"]
            if abs(x - y) > tol * width:
                return False
    return True


def old_granulated(trials, measure, target, space, tol=0.1, min_groups=2, min_hyperparameters=2):
    """Ψ by pandas rows, one measure at a time (the old `granulated_kendall`)."""
    psi, counts, pairs = {}, {}, {}
    rows = trials.reset_index(drop=True)
    mu, g = rows[measure].to_numpy(float), rows[target].to_numpy(float)
    for h in space:
        others = {k: v for k, v in space.items() if k != h}
        taus, n_pairs, seen = [], 0, set()
        for i in range(len(rows)):
            if i in seen:
                continue
            members = [j for j in range(len(rows)) if j not in seen and old_same(rows.loc[i], rows.loc[j], others, tol)]
            seen.update(members)
            differing = [
                (a, b)
                for a, b in itertools.combinations(members, 2)
                if not old_same(rows.loc[a], rows.loc[b], {h: space[h]}, tol)
            ]
            if differing:
                taus.append(float(np.mean([np.sign(mu[a] - mu[b]) * np.sign(g[a] - g[b]) for a, b in differing])))
                n_pairs += len(differing)
        counts[h], pairs[h] = len(taus), n_pairs
        psi[h] = float(np.mean(taus)) if taus else math.nan
    entered = [h for h in space if counts[h] >= min_groups and not math.isnan(psi[h])]
    value = float(np.mean([psi[h] for h in entered])) if len(entered) >= max(min_hyperparameters, 1) else math.nan
    return value, psi, counts, pairs, entered
