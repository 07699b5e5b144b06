"""The Optuna side of a sweep: samplers re-seeded per trial, pruning, the shared trial budget over workers,
dead workers' trials, study creation. The sweep's statistics are in `tc.sweep`; MLflow goes through
`tc.tracking` only.

How a trial ends, and what it does to the sweep:
- COMPLETE: trained and analyzed; its value is the test accuracy.
- PRUNED: the pruner stopped it (its run KILLED). Counts toward n_trials.
- FAILED by its own doing (`TRIAL_FAILURES`: `tc.core.train.TrainingFailure`, i.e. divergence or a sampled
  combination that cannot be trained, and running out of device memory, in training or in the analysis, as the
  configuration's size meets the device; CUDA's cached memory is then emptied for the next trial): user attr
  `fail_reason`, its runs (each seed's) FAILED with tag `tc.error`. It counts toward n_trials (rerunning it
  would fail again) and the study goes on.
- CRASHED: any other exception, from sampling its values to its analysis (a bug in tc, a full disk, a lost
  tracking server). That is not an answer about the trial's configuration, so it is never recorded as one: tc
  prints a line and Optuna logs the traceback, the trial is FAILED with user attr `tc.error` (no
  `fail_reason`), its runs (each seed's) FAILED with tag `tc.error`, and it does not count toward n_trials (a
  rerun after the fix runs it again; with sampler=grid its point is queued to run next, as Optuna's
  GridSampler counts a FAILED trial as visited). The worker goes on with the next trial, unless
  `MAX_CONSECUTIVE_CRASHES` trials in a row crashed: an error that repeats is systematic, and the worker stops
  (`SystematicFailure`; the sweep exits 1) instead of spending the study on it.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch
from matplotlib.figure import Figure
from optuna.trial import TrialState

from tc import sweep
from tc.analysis import plots
from tc.analysis.run import analyze_run
from tc.analysis.surrogates import cheap_scores
from tc.config import AnalyzeConfig, SweepConfig, TrainConfig
from tc.core.data import load_data
from tc.core.train import TrainingFailure, UntrainableConfigError
from tc.tracking import analyses, checkpoints, client, ui, writers
from tc.tracking import jobs as runs
from tc.tracking import labels as runinfo


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
        # one scramble seed for all workers (the Sobol index lives in the study); per-trial seed for categoricals
        "qmc": lambda s: sweep.qmc_sampler(seed, independent_seed=s),
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
        if not worker or writers.writer_alive(worker) is not False:
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
                if run_id and client.get_run(run_id).info.status == "RUNNING":
                    client.client().set_tag(run_id, "tc.error", reason)
                    client.client().set_terminated(run_id, "FAILED")
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
    """The study (created or joined), its objective named test_acc for optuna-dashboard."""
    study = _load_or_create(cfg, storage, sampler, pruner)
    with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["test_acc"])  # optuna-dashboard shows "test_acc", not "Objective 0"
    return study


def _load_or_create(cfg: SweepConfig, storage, sampler, pruner) -> optuna.Study:
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


#: Exceptions out of a trial's training that are the trial's own failure (module doc); out of its analysis,
#: only out-of-memory. Out-of-memory is the configuration's size meeting the device: rerunning it on the same
#: device fails the same way.
TRIAL_FAILURES: tuple[type[BaseException], ...] = (TrainingFailure, torch.OutOfMemoryError)
#: crashed trials in a row after which a worker stops (module doc)
MAX_CONSECUTIVE_CRASHES = 3
CRASH_ATTR = "tc.error"  # user attr of a crashed trial: "<exception type>: <message>"


class TrialCrashed(Exception):
    """A trial ended by an unexpected exception (module doc: CRASHED); the worker goes on."""


class SystematicFailure(RuntimeError):
    """`MAX_CONSECUTIVE_CRASHES` trials in a row crashed: the worker stopped."""


def run_worker(
    study: optuna.Study,
    func,
    n_trials: int,
    timeout: float = 0.0,
    max_consecutive_crashes: int = MAX_CONSECUTIVE_CRASHES,
) -> None:
    """Run trials one at a time until the study holds n_trials that count (over all workers; see
    `budget_used`). The budget is checked before each trial and again inside it against the trials numbered
    before it, so workers that start their last trials together do not overshoot: the surplus one is
    FAILED at once and does not count. A queued trial (a crashed grid point's rerun) runs even when the
    budget is full, as it counts already. A crashed trial (`TrialCrashed`) does not stop the worker, but
    `max_consecutive_crashes` in a row raise `SystematicFailure`."""
    start = time.monotonic()
    surplus: list[str] = []
    crashes: list[str] = []  # the crashes since the last trial that did not crash

    def watch(_study, trial) -> None:
        if "tc.surplus" in trial.user_attrs:
            surplus.append(trial.user_attrs["tc.surplus"])
        elif CRASH_ATTR in trial.user_attrs:
            crashes.append(f"trial {trial.number}: {trial.user_attrs[CRASH_ATTR]}")
        else:
            crashes.clear()

    # a queued trial (a crashed grid point's rerun) counts toward the budget already, and runs even then
    while not surplus and (budget_used(study) < n_trials or _queued(study)):
        left = timeout - (time.monotonic() - start) if timeout else None
        if left is not None and left <= 0:
            break
        study.optimize(
            func, n_trials=1, timeout=left, catch=(SurplusTrial, TrialCrashed), callbacks=[watch], gc_after_trial=True
        )
        if len(crashes) >= max_consecutive_crashes:
            raise SystematicFailure(
                f"{len(crashes)} trials in a row crashed, so the error is systematic (a bug or a broken environment, "
                f"not the trials' configurations): this worker stops rather than spend the study on it. Last: "
                f"{crashes[-1]}. The tracebacks are above; crashed trials do not count toward n_trials, so the same "
                "command continues the study once the cause is fixed."
            )


def _queued(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def fixed_settings(cfg: SweepConfig) -> dict:
    """The training settings every trial shares (the search space sets the rest)."""
    return {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "depth": cfg.depth,
        "epochs": cfg.epochs,
        "target_loss": cfg.target_loss,
        "seed": cfg.seed,
    }


def fitted_space(cfg: SweepConfig) -> dict:
    """The search space checked against the data set before any trial: the default space fitted to it, or the
    user's space refused (ValueError) when a value exceeds it."""
    n_train = len(load_data(cfg.dataset).train_y)
    if cfg.search_space is None:
        return sweep.default_space(n_train)
    space = sweep.load_space(cfg.search_space)
    sweep.check_space_fits(space, n_train, cfg.dataset, cfg.search_space)
    return space


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial: hyperparameters, accuracies, gap, every measure, run id."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id:
            continue
        m = client.get_run(run_id).data.metrics
        row = {
            "trial": t.number,
            **t.params,
            "converged": t.user_attrs.get("converged", math.nan),
            "epochs_trained": m.get("epochs_trained"),
            "train_eval_loss": m.get("train_eval_loss"),
            "test_acc": m.get("test_acc"),
            "train_acc_clean": m.get("train_acc_clean"),
            "gen_gap": sweep.gen_gap(m),  # clean labels, the whole test set of test_acc
            "run_id": run_id,
        }
        row.update({k: v for k, v in m.items() if k in sweep.measure_columns(list(m)) or k.endswith("_seed_sd")})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SweepSummary:
    """The sweep run's results: trials.csv (converged trials first, then those that hit the epoch cap, which
    the correlations leave out), correlations.csv, metrics and figures."""

    trials: pd.DataFrame  # converged (or all, without target_loss)
    capped: pd.DataFrame  # reached the epoch cap before target_loss
    table: pd.DataFrame  # `sweep.correlation_table`; empty with fewer than 3 trials
    metrics: dict[str, float]
    figures: dict[str, Figure]


def summarize(cfg: SweepConfig, space: dict, every: pd.DataFrame) -> SweepSummary:
    """Correlations of every measure with test accuracy and the gap over the converged trials of `every`
    (`trials_table`), the sweep run's metrics, and its figures (the headline measure: tc_kappa_test)."""
    trials, capped = sweep.split_converged(every)
    metrics = {"n_trials_converged": len(trials), "n_trials_not_converged": len(capped)}
    if len(trials) < 3:
        return SweepSummary(trials, capped, pd.DataFrame(), metrics, {})
    measures = sweep.measure_columns(list(trials.columns))
    table = sweep.correlation_table(
        trials, measures, space, sweep.CorrelationOptions(draws=cfg.bootstrap, seed=cfg.seed)
    )
    acc = table[table["target"] == "test_acc"]
    metrics |= {f"corr_spearman_{r.measure}": r.spearman for r in acc.itertuples()}
    metrics |= {f"corr_kendall_{r.measure}": r.kendall for r in acc.itertuples()}
    # docs/sweep.md, "Headline and multiplicity": κ is the headline
    headline = next((m for m in ("tc_kappa_test", "tc_test") if m in trials), measures[0])
    figures = {
        "scatter.png": plots.measure_scatter(trials, headline, "test_acc", list(space)),
        "correlation_bars.png": plots.correlation_bars(table),
    }
    return SweepSummary(trials, capped, table, metrics, figures)


def write_summary(summary: SweepSummary, out: Path) -> None:
    """trials.csv, correlations.csv (with 3 trials or more) and the figures, into directory `out`."""
    pd.concat([summary.trials, summary.capped]).to_csv(out / "trials.csv", index=False)
    if len(summary.table):
        summary.table.to_csv(out / "correlations.csv", index=False)
    plots.save_figures(summary.figures, out)


def analyze_trial(cfg: AnalyzeConfig, parent_id: str, second_id: str | None = None) -> None:
    """A sweep trial's analysis, logged into its training run: the full analysis and the cheap surrogates from
    checkpoints loaded once (`tc.analysis.surrogates.cheap_scores`); with `second_id` (the same configuration at
    another seed), that run's analysis against this one and `<measure>_seed_sd` (`tc.sweep.seed_spread`)."""
    ckpts, data, run = checkpoints.load_analysis_inputs(cfg)
    result, last_step = analyze_run(ckpts, data, cfg, run), ckpts.steps[-1]
    analyses.log_analysis_result(cfg, result, last_step, parent_id)
    client.log_metrics(cfg.run_id, cheap_scores(ckpts, data, cfg, run), last_step)
    runs.label_analyzed(cfg.run_id, None, cfg)
    if second_id:
        other = replace(cfg, run_id=second_id, reference_run_id=cfg.run_id)
        result2, last2 = runs.analyze_logged_run(other)
        analyses.log_analysis_result(other, result2, last2, parent_id)
        runs.label_analyzed(second_id, None, other)
        names = sweep.measure_columns(list(result.metrics))
        client.log_metrics(cfg.run_id, sweep.seed_spread(result.metrics, result2.metrics, names), last_step)


def start_trial(trial: optuna.Trial, n_trials: int, parent_id: str) -> None:
    """Record the trial's worker and sweep run; raise `SurplusTrial` when another worker took the last slot
    between this worker's budget check and this trial's creation."""
    trial.set_user_attr(WORKER_ATTR, json.dumps({**writers.writer_identity(), "at": time.time()}))
    trial.set_user_attr("tc.sweep_run_id", parent_id)
    if budget_used(trial.study, below=trial.number) >= n_trials:
        trial.set_user_attr("tc.surplus", "the study had n_trials trials when this one started")
        raise SurplusTrial()


def converged(run_ids: list[str]) -> int:
    """1 when every run (the trial's seeds) reached target_loss before the epoch cap (equal fit), else 0."""
    return int(all(client.get_run(i).data.metrics.get("converged") == 1.0 for i in run_ids))


def analysis_config(cfg: SweepConfig, run_id: str, second_id: str | None) -> AnalyzeConfig:
    """How every trial is analyzed; the second seed (if any) is the reference: gm_disagreement on the test
    inputs, tc_test_crossseed."""
    return AnalyzeConfig(
        run_id=run_id,
        max_samples=cfg.max_samples,
        matrix=cfg.analyze_matrix,
        anisotropy=cfg.anisotropy,
        null_draws=200,
        seed=cfg.seed,
        reference_run_id=second_id,
    )


def trial_config(cfg: SweepConfig, values: dict) -> TrainConfig:
    """The trial's training config: the sweep's fixed settings and the sampled `values`. Each value alone was
    checked before the first trial (`sweep.check_space_values`), so a refusal here is of the combination:
    the trial's own failure (`UntrainableConfigError`)."""
    try:
        return TrainConfig(**{**fixed_settings(cfg), **values})
    except ValueError as e:
        raise UntrainableConfigError(f"the sampled combination cannot be trained: {e}") from e


def trial_tags(cfg: SweepConfig, number: int, parent_id: str) -> dict[str, str]:
    """The tags every run of a trial carries (each seed's), to filter a study's or a trial's runs by."""
    return {"tc.study": cfg.study_name, "tc.trial": str(number), "tc.sweep_run_id": parent_id}


def train_trial(
    cfg: SweepConfig, trial: optuna.Trial, train_cfg: TrainConfig, run_id: str, parent_id: str
) -> str | None:
    """Train the trial's run `run_id`, a child of the sweep run `parent_id`. With seeds=2, also the same
    configuration at seed + 1, as a child run of `run_id` named `trial N seedS` (`runinfo.trial_name`) that
    carries the trial's tags, the training run's tags and description, and `tc.seed_of`: `run_id`; its id
    is returned (else None)."""
    client.log_config(run_id, train_cfg)
    ui.label_train_run(run_id, train_cfg)
    runs.train_into_run(run_id, train_cfg, callbacks=[Pruning(trial)] if cfg.pruner != "none" else [])
    if cfg.seeds != 2:
        return None
    second = replace(train_cfg, seed=train_cfg.seed + 1)
    tags = {**trial_tags(cfg, trial.number, parent_id), "tc.seed_of": run_id}
    with client.nested_run(tags, run_name=runinfo.trial_name(trial.number, second.seed)) as second_id:
        try:
            client.log_config(second_id, second)
            ui.label_train_run(second_id, second)
            runs.train_into_run(second_id, second)
        except Exception as e:  # the run ends FAILED with the block; say why on it too
            client.client().set_tag(second_id, "tc.error", f"{type(e).__name__}: {e}"[:5000])
            raise
    return second_id


def _record_convergence(trial: optuna.Trial, run_id: str, second_id: str | None) -> None:
    """Converged only when every seed reached the criterion (equal fit): a user attribute, and a tag on each
    seed's run."""
    seeds = [i for i in (run_id, second_id) if i]
    ok = converged(seeds)
    trial.set_user_attr("converged", ok)
    for i in seeds:
        client.client().set_tag(i, "tc.converged", str(ok))
    if not ok:
        print(f"tc sweep: trial {trial.number} reached the epoch cap before target_loss", flush=True)


def objective(cfg: SweepConfig, space: dict, parent_id: str) -> Callable[[optuna.Trial], float]:
    """The study's objective: each trial is a nested run of the sweep run `parent_id` that trains the sampled
    configuration (`train_trial`), is analyzed (`analyze_trial`) and returns its test accuracy. A trial that
    fails by its own doing (`TRIAL_FAILURES`; out of memory also in the analysis) returns NaN with its
    `fail_reason`; any other exception, from sampling its values and creating its run to its analysis,
    crashes the trial alone (`TrialCrashed`, recorded with its reason). The module doc has the whole policy."""

    def measure(trial: optuna.Trial, values: dict, run_id: str) -> float:
        try:
            second_id = train_trial(cfg, trial, trial_config(cfg, values), run_id, parent_id)
        except TRIAL_FAILURES as e:
            return _fail(trial, e, run_id)
        if cfg.target_loss > 0:
            _record_convergence(trial, run_id, second_id)
        try:
            analyze_trial(analysis_config(cfg, run_id, second_id), parent_id, second_id)
        except torch.OutOfMemoryError as e:  # as in training: the configuration's size meets the device
            return _fail(trial, e, run_id)
        for key, value in runinfo.trial_attrs(client.get_run(run_id).data.metrics).items():
            trial.set_user_attr(key, value)  # shown beside the objective in optuna-dashboard
        return float(client.get_run(run_id).data.metrics["test_acc"])

    def run_trial(trial: optuna.Trial) -> float:
        start_trial(trial, cfg.n_trials, parent_id)  # a SurplusTrial ends it before anything is sampled
        run_id = None  # until the trial's run exists
        try:  # the guard covers sampling and the run's creation too
            values = sweep.suggest(trial, space)
            tags = trial_tags(cfg, trial.number, parent_id)
            with client.nested_run(tags, runinfo.trial_name(trial.number)) as run_id:
                trial.set_user_attr("mlflow_run_id", run_id)
                try:
                    return measure(trial, values, run_id)
                except optuna.TrialPruned as e:
                    client.end_run(run_id, "KILLED", {"tc.pruned": str(e)})
                    raise
        except optuna.TrialPruned:
            raise
        except Exception as e:  # the block has ended the run FAILED (if it exists); _crash says why on it
            raise _crash(trial, e, run_id) from e

    return run_trial


def _end_trial_runs(run_id: str, tags: dict[str, str]) -> None:
    """FAILED with `tags`: the trial's run and its second seed's (seeds=2), which its own training may have
    left FINISHED, each by id."""
    client.end_run(run_id, "FAILED", tags)
    for other in client.seed_runs(run_id):
        client.end_run(other, "FAILED", tags)


def _fail(trial: optuna.Trial, e: BaseException, run_id: str) -> float:
    """The trial's own failure: its runs FAILED with `tc.error`, then `fail_reason` (a trial whose run could not
    be marked crashes instead, and is not counted); NaN makes the trial FAILED."""
    if isinstance(e, torch.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()  # the failed trial's cached blocks would otherwise crowd the next trial
    reason = f"{e}" if isinstance(e, TrainingFailure) else f"{type(e).__name__}: {e}"
    _end_trial_runs(run_id, {"tc.error": reason[:5000]})
    trial.set_user_attr("fail_reason", reason[:5000])
    print(f"tc sweep: trial {trial.number} failed: {reason}", flush=True)
    return math.nan


def _crash(trial: optuna.Trial, e: Exception, run_id: str | None) -> TrialCrashed:
    """An unexpected exception: one line printed (Optuna logs the traceback of the `TrialCrashed` raised from
    it, with it as the cause), recorded on the trial (`CRASH_ATTR`) and its runs (FAILED, tag `tc.error` with
    the traceback); the `TrialCrashed` to raise, which ends this trial alone."""
    what = f"{type(e).__name__}: {e}"
    print(
        f"tc sweep: trial {trial.number} crashed; this is an error of tc or of its environment, not of the trial's "
        f"configuration, and it does not count toward n_trials: {what}",
        file=sys.stderr,
        flush=True,
    )
    trial.set_user_attr(CRASH_ATTR, what[:5000])
    _rerun_grid_point(trial)
    try:
        tb = "".join(traceback.format_exception(e))
        if run_id:
            _end_trial_runs(run_id, {"tc.error": f"{what}\n\n{tb[-4000:]}"[:5000]})
    except Exception as log_error:  # the tracking server itself may be what failed: the trial is recorded above
        print(f"tc sweep: could not mark trial {trial.number}'s run FAILED: {log_error}", file=sys.stderr)
    return TrialCrashed(f"trial {trial.number}: {what}")


GRID_RERUN_ATTR = "tc.grid_rerun_of"  # user attr of a queued rerun of a crashed grid point: that trial's number


def _rerun_grid_point(trial: optuna.Trial) -> None:
    """Queue a crashed grid trial's point to run next. Optuna's GridSampler counts a FAILED trial as a visited
    point, so without this the point is never measured and the budget goes to a duplicate of another. A rerun
    is an enqueued trial (no `grid_id`), so it carries `GRID_RERUN_ATTR` to be queued again if it crashes too."""
    grid_point = "grid_id" in trial.study._storage.get_trial_system_attrs(trial._trial_id)  # GridSampler's own
    if grid_point or GRID_RERUN_ATTR in trial.user_attrs:
        origin = trial.user_attrs.get(GRID_RERUN_ATTR, trial.number)
        trial.study.enqueue_trial(trial.params, user_attrs={GRID_RERUN_ATTR: origin})


def trial_budget(cfg: SweepConfig, space: dict) -> int:
    """How many trials this worker may run the study up to: `n_trials`, or fewer when a grid has fewer points."""
    if cfg.sampler != "grid":
        return cfg.n_trials
    return min(cfg.n_trials, math.prod(len(v) for v in sweep.grid_of(space).values()))


def print_summary(summary: SweepSummary) -> None:
    """The sweep's closing lines: trials set apart, and the measures most correlated with test accuracy."""
    if len(summary.capped):
        print(f"tc sweep: {len(summary.capped)} trial(s) never reached target_loss: left out of the correlations")
    if len(summary.trials) < 3:
        print(f"tc sweep: {len(summary.trials)} converged trial(s): too few for correlations", flush=True)
        return
    t = summary.table
    best = t[t["target"] == "test_acc"].assign(a=lambda d: d["kendall"].abs()).sort_values("a")
    print(best[["measure", "spearman", "kendall", "granulated_kendall", "n_trials"]].tail(8).to_string(index=False))


def describe_sweep_run(run_id: str, study_name: str, study: optuna.Study) -> None:
    """The sweep run's description: trials finished, and the best trial's headline measures."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = max(done, key=lambda t: t.value, default=None) if done else None
    summary = None
    if best is not None:
        summary = {"trial": best.number, **{k: v for k, v in best.user_attrs.items() if k in runinfo.SWEEP_HEADLINE}}
        summary.update({k: v for k, v in best.params.items()})
    ui.describe_run(run_id, runinfo.describe_sweep(study_name, len(done), summary))
