"""The trial budget: which trials count toward a sweep's n_trials, and why.

The rule: a trial counts when it is an answer about its configuration, or may still become one.
- COMPLETE (trained and analyzed) and PRUNED (the pruner's answer) count.
- FAILED with `FAIL_REASON_ATTR` counts: the trial failed by its own doing (divergence, a sampled combination
  that cannot be trained, out of device memory; `tc.sweep.trial` has the policy), so rerunning it would fail
  again.
- RUNNING and WAITING (queued: a crashed grid point's rerun, a dead trial's retry) count: they are still to
  finish, and a worker that ignored them would overshoot.
- Every other FAILED trial does not count: one that crashed on an error of tc or of its environment
  (`CRASH_ATTR`), one whose worker died (`tc.sweep.study.fail_dead_trials`), one created after the study was
  full (`SURPLUS_ATTR`). None of them says anything about its configuration, so a restarted sweep runs them
  again and ends with n_trials trials that did not crash.
The budget is the study's, over every worker (`budget_used`); a worker checks it before each trial, and the
trial checks it again when it starts (`refuse_surplus`), so that workers that start their last trials
together do not overshoot.
"""

from __future__ import annotations

import math

import optuna

from tc.config import SweepConfig
from tc.sweep.space import grid_of

FAIL_REASON_ATTR = "fail_reason"  # user attr of a trial that failed by its own doing: why
CRASH_ATTR = "tc.error"  # user attr of a crashed trial: "<exception type>: <message>"
SURPLUS_ATTR = "tc.surplus"  # user attr of a trial created after the study had n_trials that count


class SurplusTrial(Exception):
    """A trial created after the study reached n_trials; it is FAILED with user attr `SURPLUS_ATTR`."""


def counts_toward_budget(state: str, user_attrs: dict) -> bool:
    """Whether a trial in `state` (a TrialState name) with `user_attrs` counts toward n_trials (module doc):
    finished (COMPLETE, PRUNED), failed for a reason of its own (`FAIL_REASON_ATTR`), or still to finish
    (RUNNING, WAITING)."""
    if state in ("COMPLETE", "PRUNED", "RUNNING", "WAITING"):
        return True
    return state == "FAIL" and FAIL_REASON_ATTR in user_attrs


def budget_used(study: optuna.Study, below: int | None = None) -> int:
    """Trials of `study` (every worker's) that count toward n_trials, among those numbered < `below`."""
    return sum(
        counts_toward_budget(t.state.name, t.user_attrs)
        for t in study.get_trials(deepcopy=False)
        if below is None or t.number < below
    )


def refuse_surplus(trial: optuna.Trial, n_trials: int) -> None:
    """Raise `SurplusTrial` (the trial marked `SURPLUS_ATTR`) when the trials numbered before `trial` already
    hold `n_trials` that count: another worker took the last slot between this worker's budget check and this
    trial's creation. Trial numbers are unique in a study, so exactly one of two racing trials is surplus."""
    if budget_used(trial.study, below=trial.number) >= n_trials:
        trial.set_user_attr(SURPLUS_ATTR, "the study had n_trials trials when this one started")
        raise SurplusTrial()


def trial_budget(cfg: SweepConfig, space: dict) -> int:
    """How many trials this worker may run the study up to: `n_trials`, or fewer when a grid has fewer points."""
    if cfg.sampler != "grid":
        return cfg.n_trials
    return min(cfg.n_trials, math.prod(len(v) for v in grid_of(space).values()))
