"""One path per job: "train into a logged run" (`train_job`) and "analyze a logged run" (`analyze_job`).

The entry points, the sweep's trials and the report call these two functions, so every step of a job (config
and labels, the status check, the precision fallback, the atomic write-back, how its runs end) lives once.
Their compute steps are `train_into_run` and `analyze_logged_run`: `tc.core.train.train` and
`tc.analysis.run.analyze_run` with their inputs loaded from, and their results logged to, MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import mlflow
import torch

from tc.analysis.registry import HEADLINE
from tc.analysis.result import AnalysisResult
from tc.analysis.run import analyze_run
from tc.analysis.splits import sample_count
from tc.config import AnalyzeConfig, TrainConfig
from tc.core import checkpoints as ck
from tc.core.data import load_for
from tc.core.device import resolve_device, resolve_precision
from tc.core.models import ModelSpec, build_model, factory_for
from tc.core.progress import progress_bar
from tc.core.train import ProgressReporter, TrainingFailure, train
from tc.tracking import labels, refusals, ui
from tc.tracking.analyses import ANALYSIS_DIR, current_analysis_metrics, log_analysis_result
from tc.tracking.checkpoints import AnalysisInputs, CheckpointCallback, load_analysis_inputs
from tc.tracking.client import (
    client,
    get_run,
    load_train_config,
    log_config,
    log_metrics,
    log_params,
    logged_steps,
    nested_run,
)
from tc.tracking.resume import (
    check_resumable,
    check_rng_state,
    check_train_seconds,
    delete_resume_state,
    load_resume_state,
    resume_index,
)
from tc.tracking.writers import claim_run

#: what `train_job` raises for a run it will not or could not train: a refusal (`tc.tracking.refusals.REFUSALS`:
#: the train command exits 2) or a failure of the training itself (`TrainingFailure`: exit 1); the command answers
#: either with one line
TRAIN_REFUSALS = (*refusals.REFUSALS, TrainingFailure)
#: the same for `analyze_job`: its refusals (a `CheckpointError` is a ValueError), exit 2
ANALYZE_REFUSALS = refusals.REFUSALS

#: more metrics of an analysis, from its config as run, its loaded inputs and its result (`analyze_job`)
ExtraMetrics = Callable[[AnalyzeConfig, AnalysisInputs, AnalysisResult], Mapping[str, float]]


# ---- train into a logged run ---------------------------------------------------------------------------


def train_job(
    cfg: TrainConfig,
    *,
    run_id: str | None = None,
    resume_run_id: str | None = None,
    command_line_model: str | None = None,
    callbacks: Sequence[Any] = (),
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
) -> str:
    """Train `cfg` into a logged run: config (params and `config.json`), name, tags and a first description,
    every checkpoint, the description refreshed with the final metrics. Returns the training run's id.

    Where it trains:
    - default: a run of the job's own, a child of the active run if there is one (else the run `mlflow run`
      created, MLFLOW_RUN_ID, or a new one), with `tags` and `run_name`; ended FINISHED, or FAILED with the
      tag `tc.error` when a step raises, and a refusal renamed `refused: <reason>` (`tc.tracking.refusals`; the
      exception is re-raised: `TRAIN_REFUSALS` are the expected ones);
    - `run_id`: into that existing run, which the caller created and ends (a sweep trial's run stays open for
      its analysis and its pruning); exceptions propagate untouched;
    - `resume_run_id`: continues that killed or failed run, with its own config except `cfg`'s data_dir and
      download (where the data is on this machine is the caller's to say). Refused (ValueError, touching only
      the job's own run) when it is FINISHED or still has a live writer. The job's own run records the resume
      (tag `tc.resumed_run_id`, description); the resumed run is ended FINISHED, or FAILED with `tc.error`.
      Its id is returned.

    `command_line_model`: the model name the user passed; a user model's factory is imported only from it
    (`tc.core.models.factory_for`). None: `cfg.model`, for a new run (the caller's own config). A resumed run's
    config comes from the run, so resuming a user model needs it. `callbacks`: more training callbacks (a
    sweep's pruning), after the checkpoint logging and the progress lines.

    Example (a FINISHED MLflow run holding every checkpoint):

    >>> import tc
    >>> cfg = tc.TrainConfig(dataset="digits", model="mlp", width=16, epochs=2, train_size=256, batch_size=128)
    >>> run_id = tc.train_job(cfg)
    tc train: ...
    >>> from tc.tracking.checkpoints import checkpoint_index
    >>> [entry.step for entry in checkpoint_index(run_id)]
    [0, 2, 4]
    """
    if run_id is not None:
        if resume_run_id is not None:
            raise ValueError("train_job: a resume runs in a run of the job's own; pass resume_run_id without run_id")
        _train_new(run_id, cfg, command_line_model, callbacks)
        return run_id
    with nested_run(dict(tags) if tags else None, run_name) as own_id:
        target = own_id  # stays this run until every check on the run to resume has passed
        try:
            if resume_run_id is None:
                _train_new(own_id, cfg, command_line_model, callbacks)
            else:
                check_resumable(resume_run_id)  # refusals touch only this run, never the one they refuse
                cfg = replace(load_train_config(resume_run_id), data_dir=cfg.data_dir, download=cfg.download)
                state = load_resume_state(resume_run_id)
                target = resume_run_id
                _record_resume(own_id, resume_run_id, cfg)
                client().update_run(resume_run_id, status="RUNNING")
                factory = factory_for(cfg.model, command_line_model)
                train_into_run(resume_run_id, cfg, state, callbacks, factory=factory)
                _describe(resume_run_id)
                client().set_terminated(resume_run_id, "FINISHED")
        except Exception as e:
            err = _failure_once_begun(e, own_id) if target == own_id else e  # a resume's errors: as before
            # the job's own run: `tc.error`, and a refusal's name in place of tc's label (`tc.tracking.refusals`); a
            # caller's name (`run_name`) and a resumed run's name stay
            refusals.record_error(own_id, err, TRAIN_REFUSALS, ours=(labels.run_name(cfg),))
            if target != own_id:
                client().set_tag(target, refusals.ERROR_TAG, refusals.error_text(err, TRAIN_REFUSALS))
            if target != own_id and get_run(target).info.status == "RUNNING":
                client().set_terminated(target, "FAILED")
            if err is not e:
                raise err from e
            raise
    return target


class FailedDuringTraining(RuntimeError):
    """A ValueError or LookupError raised once a new run's training had begun (its step-0 checkpoint logged): not
    tc refusing the request, so not a refusal's name and exit 2, but a failure: exit 1 with the traceback of its
    cause, the run keeping its name (`tc.tracking.refusals`). A resume's errors keep their type (its checks of
    the resume state run inside the resumed run's training, and are refusals)."""


def _failure_once_begun(e: Exception, run_id: str) -> Exception:
    """`e`, or `FailedDuringTraining` for a refusal-typed error after run `run_id`'s work began."""
    if not refusals.is_refusal(e) or not client().list_artifacts(run_id, ck.ARTIFACT_DIR):
        return e
    return FailedDuringTraining(f"{type(e).__name__} during training: {e}")


def _train_new(run_id: str, cfg: TrainConfig, command_line_model: str | None, callbacks: Sequence[Any]) -> None:
    log_config(run_id, cfg)
    ui.label_train_run(run_id, cfg)
    factory = factory_for(cfg.model, command_line_model or cfg.model)
    train_into_run(run_id, cfg, None, callbacks, factory=factory)
    _describe(run_id)


def _record_resume(own_id: str, resume_run_id: str, cfg: TrainConfig) -> None:
    """The resuming run says what it resumed: `mlflow run` logged this command's params, of which only
    data_dir and download were used."""
    note = (
        f"Resumes training run {resume_run_id}, with that run's own config ({cfg.dataset}, {cfg.model}, "
        f"{cfg.epochs} epochs; see its params), except data_dir and download (where the data is on this "
        "machine), which are this run's. This run's other params are ignored."
    )
    tags = {"tc.resumed_run_id": resume_run_id, "mlflow.note.content": note}
    client().log_batch(own_id, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])


def _describe(run_id: str) -> None:
    """The training run's description from its final metrics (and its current analysis, if it has one)."""
    ui.describe_train_run(run_id, current_analysis_metrics(run_id))


def train_into_run(
    run_id: str, cfg: TrainConfig, resume_state: dict | None = None, callbacks: Sequence[Any] = (), factory=None
) -> None:
    """Train `cfg` logging into `run_id`; from `resume_state` when given; extra `callbacks` (e.g. pruning);
    `factory`: a user model's factory, imported from the command line (`tc.core.models.factory_for`)."""
    data = load_for(cfg)
    torch.manual_seed(cfg.seed)
    spec = ModelSpec.of(cfg, data)
    model = build_model(spec, factory)
    start, index = 0, []
    if resume_state is not None:
        start = int(resume_state["step"])
        index = resume_index(run_id, resume_state.get("index"))
        check_rng_state(run_id, resume_state.get("rng"))
        resume_state = {**resume_state, "train_seconds": check_train_seconds(run_id, resume_state.get("train_seconds"))}
        pending = resume_state.get("pending_metrics")
        # The crash may have come between saving this state and logging its epoch's metrics. train_loss: a key
        # every epoch logs (test_acc is only at the epochs `test_every` evaluates)
        if pending and start not in logged_steps(run_id, "train_loss"):
            log_metrics(run_id, pending, start)
    print(
        f"tc train: {cfg.model} (depth {cfg.depth}, width {cfg.width}) on {cfg.dataset}: "
        f"{len(data.train_y)} train / {len(data.test_y)} test examples; run {run_id}"
        + (f"; resuming at step {start}" if resume_state else ""),
        flush=True,
    )
    progress = ProgressReporter(cfg, len(data.train_y), start)
    claim_run(run_id)
    logger = CheckpointCallback(run_id, spec.to_dict(), index)
    try:
        train(model, data, cfg, [logger, progress, *callbacks], resume_state)
    finally:
        progress.close()
        logger.close()
    # Training is complete: the resume state can no longer serve (a finished run is not resumed).
    delete_resume_state(run_id)


# ---- analyze a logged run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalyzedRun:
    """What `analyze_job` did.

    Example:

    >>> import tc
    >>> run_id = tc.train_job(tc.TrainConfig(dataset="digits", model="mlp", width=16, epochs=2, train_size=256))
    tc train: ...
    >>> cfg = tc.AnalyzeConfig(run_id=run_id, splits="test", max_samples=40, anisotropy=False, measures=False)
    >>> done = tc.analyze_job(cfg)
    tc analyze: ...
    >>> print(done.lines()[-1])
    logged to run ...; open `mlflow ui` and look under its Metrics and Artifacts > analysis/v1/
    """

    cfg: AnalyzeConfig  # as analyzed: `precision` after the fallback
    result: AnalysisResult
    last_step: int  # the largest checkpoint step analyzed
    version: int  # the analysis/v<N> of the training run it was written back as
    analyze_run_id: str | None  # the job's own analyze run (None without one)

    def lines(self) -> list[str]:
        """What the analyze command prints after the analysis (each after `tc analyze: `): the summary's
        warnings, the headline numbers and where they were logged."""
        m = self.result.metrics
        headline = "  ".join(f"{k} {m[k]:.4f}" for k in HEADLINE if k in m)
        return [
            *(f"warning: {w}" for w in self.result.summary.get("warnings", [])),
            f"{headline}  [{m['analysis_seconds']:.0f}s]",
            f"logged to run {self.cfg.run_id}; open `mlflow ui` and look under its Metrics and "
            f"Artifacts > {ANALYSIS_DIR}/v{self.version}/",
        ]


def analyze_job(
    cfg: AnalyzeConfig,
    *,
    own_run: bool = True,
    recorded_as: str | None = None,
    trained_here: bool = False,
    extra_metrics: ExtraMetrics | None = None,
) -> AnalyzedRun:
    """Analyze the logged training run `cfg.run_id` and write the analysis back into it:

    1. precision: bf16 only where the device computes it natively, else fp32 with one printed line and the
       tag `tc.precision_fallback` = `bf16->fp32` (on the analyze run; without one, on the training run);
    2. status: a run that is not FINISHED is refused (ValueError: its checkpoints may stop early) unless
       `cfg.allow_unfinished`, or `trained_here`: the caller's own `train_job` has just trained it in this
       process and keeps it open (a sweep trial analyzes its own run, still RUNNING);
    3. the analysis (`analyze_logged_run`); with `extra_metrics`, `extra_metrics(cfg, inputs, result)` adds
       metrics computed from the same loaded inputs (the sweep's cheap surrogates, its seed spread) to the
       result, so that they are written back with it and land in its summary.json;
    4. the write-back (`tc.tracking.analyses.log_analysis_result`): a new analysis version, whole for readers;
    5. labels (`label_analyzed`): `tc.analysis.<setting>` tags, names and descriptions.

    `own_run` (default): the job runs in an analyze run of its own, a child of the active run if there is one (else
    the run `mlflow run` created, or a new one), tagged `tc.source_run_id`, described with a link to the training
    run, with the config's fields as params, holding `summary.json`, and recorded in the tag `tc.analysis` as the
    run that made the analysis; ended FINISHED, or FAILED with the tag `tc.error` when a step raises, a refusal
    also renamed `refused: <reason>` (`tc.tracking.refusals`; the analyzed run is left untouched); the exception
    is re-raised (`ANALYZE_REFUSALS` are the expected ones). `own_run=False`: no run of its own (a sweep trial); the
    tag records `recorded_as` (the sweep run) instead, and exceptions propagate untouched.

    Example (as `mlflow run . -e analyze` does it):

    >>> import tc
    >>> run_id = tc.train_job(tc.TrainConfig(dataset="digits", model="mlp", width=16, epochs=2, train_size=256))
    tc train: ...
    >>> cfg = tc.AnalyzeConfig(run_id=run_id, splits="test", max_samples=40, anisotropy=False, measures=False)
    >>> done = tc.analyze_job(cfg)
    tc analyze: ...
    >>> done.version, done.cfg.run_id == run_id, "tc_test" in done.result.metrics
    (1, True, True)
    """
    if not own_run:
        return _analyze(cfg, None, recorded_as, trained_here, extra_metrics)
    with nested_run({"tc.source_run_id": cfg.run_id}) as analyze_id:
        try:
            # as asked (the fallback's precision is in a tag): in the UI, analyses compare by their settings,
            # also when no MLproject logged them (the quick start analyzes in process)
            log_params(analyze_id, cfg)
            done = _analyze(cfg, analyze_id, recorded_as or analyze_id, trained_here, extra_metrics)
            client().log_dict(analyze_id, done.result.summary, "summary.json")
        except Exception as e:  # the analyzed run is never touched: only the job's own run says why
            refusals.record_error(analyze_id, e, ANALYZE_REFUSALS)
            raise
    return done


def _analyze(
    cfg: AnalyzeConfig,
    analyze_id: str | None,
    recorded_as: str | None,
    trained_here: bool,
    extra_metrics: ExtraMetrics | None,
) -> AnalyzedRun:
    cfg = _precision_fallback(cfg, analyze_id or cfg.run_id)
    source = get_run(cfg.run_id)
    if source.info.status != "FINISHED" and not (cfg.allow_unfinished or trained_here):
        raise ValueError(
            f"run {cfg.run_id} is {source.info.status}, not FINISHED: its checkpoints may stop early "
            "(resume it first), or pass -P allow_unfinished=true to analyze what it has"
        )
    if analyze_id:
        link = f"#/experiments/{source.info.experiment_id}/runs/{cfg.run_id}"
        ui.describe_run(analyze_id, f"Analysis of training run [{cfg.run_id}]({link}).")
    result, last_step = analyze_logged_run(cfg, extra_metrics=extra_metrics)
    # the write-back refuses too (a marker or pointer that is not tc's): a ValueError like every refusal
    version = log_analysis_result(cfg, result, last_step, recorded_as)
    label_analyzed(cfg.run_id, analyze_id, cfg)
    return AnalyzedRun(cfg, result, last_step, version, analyze_id)


def _precision_fallback(cfg: AnalyzeConfig, tag_run_id: str) -> AnalyzeConfig:
    """`cfg` with the precision the device can compute in: bf16 only where it is native (issue 11), else
    fp32, said in one line and in the tag `tc.precision_fallback` of run `tag_run_id`."""
    precision, why = resolve_precision(cfg.precision, resolve_device(cfg.device))
    if not why:
        return cfg
    print(f"tc analyze: {why}", flush=True)
    client().set_tag(tag_run_id, "tc.precision_fallback", f"{cfg.precision}->{precision}")
    return replace(cfg, precision=precision)


def analyze_logged_run(cfg: AnalyzeConfig, *, extra_metrics: ExtraMetrics | None = None) -> tuple[AnalysisResult, int]:
    """Load run `cfg.run_id` through MLflow and analyze it (`analyze_run`): (the result, the last step). With
    `extra_metrics`, its metrics of the same inputs are added to the result (`analyze_job`)."""
    inputs = load_analysis_inputs(cfg)
    ckpts, data, run = inputs
    print(
        f"tc analyze: run {cfg.run_id}: {len(ckpts.steps)} checkpoints (steps {ckpts.steps[0]}..{ckpts.steps[-1]}), "
        f"splits {cfg.splits}, up to {cfg.max_samples or 'all'} samples each, matrix={cfg.matrix}, "
        f"bn_mode={cfg.bn_mode}, precision={cfg.precision}",
        flush=True,
    )
    with progress_bar(sample_count(data, cfg), "tc analyze") as progress:
        result = analyze_run(ckpts, data, cfg, run, progress)
    if extra_metrics is not None:
        _add_metrics(result, extra_metrics(cfg, inputs, result))
    return result, ckpts.steps[-1]


def _add_metrics(result: AnalysisResult, extra: Mapping[str, float]) -> None:
    """`extra` into the result's metrics and its summary's (the same dict when `analyze_run` made them)."""
    result.metrics.update(extra)
    summary = result.summary.setdefault("metrics", result.metrics)
    if summary is not result.metrics:
        summary.update(extra)


def label_analyzed(train_run_id: str, analyze_run_id: str | None, cfg: AnalyzeConfig) -> None:
    """The analyze job's labels step (`tc.tracking.ui.label_analysis` with the run's current analysis): the
    `tc.analysis.<setting>` tags, the analyze run's name and description, the training run's description."""
    ui.label_analysis(train_run_id, analyze_run_id, cfg, current_analysis_metrics(train_run_id))
