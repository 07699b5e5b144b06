"""Logging from a user's own training loop (tc.log_run_info, tc.CheckpointLogger, tc.log_checkpoint), then
analyze on that run; and the example examples/own_loop.py end to end (slow)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

import tc
from tc import checkpoints as ck
from tc.data import load_data
from tests.stage_models import SmallNet

ROOT = Path(__file__).resolve().parents[1]
USER = "tests.stage_models:small_net"


def _plain_loop(model, data, steps: int, logger) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    logger.step(0, 0.0)
    for step in range(1, steps + 1):
        idx = torch.arange((step - 1) * 32, step * 32)
        loss = torch.nn.functional.cross_entropy(model(data.normalize(data.train_x[idx])), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        logger.step(step, step * 32 / len(data.train_y))
    logger.close(steps, steps * 32 / len(data.train_y))


def _logged_run() -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    data = load_data("digits")
    model = SmallNet(num_classes=10, in_channels=1)  # the user's own module, not tc's staged copy
    with mlflow.start_run() as run:
        tc.log_run_info(model=USER, dataset="digits", data=data, epochs=1, batch_size=32, seed=0)
        _plain_loop(model, data, steps=7, logger=tc.CheckpointLogger(model, every=3))
    return run.info.run_id, model


def test_own_loop_logs_tc_checkpoints(mlflow_store):
    rid, model = _logged_run()
    client = MlflowClient()
    got = client.get_run(rid)
    assert got.data.params["model"] == USER and got.data.params["dataset"] == "digits"
    assert got.info.run_name == "tests.stage_models:small_net digits seed0"
    index = json.loads(
        Path(client.download_artifacts(rid, "checkpoints/index.json", str(mlflow_store_dir(rid)))).read_text()
    )
    assert [e["step"] for e in index["checkpoints"]] == [0, 3, 6, 7]  # 0, every 3rd, and the last
    for e in index["checkpoints"]:
        path = client.download_artifacts(rid, f"checkpoints/{e['file']}", str(mlflow_store_dir(rid)))
        payload = ck.load_checkpoint(path, e["sha256"])
        assert payload["step"] == e["step"] and payload["epoch"] == pytest.approx(e["epoch"])
    last = ck.load_checkpoint(path)["state_dict"]
    conv = next(k for k in last if k.endswith("conv.weight"))
    assert torch.equal(last[conv], model.conv.weight.detach())  # the trained weights, under staged keys


@pytest.mark.slow
def test_analyze_reads_an_own_loop_run_of_a_user_model(mlflow_store):
    """~15 s alone, a minute on the loaded shared machine."""
    from entrypoints import analyze as analyze_ep

    rid, _ = _logged_run()
    client = MlflowClient()
    args = ["--run_id", rid, "--max_samples", "48", "--splits", "test", "--matrix", "final", "--anisotropy", "false"]
    assert analyze_ep.main([*args, "--measures", "false", "--model", USER]) == 0
    metrics = client.get_run(rid).data.metrics
    assert {"tc_test", "tc_kappa_test", "tc_full_test"} <= set(metrics)
    tags = client.get_run(rid).data.tags
    assert tags["tc.analysis.splits"] == "test" and tags["tc.dataset"] == "digits"
    assert "`tc_test`" in tags["mlflow.note.content"]


def mlflow_store_dir(rid: str) -> Path:
    d = Path.cwd() / "dl" / rid
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_a_model_that_is_not_the_named_one_is_refused_at_the_first_checkpoint(mlflow_store):
    data = load_data("digits")
    with mlflow.start_run():
        tc.log_run_info(model="mlp", dataset="digits", data=data)
        with pytest.raises(ValueError, match="does not fit mlp"):
            tc.log_checkpoint(SmallNet(num_classes=10, in_channels=1), 0, epoch=0.0)


def test_logging_needs_an_active_run_and_run_info(mlflow_store):
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        tc.CheckpointLogger(SmallNet(), every=1)
    with mlflow.start_run(), pytest.raises(RuntimeError, match="log_run_info"):
        tc.log_checkpoint(SmallNet(), 0, epoch=0.0)


@pytest.mark.slow
def test_example_own_loop_trains_logs_and_analyzes(mlflow_store):
    """examples/own_loop.py: torchvision resnet18 on digits in a plain loop, analyzed through `mlflow run`'s
    Python API (292 s measured on the shared 2-core machine at load average ~10)."""
    main = runpy.run_path(str(ROOT / "examples" / "own_loop.py"))["main"]
    rid = main(["--steps", "8", "--every", "2", "--max_samples", "48"])
    run = MlflowClient().get_run(rid)
    assert run.data.tags["tc.model"] == "torchvision:resnet18"
    assert {"tc_test", "tc_kappa_test", "tc_full_test", "test_acc"} <= set(run.data.metrics)
    where = tc.tracking.analysis_dir(rid)
    assert any(f.path.endswith("consistency_heatmaps.png") for f in MlflowClient().list_artifacts(rid, where))
