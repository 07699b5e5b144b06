"""The README's commands, end to end through `mlflow run --env-manager local` in a subprocess."""

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT


def mlflow_run(entry: str, *params: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "-e", entry]
    for p in params:
        cmd += ["-P", p]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def test_train_through_mlflow_run_logs_checkpoints(mlflow_store):
    proc = mlflow_run("train", "dataset=digits", "model=mlp", "epochs=2", "width=16", "batch_size=512")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 2/2" in proc.stdout
    (run,) = MlflowClient().search_runs(["0"])
    assert run.info.status == "FINISHED" and run.data.params["model"] == "mlp"
    assert run.data.params["depth"] == "0" and run.data.params["depth_resolved"] == "3"  # 0 = model default
    names = sorted(f.path for f in MlflowClient().list_artifacts(run.info.run_id, "checkpoints"))
    assert names == [
        "checkpoints/index.json",
        "checkpoints/step_00000000.pt",
        "checkpoints/step_00000003.pt",
        "checkpoints/step_00000006.pt",
    ]
    assert {"train_loss", "train_acc", "test_loss", "test_acc"} <= set(run.data.metrics)


def test_diverging_run_fails_with_a_clear_message(mlflow_store):
    proc = mlflow_run("train", "dataset=digits", "model=mlp", "epochs=1", "lr=1e6", "momentum=0")
    assert proc.returncode != 0
    assert "training diverged at step" in proc.stderr
    (run,) = MlflowClient().search_runs(["0"])
    assert run.info.status == "FAILED"
    assert run.info.run_name == "mlp3-w16 digits ep1 lr1e+06 mom0 seed0"  # a failure, not a refusal: its name stays
    assert run.data.tags["tc.error"].startswith("training diverged at step")


def test_bad_value_is_rejected_before_training(mlflow_store):
    proc = mlflow_run("train", "dataset=imagenet")
    assert proc.returncode != 0
    assert "dataset='imagenet' is not valid; choose one of: fashion-mnist" in proc.stderr
    (run,) = MlflowClient().search_runs(["0"])  # the run `mlflow run` made is the refusal's record (issue 22)
    assert run.info.status == "FAILED" and run.info.run_name == "refused: dataset='imagenet' is not valid"
    assert run.data.tags["tc.error"].startswith("dataset='imagenet' is not valid; choose one of: fashion-mnist")


@pytest.mark.slow
def test_main_quick_start_trains_analyzes_and_prints_headline(mlflow_store):
    proc = mlflow_run("main", "epochs=2", "train_size=300", "width=4", "max_samples=60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "=== tc quick start ===" in proc.stdout and "tc_test" in proc.stdout
    runs = MlflowClient().search_runs(["0"])
    parent = next(r for r in runs if "tc.train_run_id" in r.data.tags)
    train = MlflowClient().get_run(parent.data.tags["tc.train_run_id"])
    assert train.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "tc_test" in train.data.metrics and "tc_test" in parent.data.metrics
