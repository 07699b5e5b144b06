"""The quick start (`mlflow run . --env-manager local`, entry point `main`) passes tc's own checks.

Fast: the main job's exact parameters (MLproject's defaults, through entrypoints/main.py) drive the real training
loop on a stand-in model and data of the same size, so the checkpoint steps are the ones the real run saves;
the analysis's checkpoint selection must then put at least `MIN_WINDOW` checkpoints in tc's window, the rule
behind analyze's "the tc window holds N checkpoint(s)" warning, without analyzing more checkpoints than before.
Fast also: the quick start evaluates the test set at its last epoch and analyzes without the baseline measures,
none of which it prints (issue 21). Slow: the real main job, whose output must hold no warning line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from entrypoints import main as quick
from tc.analysis.consistency import MIN_WINDOW
from tc.analysis.registry import GM, HEADLINE
from tc.analysis.splits import WINDOW_CHECKPOINTS, checkpoint_interval, select_steps, window_spread_steps
from tc.config import AnalyzeConfig, TrainConfig, from_strings
from tc.core import checkpoints as ck
from tc.core import consistency
from tc.core.data import DataBundle, DatasetNotFoundError, load_data, steps_per_epoch
from tc.core.models import ModelSpec, build_model
from tc.core.train import train
from tc.tracking import checkpoints
from tests.conftest import ROOT


def _main_defaults() -> dict[str, str]:
    spec = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["main"]["parameters"]
    return {name: str(p["default"]) for name, p in spec.items()}


def test_main_py_defaults_are_mlproject_defaults():
    assert {k: str(v) for k, v in dataclasses.asdict(quick.parse_args([])).items()} == _main_defaults()


class _Steps:
    def __init__(self):
        self.steps = []

    def on_save(self, step, epoch, model, state, checkpoint):
        if checkpoint:
            self.steps.append(step)


def _saved_steps(cfg: TrainConfig) -> list[int]:
    """The checkpoint steps `tc.core.train.train` saves under `cfg`, on a stand-in (an MLP on random 8x8 images) with
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


def test_the_quick_start_does_the_work_of_what_it_prints_and_no_more():
    """Issue 21: the test set at the last epoch only, and no baseline measures, none of which it prints."""
    args = quick.parse_args([f"--{k}={v}" for k, v in _main_defaults().items()])
    assert from_strings(TrainConfig, quick.train_parameters(args)).test_every == 0
    saved = [200, *range(0, 200, 25)]  # the run's steps, as the index lists them (unsorted is fine)
    cfg = from_strings(AnalyzeConfig, quick.analyze_parameters(args, "run", saved))
    assert (cfg.run_id, cfg.max_samples, cfg.checkpoints, cfg.measures) == ("run", 500, "0,100,125,150,175,200", False)
    # what measures=false leaves out (the gm_* measures and the MMD surrogate) is not in the printed headline
    assert not [k for k in HEADLINE if k in GM or k.startswith(("gm_", "tc_mmd"))]


def test_the_quick_start_runs_its_jobs_with_those_parameters(mlflow_store, monkeypatch, capsys):
    """`main` itself hands the jobs `train_parameters` and `analyze_parameters` (test set at the last epoch, no
    measures), and prints test_acc and the headline from the training run. The jobs are stand-ins that record
    their configs: the real ones are the slow test's."""
    asked = {}
    headline = {"test_acc": 0.8, **{k: i / 100 for i, k in enumerate(HEADLINE) if k != "tc_test_crossseed"}}

    def train_job(cfg):
        asked["train"] = cfg
        return "trained"

    def analyze_job(cfg):
        asked["analyze"] = cfg
        return SimpleNamespace(lines=lambda: ["done"])

    monkeypatch.setattr(quick, "load_data", lambda *a, **k: None)  # the stand-ins read no data
    monkeypatch.setattr(quick, "train_job", train_job)
    monkeypatch.setattr(quick, "analyze_job", analyze_job)
    saved = [SimpleNamespace(step=s) for s in (200, *range(0, 200, 25))]
    monkeypatch.setattr(quick, "checkpoint_index", lambda run_id: saved if run_id == "trained" else [])
    monkeypatch.setattr(quick, "get_run", lambda run_id: SimpleNamespace(data=SimpleNamespace(metrics=headline)))
    assert quick.main([]) == 0
    args = quick.parse_args([])
    assert asked["train"] == from_strings(TrainConfig, quick.train_parameters(args))
    assert asked["train"].test_every == 0 and asked["analyze"].measures is False
    steps = [e.step for e in saved]
    assert asked["analyze"] == from_strings(AnalyzeConfig, quick.analyze_parameters(args, "trained", steps))
    assert asked["analyze"].checkpoints == "0,100,125,150,175,200"
    printed = capsys.readouterr().out.split("=== tc quick start ===")[1].splitlines()
    assert [line.split()[0] for line in printed if line.startswith("  ")] == list(headline)


def _rule_steps(total: int, every: int) -> list[int]:
    """The steps `tc.core.train.train` saves in a run of `total` steps: 0, every `every` steps, and the last."""
    return sorted({*range(0, total, every), total})


@pytest.mark.parametrize("epochs, train_size", [(2, 300), (7, 1000), (3, 640), (1, 1000)])
def test_the_training_loop_saves_the_steps_the_rule_assumes(epochs, train_size):
    # the many-totals test below takes the saved steps from the rule; here the real loop agrees, for totals that
    # 8 divides (56, 8) and not (6; 15: -P epochs=3 train_size=640, which analyzed 9 checkpoints before)
    cfg = from_strings(
        TrainConfig, quick.train_parameters(quick.parse_args([f"--epochs={epochs}", f"--train_size={train_size}"]))
    )
    total = epochs * steps_per_epoch(train_size, cfg.batch_size)
    steps = _saved_steps(cfg)
    assert steps == _rule_steps(total, cfg.checkpoint_every)
    assert len(quick.analyzed_steps(steps)) <= 6


# every total up to 600, then a spread up to 50 000; 2345 is -P train_size=0 (all 60 000 Fashion-MNIST images,
# 469 steps per epoch, 5 epochs), 15 is -P epochs=3 train_size=640
TOTALS = sorted({*range(1, 601), 2345, *range(601, 50_001, 97), 5 * steps_per_epoch(60_000, 128)})


def test_every_total_analyzes_at_most_6_with_a_filled_window_over_the_last_part():
    window = AnalyzeConfig.window  # the main job does not set analyze's window
    assert 15 in TOTALS and 2345 in TOTALS and any(t % 8 for t in TOTALS)
    for total in TOTALS:
        # the entry point's own functions; batch 1 makes `train_size` the step count of one epoch
        every = quick.checkpoint_every(epochs=1, train_size=total, batch_size=1)
        saved = _rule_steps(total, every)
        analyzed = quick.analyzed_steps(saved)
        assert set(analyzed) <= set(saved) and analyzed == sorted(set(analyzed)), total
        assert analyzed[0] == 0 and analyzed[-1] == total, (total, analyzed)  # the initialisation and the end
        assert len(analyzed) <= 6, (total, analyzed)  # composite cost ~ (number analyzed)^2: never more than 6
        win = [analyzed[i] for i in consistency.window(analyzed, window)]  # analyze's own window rule
        if total < 8:  # too few steps for 4 distinct window checkpoints: the ones there are, still analyzable
            assert len(win) >= 1 and len(analyzed) >= 2, (total, analyzed)
            continue
        assert len(win) >= MIN_WINDOW, (total, saved, analyzed)
        assert len(win) == WINDOW_CHECKPOINTS, (total, analyzed)
        assert win[0] >= (1 - window) * total, (total, analyzed)  # the window is the last part, not more
        # the final gap is at least half the nominal window spacing (window * T / 4), and no gap among the window
        # and the final checkpoint is under a third of the largest (lag curves count lags in checkpoints)
        tail = np.array([*win, total])
        gaps = np.diff(tail)
        assert total - win[-1] >= 0.5 * window * total / WINDOW_CHECKPOINTS, (total, analyzed)
        assert gaps.min() >= gaps.max() / 3, (total, analyzed)
        if total % 8 == 0:  # exactly the eighths, as the default run (200 steps) always had
            assert every == total // 8 and analyzed == [0, *(k * total // 8 for k in range(4, 9))], total


def test_train_size_0_checkpoints_the_whole_training_set_as_2345_steps():
    # -P train_size=0: 2345 steps. Before, every 293 steps analyzed [0, 1465, 1758, 2051, 2344, 2345]: a window
    # over the last 37.5% of training and its last checkpoint one step before the end
    total = 5 * steps_per_epoch(60_000, TrainConfig.batch_size)
    assert total == 2345
    every = quick.checkpoint_every(epochs=1, train_size=total, batch_size=1)
    assert every == 146
    assert quick.analyzed_steps(_rule_steps(total, every)) == [0, 1314, 1606, 1898, 2190, 2345]


def test_checkpoint_index_reads_the_validated_index_without_downloading_checkpoints(
    mlflow_store, tmp_path, monkeypatch
):
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    stage = tmp_path / "stage"
    stage.mkdir()
    entries = [
        dataclasses.asdict(ck.save_checkpoint(stage, s, s / 40, {"model": "x"}, {"w": torch.ones(2)}))
        for s in (0, 25, 50)
    ]
    for s in (0, 25, 50):
        c.log_artifact(run_id, str(stage / ck.filename(s)), ck.ARTIFACT_DIR)
    index = stage / ck.INDEX_FILE
    index.write_text(json.dumps({"format": ck.FORMAT, "checkpoints": entries[::-1]}))
    c.log_artifact(run_id, str(index), ck.ARTIFACT_DIR)
    fetched: list[str] = []
    original = MlflowClient.download_artifacts
    monkeypatch.setattr(
        MlflowClient, "download_artifacts", lambda self, r, p, d=None: fetched.append(p) or original(self, r, p, d)
    )
    assert sorted(e.step for e in checkpoints.checkpoint_index(run_id)) == [0, 25, 50]
    assert fetched == [f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}"]  # the index only, no checkpoint

    # an index that fails `ck.read_index`'s checks, and a run without one: one message naming the run
    bad = c.create_run("0").info.run_id
    index.write_text(json.dumps({"format": ck.FORMAT, "checkpoints": [{**entries[1], "file": "../x.pt"}]}))
    c.log_artifact(bad, str(index), ck.ARTIFACT_DIR)
    with pytest.raises(ck.CheckpointError, match=f"run {bad}: .*entry 0.*refused"):
        checkpoints.checkpoint_index(bad)
    empty = c.create_run("0").info.run_id
    with pytest.raises(ck.CheckpointError, match=f"run {empty} has no checkpoints/index.json"):
        checkpoints.checkpoint_index(empty)


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
    # every printed number was computed, without the measures and with one test evaluation, at the last epoch
    assert {"test_acc", *HEADLINE} - {"tc_test_crossseed"} <= set(parent.data.metrics)  # no reference: no cross-seed
    assert not [k for k in trained.data.metrics if k.startswith(("gm_", "tc_mmd"))]
    assert [m.step for m in MlflowClient().get_metric_history(trained.info.run_id, "test_acc")] == [200]


@pytest.mark.parametrize("window", [0.25, 0.3, 0.5, 0.75, 1.0])
def test_window_spread_steps_fall_in_analyzes_window_for_any_window(window):
    # the first target is `tc.core.consistency.window`'s own bound, so the spread lands inside it for any window; the
    # saving interval (sixteenths at worst) is sized for windows of half of training or more
    for total in range(16, 2000, 7):
        saved = _rule_steps(total, checkpoint_interval(total))
        analyzed = window_spread_steps(saved, window)
        win = [analyzed[i] for i in consistency.window(analyzed, window)]
        assert len(analyzed) <= 2 + WINDOW_CHECKPOINTS and min(win) >= (1 - window) * total, (window, total, analyzed)
        if window >= 0.5:
            assert len(win) >= MIN_WINDOW, (window, total, analyzed)


def test_tiny_and_empty_runs():
    assert [checkpoint_interval(t) for t in (1, 7, 8, 9, 15, 16, 17)] == [1, 1, 1, 1, 1, 2, 1]
    with pytest.raises(ValueError, match="at least 1 step"):
        checkpoint_interval(0)
    with pytest.raises(ValueError, match="no checkpoints"):
        window_spread_steps([])
    assert window_spread_steps([0]) == [0]
