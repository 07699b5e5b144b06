"""One worker of a sweep, end to end: every check before any run exists (`prepare`), then, inside the worker's
sweep run, join the study, fail dead workers' trials, run trials until the study's budget is used, and
summarize every trial finished so far (`run_sweep`). The entry point owns the sweep run (it starts it, and
logs the files and metrics `run_sweep` returns); `entrypoints/sweep.py` is the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from tc.config import SweepConfig
from tc.stats.multiplicity import CONFIRMATORY_MEASURE
from tc.sweep.budget import budget_used, trial_budget
from tc.sweep.console import TrialLines
from tc.sweep.outcomes import trial_outcomes
from tc.sweep.space import checked_space
from tc.sweep.study import (
    SystematicFailure,
    default_storage,
    fail_dead_trials,
    load_or_create,
    make_pruner,
    make_sampler,
    open_storage,
    run_worker,
)
from tc.sweep.summary import SweepSummary, describe_sweep_run, summarize, trials_table
from tc.sweep.trial import objective
from tc.tracking import labels, ui


@dataclass(frozen=True)
class SweepSetup:
    """A sweep worker's checked inputs: its config, its search space and the study's storage."""

    cfg: SweepConfig
    space: dict[str, dict[str, Any]]
    where: str  # the storage as given (an SQLAlchemy URL or a journal file), tagged on the sweep run
    storage: optuna.storages.BaseStorage


@dataclass(frozen=True)
class SweepOutcome:
    """What a worker's sweep run gets: the summary of every trial finished so far, and why the worker stopped
    early (`SystematicFailure`), if it did."""

    summary: SweepSummary
    stopped: SystematicFailure | None


def prepare(cfg: SweepConfig, tracking_uri: str) -> SweepSetup:
    """The search space checked against the data set and TrainConfig (`tc.sweep.space.checked_space`) and the
    storage opened (default: a journal file next to the sqlite tracking store at `tracking_uri`), before any
    run or trial exists. Raises ValueError (or `tc.core.data.DatasetNotFoundError`) naming what is wrong."""
    space = checked_space(cfg)
    where = cfg.storage or default_storage(tracking_uri)
    return SweepSetup(cfg, space, where, open_storage(where))


def run_sweep(setup: SweepSetup, parent_id: str) -> SweepOutcome:
    """Run this worker's trials as nested runs of its sweep run `parent_id` until the study holds n_trials
    that count (`tc.sweep.budget`), printing one line per trial (`tc.sweep.console.TrialLines`), then summarize
    the study and describe the sweep run. A worker stopped by repeated crashes still summarizes what finished
    (`SweepOutcome.stopped`)."""
    cfg, space = setup.cfg, setup.space
    sampler = make_sampler(cfg.sampler, space, cfg.seed)
    study = load_or_create(cfg, setup.storage, sampler, make_pruner(cfg.pruner))
    ui.name_run(parent_id, labels.sweep_name(cfg.study_name))
    if stale := fail_dead_trials(study):
        print(f"tc sweep: trials {stale} of dead workers marked FAILED; they do not count", flush=True)
    print(
        f"tc sweep: study {cfg.study_name!r} has {budget_used(study)} trial(s) that count; this worker "
        f"runs until {cfg.n_trials} in all",
        flush=True,
    )
    stopped = None
    budget = trial_budget(cfg, space)
    lines = TrialLines(space, budget, CONFIRMATORY_MEASURE)  # one line per trial, with the time left
    try:
        run_worker(study, objective(cfg, space, parent_id), budget, cfg.timeout, callbacks=(lines,))
    except SystematicFailure as e:  # the trials finished so far are still summarized
        stopped = e
    summary = summarize(cfg, space, trials_table(study), trial_outcomes(study))
    describe_sweep_run(parent_id, cfg.study_name, study, summary)
    return SweepOutcome(summary, stopped)
