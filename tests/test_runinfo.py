"""Run names, descriptions and tags (tc.tracking.labels), and their MLflow write-out (tc.tracking.ui)."""

import math

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tc.config import AnalyzeConfig, TrainConfig
from tc.sweep import summary as sweep  # the sweep's trials table uses the one gen_gap
from tc.tracking import client as tc_client
from tc.tracking import labels as runinfo
from tc.tracking import ui


def test_run_names():
    assert runinfo.run_name(TrainConfig()) == "resnet20-w16 fashion-mnist seed0"
    assert runinfo.run_name(TrainConfig(model="resnet20", depth=8, width=4, dataset="digits", seed=3)) == (
        "resnet8-w4 digits seed3"
    )
    assert runinfo.run_name(TrainConfig(model="vgg", width=8)) == "vgg6-w8 fashion-mnist seed0"
    assert runinfo.run_name(TrainConfig(model="torchvision:resnet18", dataset="digits")) == (
        "torchvision:resnet18 digits seed0"
    )
    assert runinfo.run_name(TrainConfig(label_noise=0.2, freeze_cut=2)) == (
        "resnet20-w16 fashion-mnist seed0 noise0.2 freeze2@1"
    )
    assert runinfo.analyze_name("mlp3-w64 digits seed0") == "analyze mlp3-w64 digits seed0"
    assert runinfo.sweep_name("fmnist") == "sweep fmnist"
    assert runinfo.trial_name(7) == "trial 7" and runinfo.trial_name(7, seed=1) == "trial 7 seed1"


def test_only_generated_names_are_replaced():
    assert runinfo.is_generated_name("polite-horse-192")
    assert runinfo.is_generated_name(None)
    assert not runinfo.is_generated_name("my baseline")
    assert not runinfo.is_generated_name("trial 7")


def test_descriptions_show_the_headline_numbers():
    text = runinfo.describe_train(TrainConfig(epochs=2), {"test_acc": 0.8123, "train_acc": 0.9})
    assert "resnet20-w16 fashion-mnist seed0" in text and "0.8123" in text and "0.9000" in text
    assert "No accuracy" in runinfo.describe_train(TrainConfig(), {})
    analysed = runinfo.describe_train(TrainConfig(), {"test_acc": 0.8}, {"tc_kappa_test": 0.41, "tc_test": 0.7})
    assert "`tc_kappa_test` | 0.4100" in analysed and "`tc_test` | 0.7000" in analysed
    text = runinfo.describe_analysis("x", "#/experiments/1/runs/abc", {"tc_full_test": float("nan"), "test_acc": 0.5})
    assert "[x](#/experiments/1/runs/abc)" in text and "n/a" in text and "0.5000" in text
    assert "tc_kappa_test" not in text  # absent measures are not listed
    assert "3 finished" in runinfo.describe_sweep("s", 3, {"trial": 2, "test_acc": 0.75})


def test_tags_one_per_setting():
    tags = runinfo.analysis_tags(AnalyzeConfig(run_id="r", cuts="1,2", anisotropy=False))
    assert tags["tc.analysis.cuts"] == "1,2"
    assert tags["tc.analysis.bn_mode"] == "splice"
    assert tags["tc.analysis.anisotropy"] == "false"
    assert tags["tc.analysis.reference_run_id"] == "none"
    assert "tc.analysis.run_id" not in tags
    assert runinfo.train_tags(TrainConfig(dataset="digits", model="mlp")) == {
        "tc.dataset": "digits",
        "tc.model": "mlp",
        "tc.model_label": "mlp3-w16",
        "tc.seed": "0",
    }


def test_trial_attrs_are_json_safe_and_include_the_gap():
    # A trial run's metrics: training's whole-set accuracies (train_acc on the noisy labels it was trained on,
    # train_acc_clean on the original ones) and the analysis's acc_<split> on its samples. The dashboard's
    # gen_gap is the sweep's one definition (`tc.tracking.labels.gen_gap`, trials.csv): clean train minus test, whole
    # sets; not the analysis samples' acc_train - acc_test (0.3 here), nor the noisy train_acc (0.29).
    metrics = {"test_acc": 0.7, "train_acc": 0.99, "train_acc_clean": 0.88, "tc_test": math.nan}
    metrics |= {"acc_train": 0.9, "acc_test": 0.6, "x": 1}
    attrs = runinfo.trial_attrs(metrics)
    assert attrs == pytest.approx({"test_acc": 0.7, "gen_gap": 0.18})
    assert attrs["gen_gap"] == sweep.gen_gap(metrics)
    # a run without train_acc_clean has no gap (NaN, left out as not JSON-safe), not the samples' proxy
    assert runinfo.trial_attrs({"test_acc": 0.7, "acc_train": 0.9, "acc_test": 0.6}) == {"test_acc": 0.7}


def test_gen_gap_lives_in_a_light_module_and_the_sweeps_trials_table_uses_it():
    # trial_attrs is on the light path (runinfo imports no pandas or scipy); tc.sweep.summary uses that very function
    import subprocess
    import sys

    code = (
        "import sys, tc.tracking.labels as r; a = r.trial_attrs({'test_acc': 0.7, 'train_acc_clean': 0.9}); "
        "assert abs(a['gen_gap'] - 0.2) < 1e-12, a; "
        "heavy = [m for m in ('pandas', 'scipy', 'torch', 'optuna') if m in sys.modules]; assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sweep.gen_gap is runinfo.gen_gap


def test_labels_land_on_the_run_and_filter_one_by_one(mlflow_store):
    cfg = TrainConfig(dataset="digits", model="mlp", width=8)
    with mlflow.start_run() as run:
        rid = run.info.run_id
        tc_client.log_config(rid, cfg)
        ui.label_train_run(rid, cfg)
    client = MlflowClient()
    got = client.get_run(rid)
    assert got.info.run_name == "mlp3-w8 digits seed0"
    assert "mlp3-w8 digits seed0" in got.data.tags["mlflow.note.content"]
    (hit,) = client.search_runs(["0"], "tags.`tc.dataset` = 'digits' and tags.`tc.model` = 'mlp'")
    assert hit.info.run_id == rid
    with mlflow.start_run(run_name="my own name") as run:
        ui.label_train_run(run.info.run_id, cfg)
    assert client.get_run(run.info.run_id).info.run_name == "my own name"  # a user's name is kept


def test_default_experiment_is_tc_unless_chosen(mlflow_store, monkeypatch):
    from mlflow.tracking import fluent

    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    tc_client.use_default_experiment()
    with mlflow.start_run() as run:
        pass
    assert MlflowClient().get_experiment(run.info.experiment_id).name == "tc"
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")  # mlflow.set_experiment exported the `tc` id
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    MlflowClient().create_experiment("mine")
    tc_client.use_default_experiment()
    with mlflow.start_run() as run:
        pass
    assert MlflowClient().get_experiment(run.info.experiment_id).name == "mine"
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
