"""`test_every`: the test set evaluated every N epochs and always at the last (`tc.core.train`), and the seams that
read per-epoch test metrics: the resume check (`tc.tracking.jobs`), the pruning callback and the sweep's field
(`tc.sweep.trial`, `SweepConfig`), the per-epoch progress line."""

from __future__ import annotations

import json

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from entrypoints import sweep as sweep_ep
from entrypoints import train as train_ep
from tc.config import SweepConfig, TrainConfig
from tc.core.data import load_data
from tc.core.models import ModelSpec, build_model
from tc.core.train import ProgressReporter, train
from tc.sweep import study as studies
from tc.sweep import trial as sweep_trial
from tests.test_train import TINY, Killed, _checkpoints, _history, _run

TEST_KEYS = ("test_loss", "test_acc")


class _Record:
    """Each epoch's metrics, and an oracle of the test metrics of the model saved at each epoch end: one forward
    pass over the whole test set, in one batch (`evaluate` batches by 256)."""

    def __init__(self, data):
        self.data, self.epochs, self.oracle, self.final = data, [], {}, None

    def on_save(self, step, epoch, model, state, checkpoint):
        if state["pending_metrics"] is not None:  # an epoch end (step 0's save has none)
            with torch.inference_mode():
                logits = model.eval()(self.data.normalize(self.data.test_x))
            loss = torch.nn.functional.cross_entropy(logits, self.data.test_y).item()
            self.oracle[step] = (loss, (logits.argmax(1) == self.data.test_y).double().mean().item())
        self.final = {k: v.clone() for k, v in model.state_dict().items()}

    def on_epoch_end(self, step, epoch, metrics):
        self.epochs.append((step, epoch, dict(metrics)))


def _fit(**kw) -> _Record:
    base = dict(dataset="digits", model="mlp", width=64, batch_size=64, lr=0.1, schedule="constant")
    cfg = TrainConfig(**{**base, "weight_decay": 0.0, "train_size": 600, "device": "cpu", **kw})
    data = load_data("digits", train_size=cfg.train_size, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    rec = _Record(data)
    train(build_model(ModelSpec.of(cfg, data)), data, cfg, [rec])
    return rec


def test_by_default_every_epoch_has_the_test_metrics_of_its_saved_model():
    """test_every=1 (the default) is today's run: test_loss and test_acc at every epoch end, equal to a brute-force
    evaluation of the model saved there."""
    assert TrainConfig().test_every == 1
    rec = _fit(epochs=4)
    assert [e for _, e, _ in rec.epochs] == [1, 2, 3, 4]
    for step, _, m in rec.epochs:
        assert (m["test_loss"], m["test_acc"]) == pytest.approx(rec.oracle[step], abs=1e-6)


# converges at epoch 7 (checked below): not a multiple of 2 or 3, so the last epoch is evaluated only because it
# is the last; the capped run ends at epoch 5 (not a multiple of 2 or 3 either)
RUNS = {"converged": dict(epochs=60, target_loss=0.2), "capped": dict(epochs=5)}


@pytest.mark.parametrize("every", [0, 2, 3])
@pytest.mark.parametrize("run", sorted(RUNS))
def test_test_every_changes_nothing_but_which_epochs_have_test_metrics(run, every):
    """Against the default run: the same epochs, weights and every other metric (but the time); the test metrics
    exactly at the multiples of `every` and at the last epoch (the criterion met or the cap), with the same values."""
    ref, rec = _fit(**RUNS[run]), _fit(**RUNS[run], test_every=every)
    last = len(ref.epochs)
    assert last == (7 if run == "converged" else 5) and last % 2 and last % 3
    assert [(s, e) for s, e, _ in rec.epochs] == [(s, e) for s, e, _ in ref.epochs]
    for (_, epoch, m), (_, _, r) in zip(rec.epochs, ref.epochs, strict=True):
        tested = epoch == last or (every > 0 and epoch % every == 0)
        assert all((k in m) == tested for k in TEST_KEYS), (epoch, sorted(m))
        drop = {"train_seconds", *TEST_KEYS}
        assert {k: v for k, v in m.items() if k not in drop} == {k: v for k, v in r.items() if k not in drop}
        assert {k: m[k] for k in TEST_KEYS if k in m} == {k: r[k] for k in TEST_KEYS if tested}
    assert ref.epochs[-1][2]["test_acc"] == rec.epochs[-1][2]["test_acc"]
    if run == "converged":
        assert rec.epochs[-1][2]["converged"] == 1.0
    assert all(torch.equal(rec.final[k], ref.final[k]) for k in ref.final)


class _Saved:
    """Every state the loop saves (checkpoint or epoch end): the step, a copy of the model's state dict (weights and
    BatchNorm running statistics) and the epoch's metrics, if any."""

    def __init__(self):
        self.saves = []

    def on_save(self, step, epoch, model, state, checkpoint):
        self.saves.append((step, {k: v.clone() for k, v in model.state_dict().items()}, state["pending_metrics"]))


def test_test_every_changes_no_state_of_a_batchnorm_model():
    """The quick start trains a ResNet (BatchNorm) with test_every=0 (issue 21) and claims the same run as at 1: the
    test evaluations run in eval mode, so no BatchNorm running statistic, weight, checkpoint or metric but the
    time and the test ones of the earlier epochs differs; the final test metrics are equal."""
    base = dict(dataset="digits", model="resnet20", depth=8, width=4, batch_size=64, epochs=2, train_size=128)
    runs = {}
    for every in (0, 1):
        cfg = TrainConfig(**base, checkpoint_every=1, test_every=every, device="cpu")
        data = load_data("digits", train_size=cfg.train_size, seed=cfg.seed)
        torch.manual_seed(cfg.seed)
        model = build_model(ModelSpec.of(cfg, data))
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        train(model, data, cfg, [saved := _Saved()])
        runs[every] = saved.saves
    assert [s for s, _, _ in runs[0]] == [s for s, _, _ in runs[1]] and len(runs[0]) > 4
    drop = {"train_seconds", *TEST_KEYS}
    for (_, state0, m0), (_, state1, m1) in zip(runs[0], runs[1], strict=True):
        assert state0.keys() == state1.keys() and any("running_mean" in k for k in state0)
        assert all(torch.equal(state0[k], state1[k]) for k in state0)
        assert (m0 is None) == (m1 is None)
        if m0 is not None:
            assert {k: v for k, v in m0.items() if k not in drop} == {k: v for k, v in m1.items() if k not in drop}
    final0, final1 = runs[0][-1][2], runs[1][-1][2]
    assert {k: final0[k] for k in TEST_KEYS} == {k: final1[k] for k in TEST_KEYS}


def test_test_every_is_a_nonnegative_count():
    with pytest.raises(ValueError, match="test_every"):
        TrainConfig(test_every=-1)


def test_a_run_killed_after_an_epoch_without_test_metrics_resumes_without_logging_them_twice(
    mlflow_store, tmp_path, monkeypatch
):
    """The resume state of epoch 1 (step 3), whose metrics were logged, then the kill (after the step-4 checkpoint,
    before its state): with test_every=2 epoch 1 logs no test_acc, so the resume must look for a key every epoch
    logs, or it logs epoch 1's metrics again (a second point at step 3 in every curve)."""
    argv = [*TINY, "--checkpoint_every", "2", "--test_every", "2"]
    reference = _run(argv)
    assert [s for s, _ in _history(reference)["test_acc"]] == [6, 9]  # epoch 2, and epoch 3: the last

    real = MlflowClient.log_artifact

    def flaky(self, run_id, local_path, artifact_path=None):
        real(self, run_id, local_path, artifact_path)
        if local_path.endswith("step_00000004.pt"):
            raise Killed

    with monkeypatch.context() as fault, pytest.raises(Killed):
        fault.setattr(MlflowClient, "log_artifact", flaky)
        train_ep.main(argv)
    killed = MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])[0].info.run_id
    assert train_ep.main(["--resume_run_id", killed]) == 0
    assert _checkpoints(killed, tmp_path / "k") == _checkpoints(reference, tmp_path / "r")
    assert _history(killed) == _history(reference)  # same values at the same steps, none twice


def test_the_epoch_line_prints_the_test_metrics_only_where_the_epoch_has_them(capsys):
    progress = ProgressReporter(TrainConfig(epochs=2), n_train=256)
    progress.on_epoch_end(2, 1, {"train_loss": 0.5, "train_acc": 0.75})
    progress.on_epoch_end(4, 2, {"train_loss": 0.25, "train_acc": 0.875, "test_loss": 0.375, "test_acc": 0.625})
    progress.close()
    first, second = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert "train_loss 0.5000" in first and "test" not in first
    assert "train_acc 0.8750  test_loss 0.3750  test_acc 0.6250" in second


# ---- the sweep -------------------------------------------------------------------------------------------


def test_a_pruner_with_test_every_0_is_refused_naming_both():
    assert SweepConfig().test_every == 0 and SweepConfig(pruner="median", test_every=1).test_every == 1
    with pytest.raises(ValueError, match="pruner=median needs test_every >= 1"):
        SweepConfig(pruner="median")
    with pytest.raises(ValueError, match="test_every"):
        SweepConfig(test_every=-1)
    cfg = SweepConfig(dataset="digits", model="mlp", test_every=3)
    assert sweep_trial.trial_config(cfg, {}).test_every == 3  # every trial trains with the sweep's value


def test_the_sweep_command_refuses_a_pruner_with_test_every_0_before_any_trial(mlflow_store, tmp_path, capsys):
    assert sweep_ep.main(["--pruner", "median", "--storage", str(tmp_path / "j.log")]) == 2
    assert "pruner=median needs test_every >= 1" in capsys.readouterr().err
    assert not (tmp_path / "j.log").exists()


def test_pruning_reports_only_the_epochs_that_have_test_accuracy():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    pruning = sweep_trial.Pruning(trial)
    for epoch in (1, 2, 3):  # test_every=2 over 3 epochs: test_acc at 2 and at the last, 3
        pruning.on_epoch_end(
            10 * epoch, epoch, {"train_loss": 1.0 / epoch, **({"test_acc": 0.1 * epoch} if epoch > 1 else {})}
        )
    study.tell(trial, 0.3)
    assert study.trials[0].intermediate_values == pytest.approx({2: 0.2, 3: 0.3})


BASE = ["--dataset", "digits", "--model", "mlp", "--epochs", "3", "--max_samples", "40", "--anisotropy", "false"]
BASE += ["--seeds", "1", "--target_loss", "0", "--bootstrap", "100", "--n_trials", "1"]
SPACE = {"lr": {"type": "categorical", "choices": [0.05]}, "train_size": {"type": "categorical", "choices": [600]}}


def _trial(tmp_path, name: str, *extra: str) -> tuple[optuna.trial.FrozenTrial, dict[str, float]]:
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    storage = str(tmp_path / f"{name}.log")
    assert sweep_ep.main([*BASE, "--search_space", str(tmp_path / "space.json"), "--storage", storage, *extra]) == 0
    (trial,) = optuna.load_study(study_name="tc-sweep", storage=studies.open_storage(storage)).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    return trial, MlflowClient().get_run(trial.user_attrs["mlflow_run_id"]).data.metrics


def test_a_trial_at_test_every_0_has_the_same_test_accuracy_and_analysis_as_at_1(mlflow_store, tmp_path):
    """The sweep's default (0) against per-epoch evaluation (1), same seed: the trial's value, its final metrics and
    every metric of its analysis are the same, but the times (and the costs in epochs divided by them); and a
    pruned sweep (pruner=median, test_every=2) reports the epochs that have test accuracy and does not crash."""
    every0, m0 = _trial(tmp_path, "zero")
    every1, m1 = _trial(tmp_path, "one", "--test_every", "1")
    timed = {k for k in m1 if "seconds" in k or "cost" in k}
    assert len(m1) > 40 and set(m0) == set(m1)
    assert {k: v for k, v in m0.items() if k not in timed} == {k: v for k, v in m1.items() if k not in timed}
    assert every0.value == every1.value == m1["test_acc"]
    for trial, evaluations in ((every0, 1), (every1, 3)):  # 3 epochs: the last only, or every one
        assert len(MlflowClient().get_metric_history(trial.user_attrs["mlflow_run_id"], "test_acc")) == evaluations
    pruned, _ = _trial(tmp_path, "pruned", "--pruner", "median", "--test_every", "2")
    assert sorted(pruned.intermediate_values) == [2, 3]  # epoch 2, and the last


def test_a_stored_report_from_before_test_every_reads_back_as_evaluated_every_epoch(tmp_path):
    """A report's settings.json written before `test_every` existed has no such key: its sweep evaluated the test
    set at every epoch, so it reads back as test_every=1 (not the default 0), and a stored pruner=median (which
    SweepConfig refuses at test_every=0) still re-renders."""
    from dataclasses import asdict

    from tc.report import files, results
    from tests.test_report import _stored_report

    _stored_report(tmp_path)
    path = tmp_path / "report" / "settings.json"
    stored = json.loads(path.read_text())
    (rec,) = stored["environments"].values()
    assert rec["sweep_config"].pop("test_every") == 0  # a report of today stores the value it ran with
    path.write_text(json.dumps(stored))
    cfg_of = lambda: results.sweeps_of(files.from_tables(tmp_path / "report"))[0].cfg  # noqa: E731
    assert cfg_of().test_every == 1
    rec["sweep_config"]["pruner"] = "median"
    path.write_text(json.dumps(stored))
    assert asdict(cfg_of()) == {**rec["sweep_config"], "test_every": 1}
