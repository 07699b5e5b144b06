"""The quick start (`mlflow run . --env-manager local`, entry point `main`) passes tc's own checks.

Fast: the main job's exact parameters (MLproject's defaults, through entrypoints/main.py) drive the real training
loop on a stand-in model and data of the same size, so the checkpoint steps are the ones the real run saves;
the analysis's checkpoint selection must then put at least `MIN_WINDOW` checkpoints in tc's window, the rule
behind analyze's "the tc window holds N checkpoint(s)" warning, without analyzing more checkpoints than before.
Slow: the real main job, whose output must hold no warning line.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from entrypoints import main as quick
from tc import consistency
from tc.analysis import MIN_WINDOW
from tc.config import AnalyzeConfig, TrainConfig, from_strings
from tc.data import DataBundle, DatasetNotFoundError, load_data
from tc.models import ModelSpec, build_model
from tc.splits import select_steps
from tc.train import train
from tests.conftest import ROOT


def _main_defaults() -> dict[str, str]:
    spec = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["main"]["parameters"]
    return {name: str(p["default"]) for name, p in spec.items()}


def test_main_py_defaults_are_mlproject_defaults():
    assert vars(quick.parse_args([])) == _main_defaults()


class _Steps:
    def __init__(self):
        self.steps = []

    def on_save(self, step, epoch, model, state, checkpoint):
        if checkpoint:
            self.steps.append(step)


def _saved_steps(cfg: TrainConfig) -> list[int]:
    """The checkpoint steps `tc.train.train` saves under `cfg`, on a stand-in (an MLP on random 8x8 images) with
    as many training examples as `cfg.train_size`: the steps depend only on that count, the batch size, the
    epochs and `checkpoint_every`."""
    g = torch.Generator().manual_seed(0)
    n = cfg.train_size
    x, y = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)
    data = DataBundle("digits", x, y, y, x[:64], y[:64], 10, (0.5,), (0.25,))
    stand_in = dataclasses.replace(cfg, dataset="digits", model="mlp", width=4, device="cpu")
    recorder = _Steps()
    torch.manual_seed(0)
    train(build_model(ModelSpec("mlp", 3, 4, 1, 8, 10)), data, stand_in, [recorder])
    return recorder.steps


def test_main_job_window_holds_enough_checkpoints_at_the_same_analysis_cost():
    args = quick.parse_args([f"--{k}={v}" for k, v in _main_defaults().items()])
    params = quick.train_parameters(args)
    cfg = from_strings(TrainConfig, {k: v for k, v in params.items()})
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.train_size) == ("fashion-mnist", "resnet20", 5, 5000)
    window = AnalyzeConfig.window  # the main job does not set analyze's window

    # before: one checkpoint per epoch, every checkpoint analyzed: 2 in the window, which analyze warns about
    per_epoch = _saved_steps(dataclasses.replace(cfg, checkpoint_every=0))
    assert per_epoch == [0, 40, 80, 120, 160, 200]
    assert len(consistency.window(per_epoch, window)) < MIN_WINDOW

    # now: the main job's checkpointing and selection, read by analyze exactly as the main job passes it
    steps = _saved_steps(cfg)
    spec = ",".join(map(str, quick.analyzed_steps(steps)))
    analyzed = select_steps(spec, steps)
    win = consistency.window(analyzed, window)
    assert len(win) >= MIN_WINDOW, (steps, analyzed, win)
    assert len(analyzed) <= len(per_epoch)  # composite cost ~ (number of analyzed checkpoints)^2: not more
    assert analyzed[0] == 0  # the initialisation (distance-from-init measures read it)
    # the window and the final checkpoint are evenly spaced (lag curves count lags in checkpoints) and span
    # exactly the last `window` fraction of training
    tail = np.array([analyzed[i] for i in win] + [analyzed[-1]])
    assert len(set(np.diff(tail))) == 1 and tail[0] == (1 - window) * tail[-1]
    assert analyzed == [0, 100, 125, 150, 175, 200]


@pytest.mark.parametrize("epochs, train_size", [(2, 300), (7, 1000), (50, 5000)])
def test_other_epochs_and_sizes_keep_the_window_filled(epochs, train_size):
    # -P epochs / train_size change the step count; the quick start keeps its shape (eighths of training)
    args = quick.parse_args([f"--epochs={epochs}", f"--train_size={train_size}"])
    cfg = from_strings(TrainConfig, quick.train_parameters(args))
    steps = _saved_steps(cfg) if epochs * train_size <= 10_000 else None
    if steps is None:  # the same rule without training: every `checkpoint_every` steps, and the last
        total = epochs * -(-train_size // cfg.batch_size)
        steps = sorted({*range(0, total, cfg.checkpoint_every), total})
    analyzed = quick.analyzed_steps(steps)
    assert len(consistency.window(analyzed, AnalyzeConfig.window)) >= MIN_WINDOW
    assert len(analyzed) <= 6


def _fashion_mnist_available() -> bool:
    try:
        load_data("fashion-mnist", train_size=10)
    except DatasetNotFoundError:
        return False
    return True


@pytest.mark.slow
def test_the_real_quick_start_prints_no_warning(mlflow_store):
    if not _fashion_mnist_available():
        pytest.skip("Fashion-MNIST is not installed (scripts/setup.sh installs it)")
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "-e", "main"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    warnings = [line for line in output.splitlines() if "warning" in line.lower()]
    assert warnings == [], "\n".join(warnings)
    assert "=== tc quick start ===" in proc.stdout
    runs = MlflowClient().search_runs(["0"])
    parent = next(r for r in runs if "tc.train_run_id" in r.data.tags)
    trained = MlflowClient().get_run(parent.data.tags["tc.train_run_id"])
    assert trained.data.metrics["tc_window_checkpoints"] >= MIN_WINDOW
    assert "tc.window_warning" not in trained.data.tags
