"""The training loop and the train entry point, in process, on a private MLflow store."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from entrypoints import train as train_ep
from tc.config import TrainConfig
from tc.core import checkpoints as ck
from tc.core.data import load_data
from tc.core.models import ModelSpec, build_model
from tc.core.train import DivergenceError, lr_at, train
from tc.tracking import checkpoints
from tc.tracking import client as tc_client

TINY = [
    "--dataset",
    "digits",
    "--model",
    "mlp",
    "--width",
    "16",
    "--epochs",
    "3",
    "--batch_size",
    "256",
    "--train_size",
    "600",
]  # 3 steps per epoch


def _run(argv) -> str:
    assert train_ep.main(argv) == 0
    return MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])[0].info.run_id


def _checkpoints(run_id, tmp) -> dict[int, str]:
    """step -> sha256 as listed in the run's index, after verifying every file against it."""
    local = Path(MlflowClient().download_artifacts(run_id, ck.ARTIFACT_DIR, str(tmp)))
    index = ck.read_index(local / ck.INDEX_FILE)
    for e in index:
        ck.load_checkpoint(local / e.file, e.sha256)
    assert sorted(p.name for p in local.glob("*.pt")) == [e.file for e in index]
    return {e.step: e.sha256 for e in index}


def _history(run_id) -> dict[str, list[tuple[int, float]]]:
    c = MlflowClient()
    return {
        k: [(m.step, m.value) for m in c.get_metric_history(run_id, k)]
        for k in ("train_loss", "train_acc", "test_loss", "test_acc", "epoch", "lr")
    }


def test_lr_schedules():
    cfg = TrainConfig(lr=1.0, schedule="cosine")
    assert lr_at(0, 100, cfg) == 1.0 and math.isclose(lr_at(50, 100, cfg), 0.5) and lr_at(100, 100, cfg) < 1e-12
    step = TrainConfig(lr=1.0, schedule="step")
    assert [lr_at(s, 100, step) for s in (49, 50, 75)] == pytest.approx([1.0, 0.1, 0.01])
    assert lr_at(99, 100, TrainConfig(lr=0.3, schedule="constant")) == 0.3


def test_train_logs_every_checkpoint_config_and_metrics(mlflow_store, tmp_path):
    run_id = _run([*TINY, "--checkpoint_every", "2"])
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset"] == "digits" and run.data.params["depth"] == "3"
    config = json.loads((Path(MlflowClient().download_artifacts(run_id, "config.json", str(tmp_path)))).read_text())
    assert config["width"] == 16 and config["data_dir"] is None
    steps = _checkpoints(run_id, tmp_path)
    assert sorted(steps) == [0, 2, 4, 6, 8, 9]  # init, every 2 steps, and the final step
    history = _history(run_id)
    assert [s for s, _ in history["test_acc"]] == [3, 6, 9]  # one point per epoch, at the global step
    assert [v for _, v in history["epoch"]] == [1, 2, 3]
    index = ck.read_index(Path(MlflowClient().download_artifacts(run_id, "checkpoints/index.json", str(tmp_path))))
    assert [e.epoch for e in index] == pytest.approx([0, 2 / 3, 4 / 3, 2, 8 / 3, 3])
    payload = ck.load_checkpoint(tmp_path / "checkpoints" / ck.filename(9))
    model = build_model(ModelSpec(**payload["model_spec"]))
    model.load_state_dict(payload["state_dict"])  # the checkpoint rebuilds its own architecture


def test_same_seed_gives_identical_checkpoints_and_other_seed_does_not(mlflow_store, tmp_path):
    a = _checkpoints(_run([*TINY, "--augment", "true"]), tmp_path / "a")
    b = _checkpoints(_run([*TINY, "--augment", "true"]), tmp_path / "b")
    c = _checkpoints(_run([*TINY, "--augment", "true", "--seed", "1"]), tmp_path / "c")
    assert a == b
    assert a[0] != c[0] and a[9] != c[9]


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in tc catches a BaseException."""


@pytest.mark.parametrize("where", ["mid_epoch_checkpoint", "before_epoch_metrics"])
def test_killed_run_resumes_to_the_same_checkpoints_and_metrics(mlflow_store, tmp_path, monkeypatch, where):
    argv = [
        *TINY,
        "--checkpoint_every",
        "2",
        "--augment",
        "true",
        "--model",
        "resnet20",
        "--depth",
        "8",
        "--width",
        "4",
    ]
    reference = _run(argv)

    calls = {"n": 0}
    if where == "mid_epoch_checkpoint":  # dies right after uploading the step-4 checkpoint, before its state
        real = MlflowClient.log_artifact

        def flaky(self, run_id, local_path, artifact_path=None):
            real(self, run_id, local_path, artifact_path)
            if local_path.endswith(ck.filename(4)):
                raise Killed

        target, name = MlflowClient, "log_artifact"
    else:  # dies after the epoch-2 state was saved, before epoch 2's metrics reached MLflow
        real = tc_client.log_metrics

        def flaky(run_id, metrics, step):
            calls["n"] += 1
            if calls["n"] == 2:
                raise Killed
            real(run_id, metrics, step)

        target, name = checkpoints, "log_metrics"
    # only the fault is undone afterwards: monkeypatch.undo() would also undo the store fixture's settings
    with monkeypatch.context() as fault, pytest.raises(Killed):
        fault.setattr(target, name, flaky)
        train_ep.main(argv)
    killed = MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])[0].info.run_id
    assert MlflowClient().get_run(killed).info.status == "FAILED"

    assert train_ep.main(["--resume_run_id", killed]) == 0
    assert MlflowClient().get_run(killed).info.status == "FINISHED"
    assert _checkpoints(killed, tmp_path / "k") == _checkpoints(reference, tmp_path / "r")
    assert _history(killed) == _history(reference)  # same values at the same steps, none twice


@pytest.mark.skipif(os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2", reason="this process is already capped at AVX2")
def test_killed_run_resumes_the_same_when_capped_at_avx2():
    """The resume tests again, in a fresh interpreter whose oneDNN and ATen are capped at AVX2 (issue 11: what
    an AVX2-only CPU runs; the caps must be set before torch is imported); with the dropout model's exact
    resumes of tests/test_resume_rng.py (issue 19.11)."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    rng_tests = str(Path(__file__).with_name("test_resume_rng.py"))
    which = "killed_run_resumes or (bit_for_bit and cpu) or without_the_pause"  # the CPU caps: CPU runs only
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, rng_tests, "-k", which]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:]
    assert "5 passed" in p.stdout


def test_resuming_a_finished_run_is_refused(mlflow_store, capsys):
    run_id = _run(TINY)
    assert train_ep.main(["--resume_run_id", run_id]) == 2  # refused
    assert "already FINISHED" in capsys.readouterr().err


def test_divergence_raises_in_the_loop():
    data = load_data("digits", train_size=200)
    cfg = TrainConfig(dataset="digits", model="mlp", lr=1e6, momentum=0.0, weight_decay=0.0, epochs=3)
    torch.manual_seed(0)
    model = build_model(ModelSpec("mlp", 3, 64, 1, 8, 10))
    with pytest.raises(DivergenceError, match="diverged at step"):
        train(model, data, cfg)


def test_diverging_run_is_marked_failed_with_its_reason(mlflow_store, capsys):
    assert train_ep.main([*TINY, "--lr", "1e6", "--momentum", "0"]) == 1  # failed, not refused: its work started
    run = MlflowClient().search_runs(["0"])[0]
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags["tc.error"] and "diverged" in capsys.readouterr().err


def test_bad_parameter_exits_2_and_names_it(mlflow_store, capsys):
    assert train_ep.main(["--optimizer", "rmsprop"]) == 2
    assert "optimizer" in capsys.readouterr().err


class _Keep:
    def __init__(self):
        self.states = {}

    def on_save(self, step, epoch, model, state, checkpoint):
        if checkpoint:
            self.states[step] = {k: v.clone() for k, v in model.state_dict().items()}


def test_freezing_keeps_the_shallow_blocks_fixed_after_the_freeze_epoch():
    data = load_data("digits", train_size=256)
    cfg = TrainConfig(
        dataset="digits", model="resnet20", depth=8, width=4, epochs=3, batch_size=64, freeze_cut=2, freeze_epoch=1
    )
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet20", 8, 4, 1, 8, 10))
    keep = _Keep()
    train(model, data, cfg, [keep])
    s1, s3 = keep.states[4], keep.states[12]  # end of epoch 1 (freeze starts), end of training
    for key in s1:
        block = model.block_of(key)
        if block in ("stem", "block1"):
            assert torch.equal(s1[key], s3[key]), key  # weights and BatchNorm statistics alike
        elif key.endswith("weight") and "bn" not in key:
            assert not torch.equal(s1[key], s3[key]), key
    assert not torch.equal(keep.states[0]["blocks.stem.0.weight"], s1["blocks.stem.0.weight"])  # trained before
    with pytest.raises(ValueError, match="freeze_cut"):
        train(build_model(ModelSpec("resnet20", 8, 4, 1, 8, 10)), data, TrainConfig(freeze_cut=5, epochs=1))


class Counting:
    """A callback that records every event of the loop."""

    def __init__(self):
        self.steps, self.saves = [], []

    def on_step(self, step, loss):
        self.steps.append(step)

    def on_save(self, step, epoch, model, state, checkpoint):
        self.saves.append((step, {k: v.clone() for k, v in state["model"].items()}, state))


def test_training_loop_makes_one_optimizer_update_per_step_and_none_when_no_step_is_left(monkeypatch):
    data = load_data("digits", train_size=256)
    cfg = TrainConfig(dataset="digits", model="mlp", width=16, epochs=2, batch_size=64)  # 4 steps per epoch
    updates = []
    real_step = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: (updates.append(1), real_step(self, *a, **k))[1])
    torch.manual_seed(0)
    model = build_model(ModelSpec("mlp", 3, 16, 1, 8, 10))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    counting = Counting()
    train(model, data, cfg, [counting])
    assert len(updates) == 8 and counting.steps == list(range(1, 9))
    first_step, first_weights, _ = counting.saves[0]
    assert first_step == 0 and all(torch.equal(first_weights[k], init[k]) for k in init)  # step 0 = init
    last_step, last_weights, last_state = counting.saves[-1]
    assert last_step == 8 and any(not torch.equal(last_weights[k], init[k]) for k in init)
    # resumed at its last step, nothing is left: no update, no step event, the weights stay as they were
    updates.clear()
    again = Counting()
    resumed = build_model(ModelSpec("mlp", 3, 16, 1, 8, 10))
    train(resumed, data, cfg, [again], resume_state=last_state)
    assert updates == [] and again.steps == []
    assert all(torch.equal(resumed.state_dict()[k].cpu(), last_weights[k]) for k in last_weights)


# ---- the stopping criterion (target_loss) ---------------------------------------------------------------


class _Record:
    def __init__(self):
        self.epochs, self.checkpoints = [], []

    def on_epoch_end(self, step, epoch, metrics):
        self.epochs.append((step, dict(metrics)))

    def on_save(self, step, epoch, model, state, checkpoint):
        if checkpoint:
            self.checkpoints.append(step)


def _fit(**kw):
    base = dict(dataset="digits", model="mlp", width=64, batch_size=64, lr=0.1, schedule="constant")
    cfg = TrainConfig(**{**base, "weight_decay": 0.0, "train_size": 600, "device": "cpu", **kw})
    data = load_data("digits", train_size=cfg.train_size, label_noise=cfg.label_noise, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(ModelSpec.of(cfg, data))
    rec = _Record()
    train(model, data, cfg, [rec])
    return cfg, data, model, rec


def test_target_loss_stops_at_the_first_epoch_that_reaches_it_before_the_cap():
    _, data, model, rec = _fit(epochs=60, target_loss=0.05)  # 10 steps per epoch
    steps = [s for s, _ in rec.epochs]
    last = rec.epochs[-1][1]
    assert last["converged"] == 1.0 and last["epochs_trained"] == len(rec.epochs) < 60
    assert last["train_eval_loss"] <= 0.05 < min(m["train_eval_loss"] for _, m in rec.epochs[:-1])
    assert rec.checkpoints[-1] == steps[-1] == 10 * len(rec.epochs)  # the stopping step is a checkpoint
    # the criterion is the cross-entropy of the saved model on the whole training set, eval mode (oracle)
    with torch.no_grad():
        logits = model.eval()(data.normalize(data.train_x))
    assert last["train_eval_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, data.train_y).item())
    assert all("converged" not in m for _, m in rec.epochs[:-1])


def test_an_unreachable_target_stops_at_the_cap_with_converged_0():
    _, _, _, rec = _fit(epochs=2, target_loss=1e-9)
    last = rec.epochs[-1][1]
    assert last["converged"] == 0.0 and last["epochs_trained"] == 2 and rec.epochs[-1][0] == 20
    assert last["train_eval_loss"] > 1e-9


def test_without_target_loss_every_epoch_runs_and_clean_train_accuracy_is_logged():
    _, data, model, rec = _fit(epochs=2, label_noise=0.5)
    assert len(rec.epochs) == 2 and "converged" not in rec.epochs[-1][1]
    assert "train_eval_loss" not in rec.epochs[-1][1]
    with torch.no_grad():
        pred = model.eval()(data.normalize(data.train_x)).argmax(1)
    clean = (pred == data.train_y_clean).double().mean().item()  # brute force, against the ORIGINAL labels
    assert rec.epochs[-1][1]["train_acc_clean"] == pytest.approx(clean)
    assert (data.train_y != data.train_y_clean).any()  # so the clean accuracy is not the noisy one by design


def test_target_loss_and_epochs_edge_values_are_refused():
    with pytest.raises(ValueError, match="target_loss"):
        TrainConfig(target_loss=-0.1)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0, target_loss=0.01)
    with pytest.raises(ValueError, match="target_loss"):
        TrainConfig(target_loss=float("nan"))


def test_a_converged_run_logs_converged_and_epochs_trained(mlflow_store, tmp_path):
    argv = [*TINY[:-2], "--train_size", "600", "--width", "64", "--batch_size", "64", "--lr", "0.1"]
    argv += ["--schedule", "constant", "--weight_decay", "0", "--epochs", "60", "--target_loss", "0.05"]
    run_id = _run(argv)
    m = MlflowClient().get_run(run_id).data.metrics
    assert m["converged"] == 1.0 and 1 <= m["epochs_trained"] < 60 and m["train_eval_loss"] <= 0.05
    assert "train_acc_clean" in m
    steps = _checkpoints(run_id, tmp_path)
    assert max(steps) == 10 * m["epochs_trained"]


def test_a_resume_state_saved_at_the_stopping_step_does_not_train_on():
    """A crash after the stopping epoch's state was saved, before the run was marked FINISHED: resuming
    from that state must not train past the step where the criterion was met."""

    class LastState(_Record):
        def on_save(self, step, epoch, model, state, checkpoint):
            super().on_save(step, epoch, model, state, checkpoint)
            self.state = state

    cfg = TrainConfig(
        dataset="digits", model="mlp", width=64, batch_size=64, lr=0.1, schedule="constant", weight_decay=0.0,
        train_size=600, device="cpu", epochs=60, target_loss=0.05,
    )  # fmt: skip
    data = load_data("digits", train_size=600, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    rec = LastState()
    train(build_model(ModelSpec.of(cfg, data)), data, cfg, [rec])
    assert rec.state["pending_metrics"]["converged"] == 1.0 and rec.state["step"] < 600
    again = _Record()
    train(build_model(ModelSpec.of(cfg, data)), data, cfg, [again], resume_state=rec.state)
    assert again.epochs == [] and again.checkpoints == []


def test_phase_windows_and_matched_fractions_for_runs_of_different_lengths():
    from tc.core.consistency import phase_windows, steps_at_fractions

    short, long_ = [0, 10, 20, 30, 40, 50, 60], list(range(0, 130, 10))
    ws, wl = phase_windows(short), phase_windows(long_)
    assert ws == {"early": [1, 2], "middle": [3, 4], "late": [5]}  # steps 10,20 | 30,40 | 50 (60 is final)
    assert [long_[i] for i in wl["early"]] == [10, 20, 30, 40] and [long_[i] for i in wl["late"]] == [90, 100, 110]
    for name in ws:  # matched fractions of training, whatever the length
        fs = [short[i] / short[-1] for i in ws[name]]
        fl = [long_[i] / long_[-1] for i in wl[name]]
        assert max(fs) <= min(fl) + 1 / 3 and min(fs) >= max(fl) - 1 / 3
    assert steps_at_fractions(long_, [0.0, 0.25, 0.5, 1.0]) == [0, 30, 60, 120]
    assert steps_at_fractions([0, 10, 20], [0.25]) == [0]  # tie (5 from 0 and 10): the earlier one
    with pytest.raises(ValueError, match="at least 2"):
        phase_windows([0])
    with pytest.raises(ValueError, match="holds no checkpoint"):
        phase_windows([0, 30])  # only the final checkpoint after init: early/middle/late are empty
    with pytest.raises(ValueError, match="no checkpoints"):
        steps_at_fractions([], [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        steps_at_fractions([0, 10], [1.5])


def test_checkpoints_fractions_selects_matched_points_of_runs_of_different_lengths():
    from tc.analysis.splits import select_steps
    from tc.config import AnalyzeConfig

    short, long_ = list(range(0, 145, 8)), list(range(0, 1361, 8))
    s, lg = select_steps("fractions:5", short), select_steps("fractions:5", long_)
    assert s[0] == lg[0] == 0 and s[-1] == 144 and lg[-1] == 1360 and len(s) == len(lg) == 5
    assert [round(v / 144, 1) for v in s] == [round(v / 1360, 1) for v in lg] == [0.0, 0.2, 0.5, 0.7, 1.0]
    assert select_steps("fractions:9", [0, 10, 20]) == [0, 10, 20]  # too few checkpoints: each once
    for bad in ("fractions:1", "fractions:x"):
        with pytest.raises(ValueError, match="fractions:N"):
            AnalyzeConfig(run_id="r", checkpoints=bad)
