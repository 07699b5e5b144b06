"""Learning speed from a run's training curve: the label-free anchors of Ru et al. (NeurIPS 2021) and Jiang et
al. (ICLR 2020), computed from the per-epoch metrics training logged (numbers in, numbers out; no forward pass).

A curve is a sequence of (step, value) pairs, step = the global optimizer step at which an epoch ended (the
MLflow metric step, `tc.core.train`). A step logged twice (a resumed run re-logs the epoch it resumed in) counts
once, with its last value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Curve = Iterable[tuple[int, float]]  # (optimizer step at an epoch's end, the epoch's value)


def by_step(curve: Curve) -> list[tuple[int, float]]:
    """The curve sorted by step, one value per step (the last one logged)."""
    return sorted(dict((int(s), float(v)) for s, v in curve).items())


def mean_train_loss(curve: Curve) -> float:
    """gm_sum_train_loss = (1/E) Σ_{e=1..E} L_e: the mean over the run's E epochs of the per-epoch training loss
    L_e (`train_loss`: the mean minibatch cross-entropy of epoch e, train mode, the labels training used).

    A mean, not Ru et al.'s sum: their sum runs over a fixed budget of epochs, the same for every architecture,
    so sum and mean rank alike there. tc's runs stop at a loss criterion (`target_loss`) after different numbers
    of epochs; a sum would then grow with the run's length (the slow learners train longer and add more terms)
    and mix training time into the measure. The mean over each run's own epochs stays comparable across runs of
    different lengths. NaN for an empty curve."""
    values = [v for _, v in by_step(curve)]
    return sum(values) / len(values) if values else math.nan


def steps_to_criterion(curve: Curve, target: float) -> int | None:
    """gm_steps_to_criterion: the first step s of the curve whose value is <= `target` (the run's `target_loss`);
    None when no value reaches it (or target <= 0: no criterion).

    Optimizer steps, not epochs: steps are what the run logs its metrics at, and they keep runs of different
    batch sizes on one axis of updates (Jiang et al. 2020's "number of steps to reach cross-entropy 0.1"). Only
    epoch ends are observed, so the count is that of the first epoch end at or below the target. tc applies the
    criterion to `train_eval_loss` (the whole training set in eval mode, `tc.core.train`); on that curve, for a
    run that stopped at its criterion, it is the run's last step."""
    if target <= 0:
        return None
    return next((s for s, v in by_step(curve) if v <= target), None)
