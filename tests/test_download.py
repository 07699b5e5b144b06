"""Issue 21: an analysis fetches only the checkpoints it reads, and a run of many checkpoints in one store call.

A sweep trial's run holds hundreds of small checkpoints; fetching each with its own `download_artifacts` call
cost more than the trial's analysis. Each test logs a real run (sqlite store, file artifacts) and counts the
artifact paths tc asks MLflow for."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from mlflow.tracking import MlflowClient

from tc.config import AnalyzeConfig, TrainConfig
from tc.core import checkpoints as ck
from tc.core.data import load_data
from tc.core.models import ModelSpec, build_model
from tc.tracking import checkpoints
from tc.tracking import client as tc_client


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TC_CACHE_DIR", str(tmp_path / "tc-cache"))
    return tmp_path / "tc-cache" / "checkpoints"


CFG = TrainConfig(dataset="digits", model="mlp", width=8, epochs=1, batch_size=64, train_size=200)


def _run(tmp_path, steps, tamper: int | None = None) -> str:
    """A FINISHED run of the tiny MLP with a checkpoint at each of `steps` and its index; with `tamper`, that
    step's file is changed after its hash went into the index."""
    data = load_data("digits", train_size=200)
    model = build_model(ModelSpec.of(CFG, data))
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    stage = tmp_path / f"stage-{run_id}"
    stage.mkdir()
    entries = []
    for s in steps:
        sd = {k: v + s for k, v in model.state_dict().items()}
        entries.append(asdict(ck.save_checkpoint(stage, s, s / 10, asdict(ModelSpec.of(CFG, data)), sd)))
        if s == tamper:
            torch.save({"step": s}, stage / ck.filename(s))
        c.log_artifact(run_id, str(stage / ck.filename(s)), ck.ARTIFACT_DIR)
    (stage / ck.INDEX_FILE).write_text(json.dumps({"format": ck.FORMAT, "checkpoints": entries}))
    c.log_artifact(run_id, str(stage / ck.INDEX_FILE), ck.ARTIFACT_DIR)
    c.log_dict(run_id, asdict(CFG), tc_client.CONFIG_FILE)
    c.set_terminated(run_id, "FINISHED")
    return run_id


def _file_calls(seen: list[str]) -> list[str]:
    return [p for p in seen if p.endswith(".pt")]


def test_only_the_selected_steps_are_fetched(mlflow_store, tmp_path, cache_root, downloads):
    run_id = _run(tmp_path, range(0, 40, 10))
    files = checkpoints.download_checkpoints(run_id, cache_root, steps=lambda steps: {steps[0], steps[-1]})
    assert [e.step for e, _ in files] == [0, 30]
    assert sorted(_file_calls(downloads)) == [f"{ck.ARTIFACT_DIR}/{ck.filename(s)}" for s in (0, 30)]
    assert ck.ARTIFACT_DIR not in downloads  # 2 of 4 files: no whole-folder fetch


def test_many_missing_files_come_in_one_call_and_are_each_verified(mlflow_store, tmp_path, cache_root, downloads):
    steps = list(range(3 * checkpoints.BULK_MIN))
    run_id = _run(tmp_path, steps)
    files = checkpoints.download_checkpoints(run_id, cache_root)
    assert [e.step for e, _ in files] == steps
    assert all(ck.sha256(p) == e.sha256 for e, p in files)
    assert downloads.count(ck.ARTIFACT_DIR) == 1 and not _file_calls(downloads)
    downloads.clear()
    assert [p for _, p in checkpoints.download_checkpoints(run_id, cache_root)] == [p for _, p in files]
    assert not _file_calls(downloads) and ck.ARTIFACT_DIR not in downloads  # all cached: nothing fetched


def test_a_tampered_file_in_the_folder_fetch_is_still_refused(mlflow_store, tmp_path, cache_root):
    run_id = _run(tmp_path, range(2 * checkpoints.BULK_MIN), tamper=5)
    with pytest.raises(ck.CheckpointError, match=rf"{ck.filename(5)} does not match its sha256"):
        checkpoints.download_checkpoints(run_id, cache_root)


def test_an_analysis_fetches_its_selection_and_step_0_only(mlflow_store, tmp_path, cache_root, downloads):
    steps = list(range(0, 210, 10))  # 21 checkpoints; fractions:3 reads 0, 100 and 200
    run_id = _run(tmp_path, steps)
    inputs = checkpoints.load_analysis_inputs(AnalyzeConfig(run_id=run_id, checkpoints="fractions:3"))
    assert inputs.checkpoints.steps == [0, 100, 200]
    assert sorted(_file_calls(downloads)) == [f"{ck.ARTIFACT_DIR}/{ck.filename(s)}" for s in (0, 100, 200)]
    downloads.clear()
    inputs = checkpoints.load_analysis_inputs(AnalyzeConfig(run_id=run_id, checkpoints="50,200"))
    assert inputs.checkpoints.steps == [50, 200]
    assert inputs.run.init is not None and torch.equal(  # step 0 still serves gm_dist_init
        next(iter(inputs.run.init.values())),
        next(iter(ck.load_checkpoint(_cached(cache_root, run_id, 0))["state_dict"].values())),
    )
    assert sorted(_file_calls(downloads)) == [f"{ck.ARTIFACT_DIR}/{ck.filename(50)}"]  # 0 and 200 were cached


def _cached(root, run_id, step):
    return root / run_id / ck.filename(step)


# ---- the folder fetch holds only what the index lists (issue 19's threat: the run's logger is untrusted) -----------


def _artifact_dir(run_id: str):
    from pathlib import Path
    from urllib.parse import urlparse

    return Path(urlparse(MlflowClient().get_run(run_id).info.artifact_uri).path) / ck.ARTIFACT_DIR


def _only_the_index_files_cached(cache_root, run_id, steps):
    got = sorted(p.name for p in (cache_root / run_id).iterdir() if not p.name.startswith(".download-"))
    return got == sorted(ck.filename(s) for s in steps)


def test_a_folder_with_files_the_index_does_not_list_is_fetched_file_by_file(
    mlflow_store, tmp_path, cache_root, downloads
):
    # an unlisted file (any size: a run's logger picks it) is never downloaded, not even into a temp dir
    steps = list(range(2 * checkpoints.BULK_MIN))
    run_id = _run(tmp_path, steps)
    (_artifact_dir(run_id) / ck.filename(10**6)).write_bytes(b"\0" * 100_000)
    (_artifact_dir(run_id) / "notes.txt").write_text("x")
    files = checkpoints.download_checkpoints(run_id, cache_root)
    assert [e.step for e, _ in files] == steps
    assert ck.ARTIFACT_DIR not in downloads and len(_file_calls(downloads)) == len(steps)
    assert _only_the_index_files_cached(cache_root, run_id, steps)


def test_a_folder_holding_a_directory_or_a_link_to_one_is_fetched_file_by_file(
    mlflow_store, tmp_path, cache_root, downloads
):
    # a directory in the folder (or a link to one, which a file store follows) could hold anything: no folder fetch
    steps = list(range(2 * checkpoints.BULK_MIN))
    run_id = _run(tmp_path, steps)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"\0" * 100_000)
    (_artifact_dir(run_id) / "sub").symlink_to(outside, target_is_directory=True)
    files = checkpoints.download_checkpoints(run_id, cache_root)
    assert [e.step for e, _ in files] == steps and ck.ARTIFACT_DIR not in downloads
    assert _only_the_index_files_cached(cache_root, run_id, steps)


def test_a_folder_fetch_is_skipped_when_the_unselected_files_outweigh_the_selected(
    mlflow_store, tmp_path, cache_root, downloads
):
    # half the index selected, but the other half is 100x larger: one call would fetch far more than is needed
    steps = list(range(2 * checkpoints.BULK_MIN + 2))
    run_id = _run(tmp_path, steps)
    half = set(steps[::2])
    for s in steps:
        if s not in half:
            (_artifact_dir(run_id) / ck.filename(s)).write_bytes(b"\0" * 1_000_000)
    files = checkpoints.download_checkpoints(run_id, cache_root, steps=lambda _: half)
    assert [e.step for e, _ in files] == sorted(half) and ck.ARTIFACT_DIR not in downloads
    assert _only_the_index_files_cached(cache_root, run_id, half)


def test_a_checkpoint_that_is_a_directory_is_refused_on_the_folder_path_too(mlflow_store, tmp_path, cache_root):
    steps = list(range(2 * checkpoints.BULK_MIN))
    run_id = _run(tmp_path, steps)
    (_artifact_dir(run_id) / ck.filename(5)).unlink()
    (_artifact_dir(run_id) / ck.filename(5)).mkdir()
    (_artifact_dir(run_id) / ck.filename(5) / "x").write_text("x")
    with pytest.raises(ck.CheckpointError, match=rf"{ck.filename(5)} is (a directory|listed in)"):
        checkpoints.download_checkpoints(run_id, cache_root)
    assert not (cache_root / run_id / ck.filename(5)).exists()
