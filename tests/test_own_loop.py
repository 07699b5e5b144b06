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
from tc.core import checkpoints as ck
from tc.core.data import load_data
from tc.tracking import analyses, own_loop
from tests.stage_models import SmallNet

ROOT = Path(__file__).resolve().parents[1]
USER = "tests.stage_models:small_net"


def _plain_loop(model, data, steps: int, logger) -> None:
    """The documented path: the logger, created before the loop, has logged step 0 itself."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(1, steps + 1):
        idx = torch.arange((step - 1) * 32, step * 32)
        loss = torch.nn.functional.cross_entropy(model(data.normalize(data.train_x[idx])), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        logger.step(step, step * 32 / len(data.train_y))
    logger.close(steps, steps * 32 / len(data.train_y))


def _logged_run() -> tuple[str, torch.nn.Module, dict]:
    torch.manual_seed(0)
    data = load_data("digits")
    model = SmallNet(num_classes=10, in_channels=1)  # the user's own module, not tc's staged copy
    init = {k: v.clone() for k, v in model.state_dict().items()}
    with mlflow.start_run() as run:
        tc.log_run_info(model=USER, dataset="digits", data=data, epochs=1, batch_size=32, seed=0)
        _plain_loop(model, data, steps=7, logger=tc.CheckpointLogger(model, every=3))
    return run.info.run_id, model, init


def _index_steps(rid: str) -> list[int]:
    path = MlflowClient().download_artifacts(rid, "checkpoints/index.json", str(mlflow_store_dir(rid)))
    return [e["step"] for e in json.loads(Path(path).read_text())["checkpoints"]]


def _checkpoint(rid: str, step: int) -> dict:
    path = MlflowClient().download_artifacts(rid, f"checkpoints/{ck.filename(step)}", str(mlflow_store_dir(rid)))
    return ck.load_checkpoint(path)["state_dict"]


def test_own_loop_logs_tc_checkpoints(mlflow_store):
    rid, model, init = _logged_run()
    client = MlflowClient()
    got = client.get_run(rid)
    assert got.data.params["model"] == USER and got.data.params["dataset"] == "digits"
    assert got.info.run_name == "tests.stage_models:small_net digits ep1 bs32 seed0"  # settings it gave
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
    first = _checkpoint(rid, 0)  # logged by the logger itself, when it was created: the initialisation
    assert torch.equal(first[conv], init["conv.weight"]) and not torch.equal(first[conv], last[conv])


def _docstring_example() -> str:
    """The code block of `tc`'s module docstring (the documented own-loop path), dedented."""
    lines = tc.__doc__.split("\n")
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("import mlflow"))
    block = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block).strip()


def test_the_documented_example_logs_the_initialisation_as_step_0(mlflow_store):
    # tc's docstring example run as written (its `...` replaced by a real optimizer step): step 0 is in the
    # index without the user calling .step(0), and it holds the weights from before training
    import torchvision

    code = _docstring_example()
    assert "...  # your optimizer step" in code and "step(0" not in code  # the user writes no step 0
    code = code.replace("...  # your optimizer step", "train_one_step(x, y)")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    data = load_data("digits")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_one_step(x, y):
        loss = torch.nn.functional.cross_entropy(model(data.normalize(x).repeat(1, 3, 1, 1)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    batches = [(data.train_x[i : i + 16], data.train_y[i : i + 16]) for i in range(0, 12 * 16, 16)]
    scope = {"model": model, "batches": batches, "train_one_step": train_one_step}
    exec(compile(code, "tc.__doc__", "exec"), scope)
    rid = MlflowClient().search_runs(["0"])[0].info.run_id
    assert _index_steps(rid) == [0, 10, 12]  # the initialisation, every 10th step, the last
    first, last = _checkpoint(rid, 0), _checkpoint(rid, 12)
    key = "conv1.weight"
    staged = next(k for k in first if k.endswith(key))
    assert torch.equal(first[staged], init[key]) and torch.equal(last[staged], model.state_dict()[key])
    assert not torch.equal(first[staged], last[staged])


def test_the_logger_logs_step_0_once(mlflow_store):
    data = load_data("digits")
    model = SmallNet(num_classes=10, in_channels=1)
    with mlflow.start_run() as run:
        tc.log_run_info(model=USER, dataset="digits", data=data)
        logger = tc.CheckpointLogger(model, every=2)
        assert logger.logged == [0]
        assert logger.step(0, 0.0) is None  # an explicit step(0), as older code does: not logged twice
        assert logger.step(2, 0.1) is not None and logger.logged == [0, 2]
        again = tc.CheckpointLogger(model, every=2)  # a second logger on the run: step 0 exists already
        assert again.logged == [0, 2]
    assert _index_steps(run.info.run_id) == [0, 2]


def _train_steps(model, data, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(steps):
        idx = torch.arange(step * 32, (step + 1) * 32)
        loss = torch.nn.functional.cross_entropy(model(data.normalize(data.train_x[idx])), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _index(rid: str) -> list[dict]:
    path = MlflowClient().download_artifacts(rid, "checkpoints/index.json", str(mlflow_store_dir(rid)))
    return json.loads(Path(path).read_text())["checkpoints"]


def test_a_loop_resumed_in_a_new_process_keeps_the_initialisation_and_the_index(mlflow_store, monkeypatch):
    # train to step 2 and stop; a new process (no in-process state) reopens the run, re-creates the logger
    # with the trained weights and logs step 4: step 0 must still be the initialisation, and step 2 listed
    torch.manual_seed(0)
    data = load_data("digits")
    model = SmallNet(num_classes=10, in_channels=1)
    with mlflow.start_run() as run:
        tc.log_run_info(model=USER, dataset="digits", data=data, batch_size=32)
        logger = tc.CheckpointLogger(model, every=2)
        _train_steps(model, data, 2)
        logger.step(2, 0.1)
    rid = run.info.run_id
    before = {e["step"]: e for e in _index(rid)}
    init = _checkpoint(rid, 0)
    monkeypatch.setattr(own_loop, "_OWN_RUNS", {})  # a new process knows nothing of the first one
    with mlflow.start_run(run_id=rid):
        tc.log_run_info(model=USER, dataset="digits", data=data, batch_size=32)
        resumed = tc.CheckpointLogger(model, every=2)  # the weights are trained now: not the initialisation
        _train_steps(model, data, 2)
        assert resumed.step(4, 0.2) is not None
    after = {e["step"]: e for e in _index(rid)}
    assert sorted(after) == [0, 2, 4]
    assert after[0] == before[0] and after[2] == before[2]  # same files, same sha256
    path = MlflowClient().download_artifacts(rid, f"checkpoints/{ck.filename(0)}", str(mlflow_store_dir("again")))
    assert ck.sha256(path) == before[0]["sha256"]  # the step-0 file in the store is the first process's
    now = ck.load_checkpoint(path)["state_dict"]
    assert all(torch.equal(now[k], init[k]) for k in init)
    conv = next(k for k in now if k.endswith("conv.weight"))
    assert not torch.equal(now[conv], _checkpoint(rid, 4)[conv])  # and not the trained weights
    assert resumed.logged == [0, 2, 4]


def test_log_run_info_leaves_the_global_random_stream_alone(mlflow_store):
    # building tc's staged copy draws initial weights: from a forked stream, so that a loop that seeded (or
    # restored) its RNG before log_run_info draws exactly what it would without it
    data = load_data("digits")
    torch.manual_seed(0)
    expected = torch.rand(8)
    torch.manual_seed(0)
    with mlflow.start_run():
        tc.log_run_info(model=USER, dataset="digits", data=data)
    assert torch.equal(torch.rand(8), expected)


def test_a_resumed_run_without_step_0_gets_no_fake_initialisation(mlflow_store):
    # a run whose loop never logged step 0: a logger created later must not log trained weights as step 0
    data = load_data("digits")
    model = SmallNet(num_classes=10, in_channels=1)
    with mlflow.start_run() as run:
        tc.log_run_info(model=USER, dataset="digits", data=data)
        tc.log_checkpoint(model, 3, epoch=0.1)
        with pytest.warns(UserWarning, match="none at step 0"):
            logger = tc.CheckpointLogger(model, every=2)
        assert logger.logged == [3]
    assert _index_steps(run.info.run_id) == [3]


def test_log_checkpoint_refuses_to_overwrite_a_logged_step_with_other_weights(mlflow_store):
    torch.manual_seed(0)
    data = load_data("digits")
    model = SmallNet(num_classes=10, in_channels=1)
    with mlflow.start_run() as run:
        tc.log_run_info(model=USER, dataset="digits", data=data, batch_size=32)
        first = tc.log_checkpoint(model, 0, epoch=0.0)
        assert tc.log_checkpoint(model, 0, epoch=0.0) == first  # the same weights again: harmless
        _train_steps(model, data, 1)
        with pytest.raises(ValueError, match="step 0 is logged already"):
            tc.log_checkpoint(model, 0, epoch=0.0)
    assert _index(run.info.run_id) == [{"step": 0, "epoch": 0.0, "file": first.file, "sha256": first.sha256}]
    path = MlflowClient().download_artifacts(run.info.run_id, f"checkpoints/{first.file}", str(mlflow_store_dir("x")))
    assert ck.sha256(path) == first.sha256


def test_a_resumed_run_whose_index_names_other_files_is_refused(mlflow_store, tmp_path):
    # the index is data read back from the store: a name other than the filename rule's is refused up front
    bad = {"format": ck.FORMAT, "checkpoints": [{"step": 0, "epoch": 0.0, "file": "/etc/passwd", "sha256": "0"}]}
    (tmp_path / "index.json").write_text(json.dumps(bad))
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "index.json"), "checkpoints")
        bad_entry = r"run \w+: checkpoints/index.json entry 0 names the file '/etc/passwd'"
        with pytest.raises(ck.CheckpointError, match=bad_entry):
            tc.log_run_info(model=USER, dataset="digits", data=load_data("digits"))
    assert "model" not in MlflowClient().get_run(run.info.run_id).data.params  # refused before logging anything


@pytest.mark.slow
def test_analyze_reads_an_own_loop_run_of_a_user_model(mlflow_store):
    """~15 s alone, a minute on the loaded shared machine."""
    from entrypoints import analyze as analyze_ep

    rid, _, _ = _logged_run()
    client = MlflowClient()
    args = ["--run_id", rid, "--max_samples", "48", "--splits", "test", "--matrix", "final", "--anisotropy", "false"]
    assert analyze_ep.main([*args, "--measures", "false", "--model", USER]) == 0
    metrics = client.get_run(rid).data.metrics
    assert {"tc_test", "tc_kappa_test", "tc_full_test"} <= set(metrics)
    tags = client.get_run(rid).data.tags
    assert tags["tc.analysis.splits"] == "test" and tags["tc.dataset"] == "digits"
    assert "`tc_test`" in tags["mlflow.note.content"]


def test_an_own_loop_run_logs_only_the_given_settings_and_analyze_names_what_it_assumed(mlflow_store, monkeypatch):
    """Issue 22: an Adam loop with no schedule and no weight decay was logged as width=16, weight_decay=0.0005,
    schedule=cosine, momentum=0.9, checkpoint_every=0 (TrainConfig's defaults). Now the run holds exactly the
    settings given, as params and in config.json; a resumed loop's call that gives fewer keeps the earlier ones;
    analyze reads the run with tc's defaults for the rest and names those it used (seed, train_size, label_noise
    draw the train split)."""
    torch.manual_seed(0)
    data = load_data("digits")
    model = SmallNet(num_classes=10, in_channels=1)
    given = {"model": USER, "dataset": "digits", "batch_size": 32, "optimizer": "adam", "lr": 0.01}
    with mlflow.start_run() as run:
        cfg = tc.log_run_info(data=data, **given)
        logger = tc.CheckpointLogger(model, every=2)
        _train_steps(model, data, 2)
        logger.step(2, 0.1)
    rid, client = run.info.run_id, MlflowClient()
    assert cfg.weight_decay == 5e-4 and cfg.schedule == "cosine"  # the returned config: defaults build the model
    params = client.get_run(rid).data.params
    assert params == {"model": USER, "dataset": "digits", "batch_size": "32", "optimizer": "adam", "lr": "0.01"}
    config = json.loads(Path(client.download_artifacts(rid, "config.json", str(mlflow_store_dir(rid)))).read_text())
    assert config == {"model": USER, "dataset": "digits", "batch_size": 32, "optimizer": "adam", "lr": 0.01}
    monkeypatch.setattr(own_loop, "_OWN_RUNS", {})  # a new process: its call gives less, and the earlier stays
    with mlflow.start_run(run_id=rid):
        assert tc.log_run_info(model=USER, dataset="digits", data=data, epochs=1).batch_size == 32
        tc.CheckpointLogger(model, every=2).close(4, 0.2)
    assert set(client.get_run(rid).data.params) == {*given, "epochs"}
    from tc.tracking.client import load_train_config

    unlogged: list[str] = []
    assert load_train_config(rid, unlogged).lr == 0.01
    assert "weight_decay" in unlogged and "schedule" in unlogged and "lr" not in unlogged
    acfg = tc.AnalyzeConfig(
        run_id=rid, model=USER, splits="train,test", max_samples=24, matrix="final", anisotropy=False, measures=False
    )
    done = tc.analyze_job(acfg)
    assert "tc_test" in done.result.metrics and done.result.metrics["n_checkpoints"] == 3
    [said] = [w for w in done.result.summary["warnings"] if w.startswith("the run did not log")]
    assert said.startswith("the run did not log train_size, seed, label_noise: tc's defaults (train_size=0, seed=0")
    # nor do its name, tags and description show tc's defaults as the run's (it gave no seed and no epochs)
    run = client.get_run(rid)
    assert run.info.run_name == f"{USER} digits bs32 lr0.01 adam", run.info.run_name
    assert "tc.seed" not in run.data.tags and run.data.tags["tc.dataset"] == "digits"
    note = run.data.tags["mlflow.note.content"]
    assert "seed not logged" in note and "seed 0" not in note and "1 epoch(s)" in note  # epochs: the resumed call's


def test_a_first_log_run_info_downloads_nothing(mlflow_store, downloads):
    """A fresh run has no earlier settings to keep: log_run_info looks them up without a failing download (whose
    progress bars MLflow prints to the user's console)."""
    with mlflow.start_run():
        tc.log_run_info(model="mlp", dataset="digits", width=16, train_size=96, batch_size=32)
    assert downloads == []


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
    where = analyses.analysis_dir(rid)
    assert any(f.path.endswith("consistency_heatmaps.png") for f in MlflowClient().list_artifacts(rid, where))


def test_example_own_loop_logs_the_initialisation(mlflow_store):
    # examples/own_loop.py without its (slow) analysis: its checkpoints start at step 0, the initialisation
    main = runpy.run_path(str(ROOT / "examples" / "own_loop.py"))["main"]
    rid = main(["--steps", "4", "--every", "2", "--batch_size", "32", "--analyze", "false"])
    assert _index_steps(rid) == [0, 2, 4]
