"""Quick start: train ResNet-20 on a Fashion-MNIST subset, analyze it, print the headline numbers.

    mlflow run . --env-manager local

Trains and analyzes as nested MLflow runs under this one, in this process, through the train and analyze
entry points' own jobs (`tc.tracking.jobs.train_job`, `analyze_job`), then prints the training run id, its test
accuracy and temporal-consistency scores, and how to open the MLflow UI. The run checkpoints every eighth of
training and the analysis reads the initialisation, four checkpoints spread over the last half and the final
one (the comment above `checkpoint_every` says why). It evaluates the test set at the last epoch only and
analyzes without the baseline measures gm_*, none of which its headline holds (the comment above
`train_parameters` says why). A bad parameter, a missing data set or a train_size above its size is refused before
any run starts: exit 2 and one FAILED run named `refused: <reason>` (`tc.tracking.refusals`).
"""

from __future__ import annotations

import os
import sys

import mlflow

from tc import config
from tc.analysis.registry import HEADLINE
from tc.analysis.splits import checkpoint_interval, window_spread_steps
from tc.config import AnalyzeConfig, MainConfig, TrainConfig, from_strings
from tc.core.data import DatasetNotFoundError, load_data, steps_per_epoch
from tc.tracking import refusals, ui
from tc.tracking.access import exit_on_refusal
from tc.tracking.checkpoints import checkpoint_index
from tc.tracking.client import end_active_run, get_run, use_default_experiment
from tc.tracking.jobs import ANALYZE_REFUSALS, TRAIN_REFUSALS, analyze_job, train_job

DATASET, MODEL = "fashion-mnist", "resnet20"

# The quick start's checkpointing. Its run is 5 epochs of 40 steps (5000 images, batch 128). One checkpoint per
# epoch left 2 checkpoints in tc's window (the last half of training, final excluded: `tc.core.consistency.window`),
# fewer than the 3 that a temporal average needs (`tc.analysis.consistency.MIN_WINDOW`), and analyze warned about
# its own headline. So the run saves every eighth of training (steps 0, 25, ..., 200: 9 checkpoints;
# `tc.analysis.splits.checkpoint_interval`) and the analysis reads the initialisation, the final checkpoint and
# the first saved step at or after 4/8, 5/8, 6/8, 7/8 of training (`tc.analysis.splits.window_spread_steps`):
# 0, 100, 125, 150, 175, 200. Then
#   - the window holds 4 checkpoints, evenly spaced over exactly the last half (the lag curves and the
#     half-life count lags in checkpoints, so the window and the final checkpoint need even spacing);
#   - the initialisation stays in (the distance-from-init measures read it);
#   - the analysis still composes 6 checkpoints, as with one per epoch: its composite phase grows with the
#     square of that number, so it costs what it did; the 3 extra saves cost training well under a second.
# Fractions of training rather than a step count, so that other -P epochs/train_size keep the same shape; a step
# count that 8 does not divide saves every sixteenth instead (`checkpoint_interval` says why).


def checkpoint_every(epochs: int, train_size: int, batch_size: int = TrainConfig.batch_size) -> int:
    """Optimizer steps between checkpoints for the quick start's run (`tc.analysis.splits.checkpoint_interval` of its
    total steps). `train_size` 0 means the whole training set, which is then loaded to count it (tc.core.data has no
    size table; the train job loads the data again)."""
    n = train_size or len(load_data(DATASET).train_y)
    return checkpoint_interval(epochs * steps_per_epoch(n, batch_size))


def analyzed_steps(steps: list[int], window: float = AnalyzeConfig.window) -> list[int]:
    """The checkpoints the quick start analyzes out of the run's saved `steps`: `tc.analysis.splits.window_spread_steps`
    with analyze's `window` (the main job does not set it)."""
    return window_spread_steps(steps, window)


# The quick start does the work of what it prints and no more (issue 21: it must take <= 120 s on 2 cores; its
# phases were already at their arithmetic floors, docs/benchmarks.md). Two things its headline holds nothing from:
#   - the test set is evaluated at the last epoch only (`test_every` 0), not after every epoch: 4 passes over the
#     10,000 test images fewer; training is the same step for step (an evaluation runs in eval mode and inference
#     mode: it changes no weight or BatchNorm statistic and draws no random numbers; tests/test_test_every.py), so
#     test_acc and every checkpoint are the same. The progress lines of epochs 1-4 no longer print a test_loss and
#     test_acc, and the training run's test_acc and test_loss have one point, at the last step;
#   - the analysis leaves out the baseline measures gm_* and tc_mmd (`measures` false): none is in its headline
#     (`tc.analysis.registry.HEADLINE`), and gm_sharpness alone cost about 20 s. `analyze -P run_id=...` with its
#     defaults adds them to the same run.
def train_parameters(cfg: MainConfig) -> dict[str, str]:
    """The `train` entry point's parameters for the quick start's run."""
    return {
        "dataset": DATASET,
        "model": MODEL,
        "epochs": str(cfg.epochs),
        "train_size": str(cfg.train_size),
        "width": str(cfg.width),
        "seed": str(cfg.seed),
        "batch_size": str(TrainConfig.batch_size),
        "checkpoint_every": str(checkpoint_every(cfg.epochs, cfg.train_size)),
        "test_every": "0",
    }


def analyze_parameters(cfg: MainConfig, train_id: str, saved: list[int]) -> dict[str, str]:
    """The `analyze` entry point's parameters for the quick start's training run `train_id`, which saved the
    checkpoints at steps `saved`: the checkpoints of `analyzed_steps`, without the baseline measures."""
    steps = ",".join(map(str, analyzed_steps(sorted(saved))))
    return {"run_id": train_id, "max_samples": str(cfg.max_samples), "checkpoints": steps, "measures": "false"}


def parse_args(argv: list[str] | None = None) -> MainConfig:
    """The quick start's config from its command line; a `ValueError` names a bad value."""
    return config.parse_args(MainConfig, argv, description=__doc__.splitlines()[0])


@exit_on_refusal("tc main")  # the server's 401/403: one line, exit 1 (tc.tracking.access)
def main(argv: list[str] | None = None) -> int:
    # as the analyze command: the analysis' download of checkpoints prints tc's lines, not MLflow's bars
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:  # refused before any run: one FAILED run named `refused: ...`, exit 2 (tc.tracking.refusals)
        cfg = parse_args(argv)
        train_cfg = from_strings(TrainConfig, train_parameters(cfg))
        # a missing data set or a train_size above its size is refused here, not in a child run (the train job
        # reads it again)
        load_data(DATASET, train_size=cfg.train_size)
    except (ValueError, DatasetNotFoundError) as e:
        return refusals.refuse("main", e)
    use_default_experiment()
    with mlflow.start_run() as parent:
        ui.name_run(parent.info.run_id, "quick start")
        try:
            train_id = train_job(train_cfg)
            print(f"tc train: done; run {train_id}", flush=True)
            mlflow.set_tag("tc.train_run_id", train_id)
            saved = [e.step for e in checkpoint_index(train_id)]  # the validated index only
            done = analyze_job(from_strings(AnalyzeConfig, analyze_parameters(cfg, train_id, saved)))
        except (*TRAIN_REFUSALS, *ANALYZE_REFUSALS) as e:  # the job ended its own run FAILED, tagged tc.error
            said = refusals.error_text(e, TRAIN_REFUSALS)  # passwords masked, on stderr as in the tag
            print(f"tc quick start: {said}", file=sys.stderr)
            end_active_run("FAILED", {refusals.ERROR_TAG: said})
            return refusals.exit_code(e)
        for line in done.lines():
            print(f"tc analyze: {line}", flush=True)
        m = get_run(train_id).data.metrics
        headline = {k: m[k] for k in ("test_acc", *HEADLINE) if k in m}
        mlflow.log_metrics(headline)
    print("\n=== tc quick start ===")
    print(f"training run: {train_id}")
    for k, v in headline.items():
        print(f"  {k:29s} {v:.4f}")
    print("open the results: `mlflow ui` (in this directory), then http://127.0.0.1:5000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
