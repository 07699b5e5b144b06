"""A training run and an analysis as MLflow runs: `tc.core.train.train` and `tc.analysis.run.analyze_run` with their
inputs loaded from, and their results logged to, MLflow through `tc.tracking` (the entry points and the
sweep's trials share these)."""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from tc import tracking
from tc.analysis.run import AnalysisResult, analyze_run
from tc.analysis.splits import sample_count
from tc.config import AnalyzeConfig, TrainConfig
from tc.core.checkpoints import CheckpointError, IndexEntry, check_entry
from tc.core.data import load_for
from tc.core.models import ModelSpec, build_model
from tc.core.progress import progress_bar
from tc.core.train import ProgressReporter, rng_streams, train


def train_into_run(
    run_id: str, cfg: TrainConfig, resume_state: dict | None = None, callbacks: list = (), factory=None
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
        index = _resume_index(run_id, resume_state.get("index"))
        check_rng_state(run_id, resume_state.get("rng"))
        resume_state = {**resume_state, "train_seconds": check_train_seconds(run_id, resume_state.get("train_seconds"))}
        pending = resume_state.get("pending_metrics")
        # The crash may have come between saving this state and logging its epoch's metrics.
        if pending and start not in tracking.logged_steps(run_id, "test_acc"):
            tracking.log_metrics(run_id, pending, start)
    print(
        f"tc train: {cfg.model} (depth {cfg.depth}, width {cfg.width}) on {cfg.dataset}: "
        f"{len(data.train_y)} train / {len(data.test_y)} test examples; run {run_id}"
        + (f"; resuming at step {start}" if resume_state else ""),
        flush=True,
    )
    progress = ProgressReporter(cfg, len(data.train_y), start)
    tracking.claim_run(run_id)
    logger = tracking.CheckpointLogger(run_id, spec.to_dict(), index)
    try:
        train(model, data, cfg, [logger, progress, *callbacks], resume_state)
    finally:
        progress.close()
        logger.close()
    # Training is complete: the resume state can no longer serve (a finished run is not resumed).
    tracking.delete_resume_state(run_id)


def _resume_index(run_id: str, raw: object) -> list[IndexEntry]:
    """The index of a resume state, each entry checked as `checkpoints/index.json`'s are (`check_entry`): it is
    run data, written back as the run's index, whose names later become paths."""
    if not isinstance(raw, list):
        raise CheckpointError(f"run {run_id}: {tracking.RESUME_FILE} holds no list of index entries")
    entries, seen = [], set()
    for i, e in enumerate(raw):
        try:
            entry = check_entry(e)
        except ValueError as err:
            raise CheckpointError(f"run {run_id}: {tracking.RESUME_FILE} index entry {i} {err}") from None
        if entry.step in seen:  # as `read_index` refuses it in checkpoints/index.json
            where = f"run {run_id}: {tracking.RESUME_FILE} index entry {i}"
            raise CheckpointError(f"{where} is for step {entry.step} again")
        seen.add(entry.step)
        entries.append(entry)
    return entries


def check_rng_state(run_id: str, raw: object) -> None:
    """The `rng` of a resume state (`tc.core.train.rng_state`), checked before the run is claimed or written to: it
    is run data, and a malformed one would otherwise fail in `restore_rng_state` mid-resume. Each stream is
    set on a throwaway generator, so the values are checked as the resume will use them (the CUDA state only
    by type: no device is needed to check a run). None or empty (an older tc) is fine: the resume warns."""
    if raw is None or raw == {}:
        return
    try:
        torch_state, python_state, numpy_state, _ = rng_streams(raw)
        torch.Generator().set_state(torch_state)
        random.Random().setstate(python_state)
        np.random.RandomState().set_state(numpy_state)
    except (ValueError, TypeError, OverflowError, RuntimeError, IndexError) as e:  # the setters' refusals
        why = str(e)[:300] if str(e).startswith("rng ") else f"rng: {str(e)[:300]}"
        raise CheckpointError(f"run {run_id}: {tracking.RESUME_FILE} {why}") from None


def check_train_seconds(run_id: str, raw: object) -> float:
    """The `train_seconds` of a resume state as a finite float >= 0 (absent: 0, an older tc), else
    CheckpointError: it becomes the run's logged training time."""
    if raw is None:
        return 0.0
    if type(raw) is bool or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw < 0:
        raise CheckpointError(f"run {run_id}: {tracking.RESUME_FILE} train_seconds {str(raw)[:100]!r} is not a time")
    return float(raw)


def analyze_logged_run(cfg: AnalyzeConfig) -> tuple[AnalysisResult, int]:
    """Load run `cfg.run_id` through MLflow and analyze it (`analyze_run`): (the result, the last step)."""
    ckpts, data, run = tracking.load_analysis_inputs(cfg)
    print(
        f"tc analyze: run {cfg.run_id}: {len(ckpts.steps)} checkpoints (steps {ckpts.steps[0]}..{ckpts.steps[-1]}), "
        f"splits {cfg.splits}, up to {cfg.max_samples or 'all'} samples each, matrix={cfg.matrix}, "
        f"bn_mode={cfg.bn_mode}, precision={cfg.precision}",
        flush=True,
    )
    with progress_bar(sample_count(data, cfg), "tc analyze") as progress:
        return analyze_run(ckpts, data, cfg, run, progress), ckpts.steps[-1]


def train_nested(cfg: TrainConfig) -> str:
    """Train `cfg` as a child run of the active run, as the train entry point does (config, names, tags,
    every checkpoint, description): its run id. In-process, so a report of many runs pays no process start."""
    with tracking.nested_run() as run_id:
        tracking.log_config(run_id, cfg)
        tracking.label_train_run(run_id, cfg)
        train_into_run(run_id, cfg)
        tracking.describe_train_run(run_id)
    return run_id


def analyze_nested(cfg: AnalyzeConfig) -> AnalysisResult:
    """Analyze run `cfg.run_id` from a child analyze run of the active run and log the result back to the
    training run, as the analyze entry point does."""
    with tracking.nested_run({"tc.source_run_id": cfg.run_id}) as analyze_id:
        result, last_step = analyze_logged_run(cfg)
        tracking.log_analysis_result(cfg, result, last_step, analyze_id)
        tracking.label_analysis(cfg.run_id, analyze_id, cfg)
    return result
