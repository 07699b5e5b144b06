"""The Optuna side of a sweep: samplers re-seeded per trial, pruning, the shared trial budget over workers,
dead workers' trials, study creation. The sweep's statistics are in `tc.sweep`; MLflow goes through
`tc.tracking` only."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from tc import sweep, tracking
from tc.config import SweepConfig


class Pruning:
    """Training callback: report test accuracy per epoch, stop the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_epoch_end(self, step: int, epoch: int, metrics: dict) -> None:
        self.trial.report(metrics["test_acc"], epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"test_acc {metrics['test_acc']:.4f} below the median at epoch {epoch}")


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler re-seeded at every trial from (seed, trial number).

    Trial numbers are unique in a study (the storage assigns them), so a restarted worker and several
    workers started with the same seed never draw from the same random stream, while one worker on a fresh
    study stays reproducible (its trial numbers are 0, 1, 2, ...). A plain `TPESampler(seed)` in each
    process repeats the same draws."""

    def __init__(self, make, seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    @staticmethod
    def trial_seed(seed: int, number: int) -> int:
        return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])

    def before_trial(self, study, trial):
        self._inner = self._make(self.trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_sampler(name: str, space: dict, seed: int) -> optuna.samplers.BaseSampler:
    makers = {
        # constant_liar: running trials of other workers count as bad results, so workers spread out
        "tpe": lambda s: optuna.samplers.TPESampler(seed=s, constant_liar=True),
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
        "grid": lambda s: _grid_sampler(sweep.grid_of(space), seed, s),
    }
    return TrialSeededSampler(makers[name], seed)


def _grid_sampler(grid: dict, seed: int, trial_seed: int) -> optuna.samplers.GridSampler:
    """GridSampler shuffles its grid with `seed` (grid ids must mean the same points in every worker), then
    picks among the unvisited ids with its rng, which gets the per-trial seed so that workers differ."""
    sampler = optuna.samplers.GridSampler(grid, seed=seed)
    sampler._rng.rng.seed(trial_seed % 2**32)
    return sampler


WORKER_ATTR = "tc.worker"  # {"host", "pid", "start"} of the process running the trial


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAILED every RUNNING trial whose worker (recorded in its user attrs) was on this host and is
    dead, with its MLflow run and its worker's sweep run. Journal files have no heartbeat, so without this a
    killed worker's trial stays RUNNING forever. Trials of other hosts are left to RDB heartbeats. When the
    storage has a stale-trial callback (RDB: retry), it runs for these too. Returns their numbers."""
    failed = []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = json.loads(t.user_attrs.get(WORKER_ATTR) or "{}")
        if not worker or tracking.writer_alive(worker) is not False:
            continue
        if t.datetime_start and t.datetime_start.timestamp() > worker.get("at", math.inf):
            continue  # a re-queued trial (RetryFailedTrialCallback) that still carries its dead predecessor's attrs
        reason = f"its worker (pid {worker['pid']}) died; marked FAILED by a later sweep"
        try:
            storage.set_trial_user_attr(t._trial_id, "tc.stale", reason)
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(t.number)
        for key in ("mlflow_run_id", "tc.sweep_run_id"):
            run_id = t.user_attrs.get(key)
            try:
                if run_id and tracking.get_run(run_id).info.status == "RUNNING":
                    tracking.client().set_tag(run_id, "tc.error", reason)
                    tracking.client().set_terminated(run_id, "FAILED")
            except LookupError:  # a run on another tracking server: the trial is failed all the same
                print(f"tc sweep: run {run_id} of dead trial {t.number} is not on this tracking server", flush=True)
        callback = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
        if callback is not None:
            callback(study, storage.get_trial(t._trial_id))
    return failed


def budget_used(study: optuna.Study, below: int | None = None) -> int:
    """Trials that count toward n_trials (`sweep.counts_toward_budget`), among those numbered < `below`."""
    return sum(
        sweep.counts_toward_budget(t.state.name, t.user_attrs)
        for t in study.get_trials(deepcopy=False)
        if below is None or t.number < below
    )


def default_storage(uri: str) -> str:
    """optuna_journal.log next to the MLflow sqlite store at tracking `uri`, or in the working directory."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent / "optuna_journal.log")
    return "optuna_journal.log"


class SurplusTrial(Exception):
    """A trial created after the study reached n_trials; it is FAILED with user attr `tc.surplus`."""


def load_or_create(cfg: SweepConfig, storage, sampler, pruner) -> optuna.Study:
    # Workers starting together race to create the study (and an RDB's tables): retry briefly.
    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=cfg.study_name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                direction="maximize",
                load_if_exists=True,
            )
        except Exception:  # DuplicatedStudyError, or an IntegrityError from concurrent table creation
            if attempt == 4:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def run_worker(study: optuna.Study, func, n_trials: int, timeout: float = 0.0) -> None:
    """Run trials one at a time until the study holds n_trials that count (over all workers; see
    `budget_used`). The budget is checked before each trial and again inside it against the trials numbered
    before it, so workers that start their last trials together do not overshoot: the surplus one is
    FAILED at once and does not count."""
    start = time.monotonic()
    surplus: list[str] = []

    def note_surplus(_study, trial) -> None:
        if "tc.surplus" in trial.user_attrs:
            surplus.append(trial.user_attrs["tc.surplus"])

    while not surplus and budget_used(study) < n_trials:
        left = timeout - (time.monotonic() - start) if timeout else None
        if left is not None and left <= 0:
            break
        study.optimize(
            func, n_trials=1, timeout=left, catch=(SurplusTrial,), callbacks=[note_surplus], gc_after_trial=True
        )
