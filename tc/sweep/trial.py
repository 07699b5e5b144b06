"""One sweep trial: train the sampled configuration (each seed) into nested MLflow runs, analyze it, return its
test accuracy; and what happens when it fails.

How a trial ends, and what it does to the sweep (`tc.sweep.budget` has the counting rule):
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
  (`tc.sweep.study.SystematicFailure`, raised by `tc.sweep.study.run_worker`; the sweep exits 1) instead of
  spending the study on it. A trial the tracking server refuses (401/403: `tc.tracking.access`) is recorded the
  same way (user attr `tc.error`, not counted, a grid point queued), but the worker stops at once with tc's one
  line (exit 1): every trial after it would be refused too.

A trial prints nothing of its own: what its training and analysis print (per-epoch progress and the like) is
kept in its run's `TRIAL_OUTPUT` artifact, and the worker prints one line per trial (`tc.sweep.console`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import optuna
import torch

from tc.analysis.result import AnalysisResult
from tc.analysis.surrogates import cheap_scores
from tc.config import AnalyzeConfig, SweepConfig, TrainConfig
from tc.core.train import TrainingFailure, UntrainableConfigError
from tc.sweep.budget import CRASH_ATTR, FAIL_REASON_ATTR, refuse_surplus
from tc.sweep.console import ProgressFilter
from tc.sweep.outcomes import PRUNED_ATTR, WARNINGS_ATTR
from tc.sweep.space import fixed_settings, suggest
from tc.sweep.study import WORKER_ATTR, TrialCrashed
from tc.sweep.summary import measure_columns
from tc.tracking import client, jobs, labels, writers
from tc.tracking.access import refusal
from tc.tracking.checkpoints import AnalysisInputs
from tc.tracking.secrets import mask_text


class Pruning:
    """Training callback: report test accuracy at each epoch that has one (every `test_every` epochs and the last:
    `tc.core.train`; every trial of a sweep shares `test_every`, so the pruner compares them at the same epochs),
    stop the trial when the pruner says so. `SweepConfig` refuses a pruner with test_every = 0."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_epoch_end(self, step: int, epoch: int, metrics: dict) -> None:
        if "test_acc" not in metrics:
            return
        self.trial.report(metrics["test_acc"], epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"test_acc {metrics['test_acc']:.4f} below the median at epoch {epoch}")


#: Exceptions out of a trial's training that are the trial's own failure (module doc); out of its analysis,
#: only out-of-memory. Out-of-memory is the configuration's size meeting the device: rerunning it on the same
#: device fails the same way.
TRIAL_FAILURES: tuple[type[BaseException], ...] = (TrainingFailure, torch.OutOfMemoryError)


def analysis_config(cfg: SweepConfig, run_id: str, second_id: str | None) -> AnalyzeConfig:
    """How every trial is analyzed; the second seed (if any) is the reference: gm_disagreement on the test
    inputs, tc_test_crossseed. By `cfg.analysis`:

    - core (the default) computes the correlation table of the sweep's own question (does temporal consistency
      predict test accuracy, beside cheap baselines?) and nothing else: the consistency scores on the test split
      only, no controls (tc_test_crossseed), and the measures without `tc.analysis.registry.COSTLY_MEASURES`
      (gm_sharpness, tc_mmd); the second seed serves as the reference only, not analyzed (`analyzed_seed`).
    - measures computes every measure the report's sweeps rank: all three splits, the controls, every gm_*.
    - full is the analyze entry point's analysis at `cfg.analyze_matrix`, written back with its files.

    Core and measures write back the metrics alone (`outputs=measures`: no tables or figures) and compute the final
    column of each matrix (`matrix=final`: the lag curves and half-lives are no measure of the correlation table);
    every measure they share has one value in all three (`tests/test_sweep_scope.py`)."""
    core = cfg.analysis == "core"
    return AnalyzeConfig(
        run_id=run_id,
        splits="test" if core else AnalyzeConfig.splits,
        max_samples=cfg.max_samples,
        matrix=cfg.analyze_matrix if cfg.analysis == "full" else "final",
        outputs="full" if cfg.analysis == "full" else "measures",
        anisotropy=cfg.anisotropy,
        costly_measures=not core,
        controls=not core,
        null_draws=200,
        seed=cfg.seed,
        reference_run_id=second_id,
    )


def analyzed_seed(cfg: SweepConfig, second_id: str | None) -> str | None:
    """The second seed's run when the trial analyzes it too (`analyze_trial`'s `second_id`), for the
    `<measure>_seed_sd` spreads: under analysis=measures or full. Under core, None: no correlation reads a spread,
    and the second seed's last checkpoint, loaded as the reference run (`analysis_config`), still gives
    gm_disagreement and gm_js_disagreement; analyzing the whole second run would double the trial's analysis."""
    return second_id if cfg.analysis != "core" else None


def trial_config(cfg: SweepConfig, values: dict) -> TrainConfig:
    """The trial's training config: the sweep's fixed settings and the sampled `values`. Each value alone was
    checked before the first trial (`tc.sweep.space.check_space_values`), so a refusal here is of the combination:
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
    """Train the trial's run `run_id`, a child of the sweep run `parent_id`, by the train job
    (`tc.tracking.jobs.train_job`: config, labels, training, description). With seeds=2, also the same
    configuration at seed + 1, as a child run of `run_id` named `trial N seedS` (`labels.trial_name`) that
    carries the trial's tags and `tc.seed_of`: `run_id`; its id is returned (else None)."""
    jobs.train_job(train_cfg, run_id=run_id, callbacks=[Pruning(trial)] if cfg.pruner != "none" else [])
    if cfg.seeds != 2:
        return None
    second = replace(train_cfg, seed=train_cfg.seed + 1)
    tags = {**trial_tags(cfg, trial.number, parent_id), "tc.seed_of": run_id}
    return jobs.train_job(second, tags=tags, run_name=labels.trial_name(trial.number, second.seed))


def analyze_trial(cfg: AnalyzeConfig, parent_id: str, second_id: str | None = None) -> list[str]:
    """A sweep trial's analysis by the analyze job (`tc.tracking.jobs.analyze_job`: precision fallback, status
    check, analysis, atomic write-back, labels), recorded as made by the sweep run `parent_id`. With
    `second_id` (the same configuration at another seed), that run is analyzed first, against this one. This
    run's analysis then carries, beside its own metrics and from the checkpoints it loaded once, the cheap
    surrogates (`tc.analysis.surrogates.cheap_scores`) and, with a second seed, `<measure>_seed_sd`
    (`seed_spread`): written back with it, so they land in its summary.json too. This run is still open (its
    trial's), hence `trained_here`. Returns the analyses' warnings (where they used less than asked, and the like),
    each printed as the analyze command prints it (into the trial's output); the trial's line counts them."""
    other, warned = None, []
    if second_id:
        second = replace(cfg, run_id=second_id, reference_run_id=cfg.run_id)
        done = jobs.analyze_job(second, own_run=False, recorded_as=parent_id)
        other = done.result.metrics
        warned += [f"seed run {second_id}: {w}" for w in done.result.summary.get("warnings", [])]

    def extras(run_cfg: AnalyzeConfig, inputs: AnalysisInputs, result: AnalysisResult) -> dict[str, float]:
        scores = cheap_scores(inputs.checkpoints, inputs.data, run_cfg, inputs.run)
        if other is not None:
            scores |= seed_spread(result.metrics, other, measure_columns(list(result.metrics)))
        return scores

    done = jobs.analyze_job(cfg, own_run=False, recorded_as=parent_id, trained_here=True, extra_metrics=extras)
    warned = [*done.result.summary.get("warnings", []), *warned]
    for w in warned:
        print(f"tc analyze: warning: {w}", flush=True)
    return warned


def seed_spread(first: dict[str, float], second: dict[str, float], measures: list[str]) -> dict[str, float]:
    """`<measure>_seed_sd`: the sample standard deviation |a - b| / sqrt(2) of each measure over the two seeds
    of one configuration (ddof = 1; sampling unit: the training seed), for the measures both seeds have."""
    out = {}
    for m in measures:
        a, b = first.get(m), second.get(m)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
            out[f"{m}_seed_sd"] = abs(a - b) / math.sqrt(2.0)
    return out


def converged(run_ids: list[str]) -> int:
    """1 when every run (the trial's seeds) reached target_loss before the epoch cap (equal fit), else 0."""
    return int(all(client.get_run(i).data.metrics.get("converged") == 1.0 for i in run_ids))


def _record_convergence(trial: optuna.Trial, run_id: str, second_id: str | None) -> None:
    """Converged only when every seed reached the criterion (equal fit): a user attribute, and a tag on each
    seed's run."""
    seeds = [i for i in (run_id, second_id) if i]
    ok = converged(seeds)
    trial.set_user_attr("converged", ok)  # the trial's line says it (`tc.sweep.console.trial_line`)
    for i in seeds:
        client.client().set_tag(i, "tc.converged", str(ok))


def start_trial(trial: optuna.Trial, n_trials: int, parent_id: str) -> None:
    """Record the trial's worker and sweep run; raise `SurplusTrial` when another worker took the last slot
    between this worker's budget check and this trial's creation."""
    trial.set_user_attr(WORKER_ATTR, json.dumps({**writers.writer_identity(), "at": time.time()}))
    trial.set_user_attr("tc.sweep_run_id", parent_id)
    refuse_surplus(trial, n_trials)


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
            acfg = analysis_config(cfg, run_id, second_id)
            warned = analyze_trial(acfg, parent_id, analyzed_seed(cfg, second_id))
        except torch.OutOfMemoryError as e:  # as in training: the configuration's size meets the device
            return _fail(trial, e, run_id)
        if warned:
            trial.set_user_attr(WARNINGS_ATTR, warned)  # the trial's line says them (`tc.sweep.console`)
        for key, value in labels.trial_attrs(client.get_run(run_id).data.metrics).items():
            trial.set_user_attr(key, value)  # shown beside the objective in optuna-dashboard
        return float(client.get_run(run_id).data.metrics["test_acc"])

    def run_trial(trial: optuna.Trial) -> float:
        start_trial(trial, cfg.n_trials, parent_id)  # a SurplusTrial ends it before anything is sampled
        run_id = None  # until the trial's run exists
        try:  # the guard covers sampling and the run's creation too
            values = suggest(trial, space)
            tags = trial_tags(cfg, trial.number, parent_id)
            with client.nested_run(tags, labels.trial_name(trial.number)) as run_id:
                trial.set_user_attr("mlflow_run_id", run_id)
                try:
                    with kept_output(run_id):
                        return measure(trial, values, run_id)
                except optuna.TrialPruned as e:
                    trial.set_user_attr(PRUNED_ATTR, str(e))
                    client.end_run(run_id, "KILLED", {"tc.pruned": str(e)})
                    raise
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:  # the worker stops; no answer: a crash (not counted; a grid point requeued)
            trial.set_user_attr(CRASH_ATTR, "KeyboardInterrupt: the worker was interrupted during this trial")
            _rerun_grid_point(trial)
            raise
        except Exception as e:  # the block has ended the run FAILED (if it exists); _crash says why on it
            if (refused := refusal(e)) is not None:  # the server refuses this worker (401/403): every trial would
                # stop, with tc's one line; the trial is no answer about its configuration: a crash, not counted
                trial.set_user_attr(CRASH_ATTR, f"{type(refused).__name__}: {refused}"[:5000])
                _rerun_grid_point(trial)
                raise refused from None
            raise _crash(trial, e, run_id) from e

    return run_trial


TRIAL_OUTPUT = "trial_output.txt"  # a trial run's artifact: what its training and analysis printed


@contextlib.contextmanager
def kept_output(run_id: str) -> Iterator[None]:
    """What the block prints (a trial's training and analysis: per-epoch lines, the jobs' own lines) goes to
    run `run_id`'s `TRIAL_OUTPUT` artifact, not the console, which gets one line per trial. Standard error keeps
    warnings and errors; its periodic progress lines (written where it is no terminal: `tc.core.progress.Periodic`)
    go to the artifact alone (`tc.sweep.console.ProgressFilter`), and on a terminal the transient bars stay.
    Trials run one at a time in a worker, so redirecting the process's streams is safe here. The streams are
    restored and the text logged whatever ends the block (a crash, KeyboardInterrupt); where it cannot be logged
    (the tracking server may be what failed) it is kept in a local file, whose path is printed, and the block's
    own exception is not hidden."""
    buffer, filtered = io.StringIO(), None
    err = sys.stderr
    quiet_err = contextlib.nullcontext()
    if err is not None and not (hasattr(err, "isatty") and err.isatty()):
        quiet_err = contextlib.redirect_stderr(ProgressFilter(buffer, err))
    try:
        with contextlib.redirect_stdout(buffer), quiet_err as filtered:
            yield
    finally:
        if filtered is not None:
            filtered.close()  # a last line without its newline
        if buffer.getvalue():
            try:
                client.client().log_text(run_id, buffer.getvalue(), TRIAL_OUTPUT)
            except Exception as e:  # the tracking server may be what failed: nothing printed is lost
                path = Path(tempfile.gettempdir()) / f"tc-{run_id}-{TRIAL_OUTPUT}"
                path.write_text(buffer.getvalue())
                why = mask_text(str(e))  # MLflow's error names the URL it requested, which may hold a password
                print(f"tc sweep: could not log {TRIAL_OUTPUT} of run {run_id}: {why}; kept in {path}", file=sys.stderr)


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
    reason = mask_text(f"{e}" if isinstance(e, TrainingFailure) else f"{type(e).__name__}: {e}")  # tc.tracking.secrets
    _end_trial_runs(run_id, {"tc.error": reason[:5000]})
    trial.set_user_attr(FAIL_REASON_ATTR, reason[:5000])  # the trial's line says it (`tc.sweep.console`)
    return math.nan


def _crash(trial: optuna.Trial, e: Exception, run_id: str | None) -> TrialCrashed:
    """An unexpected exception: one line printed (Optuna logs the traceback of the `TrialCrashed` raised from
    it, with it as the cause), recorded on the trial (`CRASH_ATTR`) and its runs (FAILED, tag `tc.error` with
    the traceback); the `TrialCrashed` to raise, which ends this trial alone."""
    what = mask_text(f"{type(e).__name__}: {e}")
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
        why = mask_text(str(log_error))
        print(f"tc sweep: could not mark trial {trial.number}'s run FAILED: {why}", file=sys.stderr)
    return TrialCrashed(f"trial {trial.number}: {what}")


GRID_RERUN_ATTR = "tc.grid_rerun_of"  # user attr of a queued rerun of a crashed grid point: that trial's number


def _rerun_grid_point(trial: optuna.Trial) -> None:
    """Queue a crashed grid trial's point to run next. Optuna's GridSampler counts a FAILED trial as a visited
    point, so without this the point is never measured and the budget goes to a duplicate of another. A rerun
    is an enqueued trial (no `grid_id`), so it carries `GRID_RERUN_ATTR` to be queued again if it crashes too."""
    (frozen,) = [t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number]
    grid_point = "grid_id" in frozen.system_attrs  # GridSampler's own
    if grid_point or GRID_RERUN_ATTR in trial.user_attrs:
        origin = trial.user_attrs.get(GRID_RERUN_ATTR, trial.number)
        trial.study.enqueue_trial(trial.params, user_attrs={GRID_RERUN_ATTR: origin})
