"""Run names, descriptions and tags (tc.tracking.labels), and their MLflow write-out (tc.tracking.ui)."""

import math
from dataclasses import replace

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
        "resnet20-w16 fashion-mnist noise0.2 freeze2@1 seed0"
    )
    assert runinfo.analyze_name("mlp3-w64 digits seed0") == "analyze mlp3-w64 digits seed0"
    assert runinfo.sweep_name("fmnist") == "sweep fmnist"
    assert runinfo.trial_name(7) == "trial 7" and runinfo.trial_name(7, seed=1) == "trial 7 seed1"


def test_run_names_carry_every_setting_that_differs_from_the_default():
    """Issue 22: two runs that differ only in lr got the same name. A name now lists each setting that changes what
    is trained and differs from TrainConfig's default (the dataclass owns the defaults), in a fixed order, between
    the data set and the seed; settings that do not change the model (device, data, checkpointing) stay out."""
    base = TrainConfig(dataset="digits", model="mlp", width=64)
    assert runinfo.run_name(base) == "mlp3-w64 digits seed0"
    assert runinfo.run_name(replace(base, lr=0.02)) == "mlp3-w64 digits lr0.02 seed0"  # the example
    assert runinfo.run_name(replace(base, lr=0.02)) != runinfo.run_name(replace(base, lr=0.05))
    every = replace(
        base, epochs=30, target_loss=0.01, batch_size=32, lr=0.02, momentum=0.5, weight_decay=1e-5,
        optimizer="adam", schedule="constant", label_noise=0.1, augment=True, train_size=500, seed=2,
    )  # fmt: skip
    assert runinfo.run_name(every) == (
        "mlp3-w64 digits ep30 loss0.01 bs32 lr0.02 mom0.5 wd1e-05 adam constant-lr noise0.1 aug n500 seed2"
    )
    quiet = replace(base, device="cpu", data_dir="/data", download=True, checkpoint_every=7, freeze_epoch=3)
    quiet = replace(quiet, test_every=0)
    assert runinfo.run_name(quiet) == runinfo.run_name(base)  # these do not change what is trained
    # every TrainConfig field is decided: spelled when it differs, or named as left out (a new field must choose)
    fields = set(TrainConfig.__dataclass_fields__)
    assert fields == set(runinfo._SPELLINGS) | set(runinfo.NAME_LEAVES_OUT)
    # each setting alone changes the name: brute force over one changed value per spelled field
    changed = {"epochs": 6, "target_loss": 0.1, "batch_size": 64, "lr": 0.2, "momentum": 0.0, "weight_decay": 0.0}
    changed |= {"optimizer": "adam", "schedule": "step", "label_noise": 0.5, "augment": True, "train_size": 9}
    assert set(changed) == set(runinfo._SPELLINGS)
    names = {runinfo.run_name(replace(base, **{k: v})) for k, v in changed.items()}
    assert len(names) == len(changed) and runinfo.run_name(base) not in names


def test_a_refused_runs_name_is_short_and_says_what_is_wrong():
    said = "search space: train_size [2000] exceeds the 1438 training examples of digits; use values <= 1438"
    assert (
        runinfo.refused_name(said)
        == "refused: search space: train_size [2000] exceeds the 1438 training examples of digits"
    )
    long = runinfo.refused_name("run " + "0123456789abcdef" * 2 + " is FAILED, not FINISHED: its checkpoints " * 3)
    assert long.startswith("refused: run 0123") and long.endswith("…") and len(long) <= len("refused: ") + 90
    assert " " not in long[-3:-1]  # cut at a word
    assert runinfo.refused_name("  what  is wrong\nhow to fix it") == "refused: what is wrong"  # the first line
    assert runinfo.refused_name("") == "refused: no reason given"


def test_only_generated_names_are_replaced():
    assert runinfo.is_generated_name("polite-horse-192")
    assert runinfo.is_generated_name(None)
    assert not runinfo.is_generated_name("my baseline")
    assert not runinfo.is_generated_name("trial 7")


def test_descriptions_show_the_headline_numbers():
    text = runinfo.describe_train(TrainConfig(epochs=2), {"test_acc": 0.8123, "train_acc": 0.9})
    assert "resnet20-w16 fashion-mnist ep2 seed0" in text and "0.8123" in text and "0.9000" in text
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


def test_the_settings_that_change_a_score_are_in_the_tags_and_descriptions():
    """Issue 22: re-analysing with window=0.3 moved κ more than an lr change did, and only a tag told the two
    analyses apart. The settings that change a score are one tag (a column of the runs table) and a line of both
    descriptions: window, checkpoints, cuts and max_samples always, the others when not at their defaults."""
    wide, narrow = AnalyzeConfig(run_id="r"), AnalyzeConfig(run_id="r", window=0.3, seed=4, max_samples=200)
    tags = runinfo.analysis_tags(wide)
    assert tags["tc.analysis.window"] == "0.5" and runinfo.analysis_tags(narrow)["tc.analysis.window"] == "0.3"
    assert tags["tc.analysis_settings"] == "window=0.5 checkpoints=all cuts=stages max_samples=1000"
    assert runinfo.analysis_tags(narrow)["tc.analysis_settings"] == (
        "window=0.3 checkpoints=all cuts=stages max_samples=200 seed=4"
    )
    # what the descriptions show, read back from a run's tags (the training run's description reads them there)
    settings = {c: runinfo.score_settings(runinfo.settings_from_tags(runinfo.analysis_tags(c))) for c in (wide, narrow)}
    assert settings[narrow] == {
        "window": "0.3",
        "checkpoints": "all",
        "cuts": "stages",
        "max_samples": "200",
        "seed": "4",
    }
    texts = [runinfo.describe_analysis("x", "#/r", {"tc_test": 0.5}, settings[c]) for c in (wide, narrow)]
    assert "`window=0.5`" in texts[0] and "`window=0.3`" in texts[1] and "`seed=4`" in texts[1]
    train = [runinfo.describe_train(TrainConfig(), {}, {"tc_test": 0.5}, settings[c]) for c in (wide, narrow)]
    assert "`window=0.5`" in train[0] and "`window=0.3` `checkpoints=all`" in train[1]
    assert "window" not in runinfo.describe_train(TrainConfig(), {}, {}, settings[wide])  # no analysis, no settings
    # every setting that changes a score is an AnalyzeConfig field, and a setting that only adds or removes scores
    # (or says where to run) is not one of them
    # a re-analysis at the defaults after one with seed=4 (tags overwrite tags on the run): no stale `seed=4`
    rerun = {**runinfo.analysis_tags(narrow), **runinfo.analysis_tags(wide)}
    assert runinfo.score_settings(runinfo.settings_from_tags(rerun)) == settings[wide]
    assert rerun["tc.analysis_settings"] == tags["tc.analysis_settings"]
    assert set(runinfo.SCORE_SETTINGS) <= set(AnalyzeConfig.__dataclass_fields__)
    assert not {"splits", "matrix", "phases", "device", "outputs", "data_dir"} & set(runinfo.SCORE_SETTINGS)


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
