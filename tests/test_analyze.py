"""The analyze entry point on real training runs in a private MLflow store: results and bad inputs."""

import json
import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from entrypoints import analyze as analyze_ep
from entrypoints import train as train_ep
from tc.core import checkpoints as ck
from tc.core.consistency import EXCESS_FLOOR
from tc.tracking import analyses, jobs
from tc.tracking import client as tc_client

TINY = [
    "--dataset",
    "digits",
    "--model",
    "resnet20",
    "--depth",
    "8",
    "--width",
    "4",
    "--epochs",
    "4",
    "--batch_size",
    "128",
    "--train_size",
    "512",
]


def _train(*extra) -> str:
    assert train_ep.main([*TINY, *extra]) == 0
    return MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])[0].info.run_id


def _latest_run():
    return MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])[0]


def _tc_metrics(run_id):
    return {k: v for k, v in MlflowClient().get_run(run_id).data.metrics.items() if k.startswith(("tc_", "half"))}


def test_analyze_logs_metrics_tables_and_figures_back_to_the_training_run(mlflow_store, tmp_path):
    run_id = _train()
    reference = _train("--seed", "1")
    # 512 examples at batch 128 hold 4 full minibatches: the gradient-noise test needs aniso_k + 2 of them
    argv = ["--run_id", run_id, "--max_samples", "120", "--reference_run_id", reference, "--aniso_k", "2"]
    assert analyze_ep.main(argv) == 0
    analysis_run = _latest_run()
    assert analysis_run.data.tags["tc.source_run_id"] == run_id
    assert run_id in analysis_run.data.tags["mlflow.note.content"]

    metrics = MlflowClient().get_run(run_id).data.metrics
    for key in (
        "tc_train",
        "tc_test",
        "tc_corrupt",
        "half_life_test",
        "tc_test_crossseed",
        "tc_test_d1",
        "tc_test_d3",
        "tc_corrupt_jpeg",
        "drift_test",
        "acc_test",
        "aniso_drift_topk_var",
        "aniso_drift_eff_rank",
        "aniso_drift_min_pvalue",
        "aniso_drift_lw_min_pvalue",
        "aniso_grad_topk_var",
        "aniso_grad_eff_rank",
        "aniso_grad_min_pvalue",
        "aniso_perturb_top_acc",
        "aniso_perturb_random_acc",
        "aniso_perturb_bottom_acc",
        "aniso_perturb_top_acc_lo_d1",
        "aniso_perturb_random_acc_hi_d1",
        "aniso_perturb_clean_acc_d1",
        "aniso_drift_pvalue_d1",
        "aniso_drift_lw_pvalue_d1",
        "aniso_grad_pvalue_d1",
        "gm_param_norm",
        "gm_dist_init",
        "gm_log_spectral_product",
        "gm_margin",
        "gm_train_loss",
        "gm_sharpness",
        "gm_disagreement",
        "gm_sharpness_seconds",
        "gm_sharpness_evals",
        "gm_sharpness_cost_epochs",
        "tc_cost_epochs",
        "tc_mmd",
        "tc_mmd_d1",
        "tc_kappa_test",
        "tc_kappa_test_d1",
        "tc_full_test",
        "tc_gain_test",
        "tc_excess_test",
        "tc_window_checkpoints",
    ):
        assert key in metrics, key
    assert 0 <= metrics["tc_test"] <= 1
    assert -1 <= metrics["tc_kappa_test"] <= metrics["tc_test"] and 0 <= metrics["tc_full_test"] <= 1
    assert metrics["tc_gain_test"] == pytest.approx(metrics["tc_test"] - metrics["tc_full_test"])
    assert metrics["tc_excess_test"] == pytest.approx(
        (metrics["tc_test"] - metrics["tc_full_test"]) / max(1 - metrics["tc_full_test"], EXCESS_FLOOR)
    )
    # 4 epochs, a checkpoint per epoch: the window (last half, before the final one) holds epochs 2 and 3
    assert metrics["tc_window_checkpoints"] == 2
    assert "fewer than 3" in MlflowClient().get_run(run_id).data.tags["tc.window_warning"]
    assert 0 < metrics["aniso_drift_min_pvalue"] <= 1 and 0 < metrics["aniso_grad_topk_var"] <= 1
    assert metrics["n_grad_batches"] == 4 and metrics["n_cuts_grad"] == 4  # what it used (grad_batches asked 32)
    # Holm across the 4 cuts: the smallest adjusted p-value is min(1, 4 x the smallest raw one)
    raw = min(metrics[f"aniso_drift_pvalue_d{c}"] for c in (1, 2, 3, 4))
    assert metrics["aniso_drift_min_pvalue"] == pytest.approx(min(1.0, 4 * raw))
    assert "aniso_drift_pvalue" not in metrics  # a mean of p-values is not logged as one
    # the control: another seed's deep part does not read this run's features like its own
    assert metrics["tc_test_crossseed"] < metrics["tc_test"]
    assert metrics["tc_test"] == pytest.approx(sum(metrics[f"tc_test_d{c}"] for c in (1, 2, 3, 4)) / 4)

    where = analyses.analysis_dir(run_id)  # the current analysis version, analysis/v1
    assert where == "analysis/v1"
    names = {f.path for f in MlflowClient().list_artifacts(run_id, where)}
    for f in (
        "matrices.csv",
        "lags.csv",
        "drift.csv",
        "per_sample.csv",
        "corrupt.csv",
        "summary.json",
        "consistency_heatmaps.png",
        "lag_curves.png",
        "per_sample_kde.png",
        "drift_vs_consistency.png",
        "anisotropy.csv",
        "anisotropy_spectra.csv",
        "perturbation.csv",
        "anisotropy_spectra.png",
        "perturbation.png",
    ):
        assert f"{where}/{f}" in names
    import pandas as pd

    local = Path(MlflowClient().download_artifacts(run_id, where, str(tmp_path)))
    matrices = pd.read_csv(local / "matrices.csv")
    assert list(matrices.columns) == ["cut", "split", "t1", "t2", "acc", "agree", "loss", "rc"]
    assert len(matrices) == 4 * 3 * 5 * 5  # cuts x splits x checkpoints^2
    diag = matrices[matrices.t1 == matrices.t2]
    assert (diag.agree == 1.0).all() and (diag.rc == 1.0).all()
    assert json.loads(MlflowClient().get_run(run_id).data.tags["tc.analysis"])["max_samples"] == 120
    stats = pd.read_csv(local / "anisotropy.csv")
    units = dict(zip(stats["kind"], stats["unit"], strict=False))
    assert units == {"drift": "pairs of samples (unit vectors of the window's drift)", "grad": "minibatches"}


def test_second_analysis_leaves_one_coherent_result(mlflow_store):
    run_id = _train()
    assert analyze_ep.main(["--run_id", run_id, "--max_samples", "60", "--splits", "test"]) == 0
    assert (
        analyze_ep.main(
            ["--run_id", run_id, "--max_samples", "60", "--splits", "test", "--cuts", "1,3", "--matrix", "final"]
        )
        == 0
    )
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert not math.isnan(metrics["tc_test_d1"]) and not math.isnan(metrics["tc_test_d3"])
    assert math.isnan(metrics["tc_test_d4"])  # from the first analysis only: superseded, not left stale
    assert math.isnan(metrics["half_life_test"])  # matrix=final computes no lag curve
    names = {f.path for f in MlflowClient().list_artifacts(run_id, analyses.analysis_dir(run_id))}
    assert "analysis/v2/summary.json" in names


def _fails_cleanly(argv, capsys, words, run_id=None):
    before = _tc_metrics(run_id) if run_id else None
    assert analyze_ep.main(argv) == 2  # refused (tc.tracking.refusals)
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert _latest_run().info.status == "FAILED" and _latest_run().info.run_name.startswith("refused: ")
    if run_id:
        assert _tc_metrics(run_id) == before == {}  # nothing logged as if it were a result


def test_unknown_run_id(mlflow_store, capsys):
    _fails_cleanly(["--run_id", "0123456789abcdef"], capsys, ["no MLflow run", "0123456789abcdef"])


def test_run_without_checkpoints(mlflow_store, capsys):
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    from tc.config import TrainConfig

    tc_client.log_config(run_id, TrainConfig(dataset="digits"))
    client.set_terminated(run_id, "FINISHED")  # analyze refuses unfinished runs before looking for checkpoints
    _fails_cleanly(["--run_id", run_id], capsys, ["no checkpoints"], run_id)


def _artifact_dir(run_id) -> Path:
    uri = MlflowClient().get_run(run_id).info.artifact_uri
    return Path(uri.removeprefix("file://"))


def test_tampered_checkpoint(mlflow_store, capsys):
    run_id = _train()
    path = _artifact_dir(run_id) / "checkpoints" / ck.filename(8)
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    path.write_bytes(bytes(data))
    _fails_cleanly(["--run_id", run_id], capsys, ["sha256", ck.filename(8)], run_id)


def test_truncated_checkpoint(mlflow_store, capsys):
    run_id = _train()
    path = _artifact_dir(run_id) / "checkpoints" / ck.filename(4)
    path.write_bytes(path.read_bytes()[:1000])
    _fails_cleanly(["--run_id", run_id], capsys, ["sha256"], run_id)


class Exploit:
    ran = False

    def __reduce__(self):
        return (setattr, (Exploit, "ran", True))


def test_checkpoint_holding_pickled_code_is_never_executed(mlflow_store, capsys):
    run_id = _train()
    art = _artifact_dir(run_id) / "checkpoints"
    evil = art / ck.filename(8)
    payload = ck.safe_load(evil)
    payload["hook"] = Exploit()
    torch.save(payload, evil)
    # an attacker who can write the store can also rewrite the index: the hash then matches
    index = ck.read_index(art / ck.INDEX_FILE)
    index = [
        ck.IndexEntry(e.step, e.epoch, e.file, ck.sha256(evil) if e.file == evil.name else e.sha256) for e in index
    ]
    ck.write_index(art, index)
    _fails_cleanly(["--run_id", run_id], capsys, ["refused to load"], run_id)
    assert Exploit.ran is False


def test_checkpoint_of_another_architecture(mlflow_store, capsys, tmp_path):
    run_id = _train()
    # the run's config now claims a wider network than its checkpoints hold
    art = _artifact_dir(run_id)
    config = json.loads((art / "config.json").read_text())
    config["width"] = 8
    (art / "config.json").write_text(json.dumps(config))
    _fails_cleanly(["--run_id", run_id], capsys, ["architecture"], run_id)


def test_bad_parameters_exit_2(mlflow_store, capsys):
    assert analyze_ep.main(["--run_id", "x", "--splits", "val"]) == 2
    assert "splits" in capsys.readouterr().err
    assert analyze_ep.main([]) == 2
    assert "run_id is required" in capsys.readouterr().err


def test_a_write_back_refusal_is_one_tagged_line_not_a_traceback(mlflow_store, capsys, monkeypatch):
    """A refusal from the write-back itself (here: another writer's unreadable marker appears while this
    analysis computes) is handled as every other refusal: one `tc analyze:` line, tc.error, the run FAILED."""
    run_id = _train()
    real = jobs.analyze_logged_run

    def analysis_then_a_foreign_marker(cfg, **kw):
        out = real(cfg, **kw)
        MlflowClient().set_tag(run_id, analyses.ANALYSIS_WRITING_TAG, "not json")
        return out

    monkeypatch.setattr(jobs, "analyze_logged_run", analysis_then_a_foreign_marker)
    assert analyze_ep.main(["--run_id", run_id, "--max_samples", "40", "--splits", "test"]) == 2  # refused
    err = capsys.readouterr().err  # progress lines, then the refusal
    last = err.strip().splitlines()[-1]
    assert (
        "Traceback" not in err and last.startswith(f"tc analyze: run {run_id}: ") and "not an analysis marker" in last
    )
    analysis = _latest_run()
    assert analysis.info.status == "FAILED" and "is not an analysis marker" in analysis.data.tags["tc.error"]
    assert _tc_metrics(run_id) == {}  # nothing logged as if it were a result
