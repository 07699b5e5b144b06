"""Resume is exact or says it is not (issue 19.11): the resume state carries every random stream the loop
draws from, so a model with dropout resumed after a kill equals the uninterrupted run bit for bit; a state
without them warns; and a resumed run's time per epoch counts only active training time."""

from __future__ import annotations

import io
import random
import time
import warnings

import numpy as np
import pytest
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from torch import nn

from tc.config import TrainConfig
from tc.core import checkpoints as ck
from tc.core.data import load_data
from tc.core.models import ModelSpec, build_model
from tc.core.train import ResumeNotExactWarning, restore_rng_state, rng_state, train
from tc.tracking import checkpoints, resume, writers
from tc.tracking import client as tc_client
from tc.tracking.jobs import train_into_run
from tc.tracking.resume import check_rng_state, check_train_seconds

DROPOUT = "tests.test_resume_rng:dropout_net"  # a user factory, as `-P model=` names one


def dropout_net(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """An MLP whose training draws from torch's global RNG at every step (two dropout layers)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size**2, 32),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, 32),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, num_classes),
    )


class Killed(BaseException):
    """Stands in for SIGKILL right after a resume state was saved: nothing in tc catches a BaseException."""


class Keep:
    """Records the weights at every checkpoint; with `kill_at`, dies right after saving that step's state."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at, self.weights, self.state = kill_at, {}, None

    def on_save(self, step, epoch, model, state, checkpoint):
        if checkpoint:
            self.weights[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if step == self.kill_at:
            self.state = state
            raise Killed


def _cfg(device: str = "cpu") -> TrainConfig:
    return TrainConfig(
        dataset="digits", model=DROPOUT, epochs=3, batch_size=128, train_size=600, checkpoint_every=2, device=device
    )  # 5 steps per epoch: checkpoints at 0, 2, 4, 5 (epoch end), 6, 8, 10, ...


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]  # on a GPU: dropout draws from CUDA's RNG


def _train(cfg: TrainConfig, data, callbacks, resume_state=None) -> nn.Module:
    torch.manual_seed(cfg.seed)  # as tc.tracking.jobs.train_into_run: seed, build (init draws from the RNG), train
    model = build_model(ModelSpec.of(cfg, data), dropout_net)
    train(model, data, cfg, callbacks, resume_state)
    return model


def _round_trip(state: dict, tmp_path) -> dict:
    """Through the file the resume state lives in, loaded as tc loads it (weights_only=True)."""
    ck.atomic_save(state, tmp_path / "state.pt")
    return ck.safe_load(tmp_path / "state.pt")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kill_at", [4, 5], ids=["mid_epoch", "epoch_end"])
def test_a_dropout_model_killed_and_resumed_equals_the_uninterrupted_run_bit_for_bit(tmp_path, kill_at, device):
    cfg = _cfg(device)
    data = load_data("digits", train_size=cfg.train_size, seed=cfg.seed)
    reference = Keep()
    _train(cfg, data, [reference])

    killed = Keep(kill_at)
    with pytest.raises(Killed):
        _train(cfg, data, [killed])
    state = _round_trip(killed.state, tmp_path)
    torch.rand(1000), random.random(), np.random.rand(10)  # a new process's streams would be elsewhere too
    if device == "cuda":
        torch.rand(1000, device="cuda")
    resumed = Keep()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeNotExactWarning)  # an exact resume says nothing
        _train(cfg, data, [resumed], resume_state=state)

    later = [s for s in reference.weights if s > kill_at]
    assert sorted(resumed.weights) == later and len(later) >= 4
    for step in later:
        assert _same(resumed.weights[step], reference.weights[step]), step

    # the oracle has power: without the RNG state (a state written by an older tc) the same resume differs,
    # and says so
    legacy = {k: v for k, v in state.items() if k != "rng"}
    with pytest.warns(ResumeNotExactWarning, match="no random-number state"):
        _train(cfg, data, [inexact := Keep()], resume_state=legacy)
    assert not _same(inexact.weights[later[-1]], reference.weights[later[-1]])


def test_the_rng_state_is_plain_data_and_restores_every_stream(tmp_path):
    """torch (CPU; CUDA where present), Python's `random` and NumPy's global stream: after a restore each
    draws what it drew after the save."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    np.random.randn()  # NumPy's cached second Gaussian is part of its state
    saved = _round_trip({"rng": rng_state(device)}, tmp_path)["rng"]

    def draws():
        out = [torch.rand(5).tolist(), random.random(), np.random.randn(3).tolist()]
        if device.type == "cuda":
            out.append(torch.rand(5, device=device).tolist())
        return out

    first = draws()
    assert draws() != first  # the streams moved on
    assert restore_rng_state(saved, device) is None  # exact
    assert draws() == first
    reason = restore_rng_state({**saved, "cuda": torch.zeros(3, dtype=torch.uint8)}, torch.device("cpu"))
    assert "CUDA" in reason  # saved on a GPU, resumed on the CPU: not exact, and said so


def test_train_seconds_count_active_time_only_across_a_resume(tmp_path, monkeypatch):
    """A fake clock: 1 s per optimizer step, and a day between the kill and the resume. `train_seconds` at the
    last epoch is the time inside `train`, both parts, without the day."""
    clock = {"t": 0.0}
    monkeypatch.setattr("tc.core.train.time.perf_counter", lambda: clock["t"])

    class Tick:
        def on_step(self, step, loss):
            clock["t"] += 1.0

    class Epochs(Keep):
        def __init__(self, kill_at=None):
            super().__init__(kill_at)
            self.seconds = {}

        def on_epoch_end(self, step, epoch, metrics):
            self.seconds[epoch] = metrics["train_seconds"]

    cfg = _cfg()
    data = load_data("digits", train_size=cfg.train_size, seed=cfg.seed)
    whole = Epochs()
    _train(cfg, data, [Tick(), whole])
    assert whole.seconds == {1: 5.0, 2: 10.0, 3: 15.0}  # 5 steps per epoch

    clock["t"] = 0.0
    killed = Epochs(kill_at=8)
    with pytest.raises(Killed):
        _train(cfg, data, [Tick(), killed])
    clock["t"] += 86400.0  # the downtime
    resumed = Epochs()
    _train(cfg, data, [Tick(), resumed], resume_state=_round_trip(killed.state, tmp_path))
    assert killed.seconds == {1: 5.0} and resumed.seconds == {2: 10.0, 3: 15.0}


def test_seconds_per_epoch_of_a_resumed_run_leaves_out_the_downtime(mlflow_store):
    """The timestamps of a run killed after epoch 1 and resumed an hour later span an hour; the training
    itself took 3 x 2 s. Runs without `train_seconds` (older tc) keep the timestamp estimate."""
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    start = client.get_run(run_id).info.start_time
    hour = 3600 * 1000
    at = [start + 2000, start + hour + 4000, start + hour + 6000]  # epoch ends, ms
    metrics = [Metric("epoch", float(e), t, 10 * e) for e, t in enumerate(at, 1)]
    client.log_batch(run_id, metrics=metrics)
    assert tc_client.seconds_per_epoch(run_id) == pytest.approx((hour + 6000) / 1000 / 3)  # the legacy estimate
    seconds = [Metric("train_seconds", 2.0 * e, t, 10 * e) for e, t in enumerate(at, 1)]
    # an older tc trained epoch 1, a newer one resumed: train_seconds from 0 at the resume, so it covers the
    # resumed part only and cannot be divided by all epochs
    client.log_batch(run_id, metrics=[Metric("train_seconds", m.value - 2.0, m.timestamp, m.step) for m in seconds[1:]])
    assert tc_client.seconds_per_epoch(run_id) == pytest.approx((hour + 6000) / 1000 / 3)
    other = client.create_run("0").info.run_id
    client.log_batch(other, metrics=metrics + seconds)
    assert tc_client.seconds_per_epoch(other) == pytest.approx(2.0)


def test_a_run_killed_then_resumed_after_a_pause_is_timed_without_the_pause(mlflow_store, tmp_path, monkeypatch):
    """End to end through the train entry point: a dropout model killed mid-epoch, resumed 1.5 s later, ends
    with the same checkpoints as an uninterrupted run, and its seconds per epoch leave the pause out."""
    from entrypoints import train as train_ep
    from tests.test_train import TINY, _checkpoints

    argv = [*TINY, "--model", DROPOUT, "--depth", "0", "--checkpoint_every", "2"]
    assert train_ep.main(argv) == 0
    reference = client_runs()[0]
    real = MlflowClient.log_artifact

    def flaky(self, run_id, local_path, artifact_path=None):
        real(self, run_id, local_path, artifact_path)
        if local_path.endswith(ck.filename(4)):
            raise Killed

    with monkeypatch.context() as fault, pytest.raises(Killed):
        fault.setattr(MlflowClient, "log_artifact", flaky)
        train_ep.main(argv)
    killed = client_runs()[0]
    time.sleep(1.5)
    assert train_ep.main(["--resume_run_id", killed, "--model", DROPOUT]) == 0
    assert _checkpoints(killed, tmp_path / "k") == _checkpoints(reference, tmp_path / "r")
    client = MlflowClient()
    epochs = client.get_metric_history(killed, "epoch")
    by_timestamps = (max(m.timestamp for m in epochs) - client.get_run(killed).info.start_time) / 1000 / len(epochs)
    assert by_timestamps - tc_client.seconds_per_epoch(killed) > 0.45  # the 1.5 s pause over 3 epochs is left out
    seconds = sorted(client.get_metric_history(killed, "train_seconds"), key=lambda m: m.step)
    assert [m.step for m in seconds] == [3, 6, 9] and seconds[0].value < seconds[1].value < seconds[2].value
    assert resume.RESUME_NOT_EXACT_TAG not in client.get_run(killed).data.tags  # exact: nothing to say


def client_runs() -> list[str]:
    return [r.info.run_id for r in MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])]


def test_a_resume_that_cannot_be_exact_is_tagged_with_its_reason(mlflow_store, tmp_path, monkeypatch):
    """A resume state without random-number state (as older tc wrote them) still resumes, and the run says
    it is not exact: a warning, and the tag `tc.resume_not_exact`. An exact resume has no such tag."""
    from entrypoints import train as train_ep
    from tests.test_train import TINY

    real = tc_client.log_metrics

    def older_tc_dies_at_epoch_2(run_id, metrics, step):
        if metrics.get("epoch") == 2.0:
            raise Killed
        real(run_id, {k: v for k, v in metrics.items() if k != "train_seconds"}, step)  # not logged before

    with monkeypatch.context() as fault, pytest.raises(Killed):
        fault.setattr(checkpoints, "log_metrics", older_tc_dies_at_epoch_2)
        train_ep.main(TINY)
    killed = client_runs()[0]
    state = resume.load_resume_state(killed)
    legacy = {k: v for k, v in state.items() if k not in ("rng", "train_seconds")}
    ck.atomic_save(legacy, tmp_path / "state.pt")
    MlflowClient().log_artifact(killed, str(tmp_path / "state.pt"), "resume")
    with pytest.warns(ResumeNotExactWarning):
        assert train_ep.main(["--resume_run_id", killed]) == 0
    run = MlflowClient().get_run(killed)
    assert run.info.status == "FINISHED" and "no random-number state" in run.data.tags[resume.RESUME_NOT_EXACT_TAG]
    # the time of the older part is lost, so its seconds per epoch are the timestamp estimate, over all epochs
    epochs = MlflowClient().get_metric_history(killed, "epoch")
    by_timestamps = (max(m.timestamp for m in epochs) - run.info.start_time) / 1000 / len(epochs)
    assert len(epochs) == 3 and tc_client.seconds_per_epoch(killed) == pytest.approx(by_timestamps)


def _saved_rng() -> dict:
    return _round_trip_rng(rng_state(torch.device("cpu")))


def _round_trip_rng(rng: dict) -> dict:
    buf = io.BytesIO()
    torch.save(rng, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _malformed_rngs() -> dict:
    good = _saved_rng()
    py, npy = good["python"], good["numpy"]
    return {
        "a list": [1, 2],
        "a missing stream": {k: v for k, v in good.items() if k != "numpy"},
        "an unknown stream": {**good, "jax": torch.zeros(2, dtype=torch.uint8)},
        "torch as int64": {**good, "torch": good["torch"].long()},
        "torch too short": {**good, "torch": good["torch"][:10]},
        "torch a list": {**good, "torch": good["torch"].tolist()},
        "python a tuple": {**good, "python": tuple(py.values())},
        "python state as float": {**good, "python": {**py, "state": py["state"].double()}},
        "python state too short": {**good, "python": {**py, "state": py["state"][:5]}},
        "python word too big": {**good, "python": {**py, "state": torch.full_like(py["state"], 2**40)}},
        "python version a string": {**good, "python": {**py, "version": "3"}},
        "numpy keys too short": {**good, "numpy": {**npy, "keys": npy["keys"][:3]}},
        "numpy pos a string": {**good, "numpy": {**npy, "pos": "0"}},
        "numpy without pos": {**good, "numpy": {k: v for k, v in npy.items() if k != "pos"}},
        "cuda as float": {**good, "cuda": torch.zeros(16)},
    }


@pytest.mark.parametrize("case", list(_malformed_rngs()))
def test_a_malformed_rng_state_is_refused_before_the_run_is_touched(mlflow_store, case):
    """The resume state is run data: a malformed `rng` is one CheckpointError naming resume/state.pt before the
    run is claimed (no writer tag, no metric, no artifact), not a TypeError halfway through the resume."""
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    state = {"step": 1, "index": [], "pending_metrics": {"test_acc": 0.5}, "rng": _malformed_rngs()[case]}
    with pytest.raises(ck.CheckpointError, match=f"^run {run_id}: resume/state.pt rng"):
        train_into_run(run_id, TrainConfig(dataset="digits", model="mlp", width=16, train_size=600), state)
    run = c.get_run(run_id)
    assert run.data.metrics == {} and writers.WRITER_TAG not in run.data.tags and c.list_artifacts(run_id) == []


def test_a_well_formed_rng_state_passes_the_check_and_restores_what_was_saved():
    """The check's oracle: what `rng_state` writes passes, and restoring it replays the same draws."""
    saved = _saved_rng()
    check_rng_state("r", saved)
    check_rng_state("r", None)  # an older tc's state: allowed, the resume warns
    first = (torch.rand(3), random.random(), np.random.rand())
    restore_rng_state(saved, torch.device("cpu"))
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


@pytest.mark.parametrize("bad", ["12", float("nan"), float("inf"), -1.0, True, [3.0]])
def test_a_malformed_train_seconds_is_refused_before_the_run_is_touched(mlflow_store, bad):
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    state = {"step": 1, "index": [], "pending_metrics": {"test_acc": 0.5}, "train_seconds": bad}
    with pytest.raises(ck.CheckpointError, match=f"^run {run_id}: resume/state.pt train_seconds"):
        train_into_run(run_id, TrainConfig(dataset="digits", model="mlp", width=16, train_size=600), state)
    assert c.get_run(run_id).data.metrics == {}
    assert check_train_seconds("r", 7) == 7.0 and type(check_train_seconds("r", 7)) is float
    assert check_train_seconds("r", None) == 0.0
