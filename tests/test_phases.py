"""Issue 21's phase work: the whole networks read from the composites' diagonal (against the old second
forward pass, `benchmarks.reference.old_network_predictions`), an analysis's consistency metrics against the
old path, the phase timers, and the phase benchmark (its FLOP counter, and its --smoke run)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import pytest
import torch

import tc.analysis.composites as composites
import tc.analysis.consistency as consistency
import tc.analysis.controls as controls
from benchmarks import analyze_phases
from benchmarks.reference import old_network_predictions
from tc.analysis.inputs import RunContext
from tc.analysis.run import analyze_run
from tc.analysis.splits import EvalSplit
from tc.config import AnalyzeConfig, TrainConfig
from tc.core.checkpoints import Checkpoints
from tc.core.compose import ComposeOptions, composite_outputs, composite_outputs_naive
from tc.core.data import iterate_batches, load_data
from tc.core.models import ModelSpec, build_model
from tests.test_compose import _checkpoints, _data


@pytest.mark.parametrize("columns", [None, [3]])
def test_whole_networks_of_the_composite_pass_equal_the_old_forward_on_a_batchnorm_cnn(columns):
    """The diagonal g[i, i] (full matrix) and, for the final column only, the shallow passes continued to the
    head (`networks`) are the old separate forward pass, prediction for prediction (contiguous, as it ran)."""
    model, sds = _checkpoints()  # ResNet with BatchNorm statistics made non-trivial
    x, y = _data()
    opts = ComposeOptions(columns=columns, batch_size=16, channels_last=False, networks=True)
    outs = composite_outputs(model, sds, sds, (x, y), model.cuts, opts)
    old = old_network_predictions(model, sds, x, batch_size=16)
    for out in outs.values():
        assert torch.equal(out.network_pred, old)
    # the diagonal of every cut is that one result
    if columns is None:
        for out in outs.values():
            assert torch.equal(torch.stack([out.pred[i, i] for i in range(len(sds))]), old)
    # channels_last (the analysis's format) differs from the contiguous forward only at float rounding
    fast = composite_outputs(model, sds, sds, (x, y), model.cuts, ComposeOptions(columns=columns, networks=True))
    assert (fast[model.cuts[0]].network_pred == old).double().mean() >= 0.99
    # without `networks`, only the diagonal's whole networks are computed: for the final column, the final one
    bare = composite_outputs(model, sds, sds, (x, y), [1], ComposeOptions(columns=[3], channels_last=False))[1]
    assert (bare.network_pred[:3] == -1).all() and torch.equal(bare.network_pred[3], old[3])


def test_network_predictions_read_the_split_outputs_and_fall_back_to_a_forward():
    model, sds = _checkpoints()
    data = load_data("digits", train_size=64)
    x = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    split = EvalSplit("test", x, torch.randint(10, (20,), generator=torch.Generator().manual_seed(2)))
    cfg = AnalyzeConfig(run_id="x", batch_size=8, cuts="1,3")
    plan = composites.make_plan(Checkpoints([0, 1, 2, 3], sds), data, cfg, model)
    outs = composites.split_outputs(plan, split)
    got = composites.network_predictions(plan, [1, 2, 3], split, outs)
    assert torch.equal(got, outs[1].network_pred[[1, 2, 3]])
    old = old_network_predictions(model, sds[1:], data.normalize(x), batch_size=8)
    assert torch.equal(composites.network_predictions(plan, [1, 2, 3], split), old)  # no outputs: the forward
    # tc_full is fp32: a bf16 analysis's whole networks are the fp32 forward, not its bf16 diagonal
    bf16 = composites.make_plan(Checkpoints([0, 1, 2, 3], sds), data, replace(cfg, precision="bf16"), model)
    assert torch.equal(
        composites.network_predictions(bf16, [1, 2, 3], split, composites.split_outputs(bf16, split)), old
    )


def _digits_run(n_ckpts: int = 5):
    """A tiny digits MLP trained for a few epochs: its checkpoints, the data and a RunContext."""
    data = load_data("digits", train_size=256)
    torch.manual_seed(0)
    model = build_model(ModelSpec.of(TrainConfig(dataset="digits", model="mlp", width=16), data))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps, states = [0], [{k: v.clone() for k, v in model.state_dict().items()}]
    for epoch in range(n_ckpts - 1):
        for xb, yb in iterate_batches(data, 32, seed=0, epoch=epoch, augment=False):
            loss = torch.nn.functional.cross_entropy(model(data.normalize(xb)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        steps.append(8 * (epoch + 1))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    torch.manual_seed(1)
    other = build_model(ModelSpec.of(TrainConfig(dataset="digits", model="mlp", width=16), data))
    ref = Checkpoints([0, 40], [states[0], {k: v.clone() for k, v in other.state_dict().items()}])
    return Checkpoints(steps, states), data, RunContext(model, 32, 0, reference=ref)


@pytest.mark.parametrize("matrix", ["full", "final"])
def test_consistency_metrics_equal_the_old_path_on_a_tiny_digits_run(monkeypatch, matrix):
    """Every consistency metric (and the matrices table) of an analysis equals what the old path gives on the
    same inputs: a splice-and-forward composite per pair (`composite_outputs_naive`, also for the cross-seed
    control) and the whole networks by a second forward pass (`old_network_predictions`)."""
    ckpts, data, run = _digits_run()
    cfg = AnalyzeConfig(run_id="x", max_samples=60, batch_size=16, anisotropy=False, measures=False, matrix=matrix)
    new = analyze_run(ckpts, data, cfg, run)

    def naive(model, shallow, deep, xy, cuts, opts):
        plain = ComposeOptions(columns=opts.columns, batch_size=opts.batch_size, device=opts.device)
        return composite_outputs_naive(model, shallow, deep, xy, cuts, plain)  # contiguous, one forward per pair

    def old_networks(plan, indices, split, outs=None):
        sds = [plan.ckpts.state_dicts[i] for i in indices]
        return old_network_predictions(plan.model, sds, plan.data.normalize(split.x), plan.cfg.batch_size)

    monkeypatch.setattr(composites, "composite_outputs", naive)
    monkeypatch.setattr(controls, "composite_outputs", naive)
    monkeypatch.setattr(consistency, "network_predictions", old_networks)
    old = analyze_run(ckpts, data, cfg, run)
    timed = {k for k in new.metrics if k.endswith("_seconds")}
    drift = {k for k in new.metrics if k.startswith("drift_")}  # the naive path keeps no features: no drift
    assert set(old.metrics) - timed == set(new.metrics) - timed - drift
    assert {k for k in new.metrics if k.startswith("tc_test_crossseed")} and "tc_full_test" in new.metrics
    differ = {k: (new.metrics[k], v) for k, v in old.metrics.items() if k not in timed and not _same(new.metrics[k], v)}
    assert differ == {}
    assert new.matrices.equals(old.matrices)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_every_phase_logs_its_seconds_and_the_sums_hold():
    ckpts, data, run = _digits_run(n_ckpts=4)
    cfg = AnalyzeConfig(run_id="x", max_samples=30, batch_size=16, anisotropy=False, measures=False)
    m = analyze_run(ckpts, data, cfg, run).metrics
    parts = [f"tc_{name}_seconds" for name in cfg.split_names] + ["controls_seconds"]
    assert all(m[k] >= 0 for k in [*parts, "splits_seconds", "analysis_seconds"])
    assert sum(m[k] for k in parts) <= m["analysis_seconds"]  # the sum of its phases and their set-up


def test_the_benchmark_flop_counter_gives_the_hand_counted_flops_of_a_small_mlp():
    # mlp depth 3, width 16, 8x8 inputs, 10 classes: Linear 64->16, 16->16, 16->16, 16->10; 2 FLOPs a multiply-add
    model = build_model(ModelSpec("mlp", 3, 16, in_channels=1, image_size=8, num_classes=10))
    x1 = torch.randn(1, 1, 8, 8)
    assert analyze_phases.flops(model, x1) == 2 * (64 * 16 + 16 * 16 + 16 * 16 + 16 * 10)
    parts = analyze_phases.part_flops(model, model.state_dict(), x1, [1, 2, 3])
    assert parts["full"] == 3392
    assert parts["shallow"] == {1: 2 * 64 * 16, 2: 2 * (64 * 16 + 256), 3: 2 * (64 * 16 + 512)}
    assert parts["deep"] == {1: 2 * (256 + 256 + 160), 2: 2 * (256 + 160), 3: 2 * 160}
    assert parts["dim"] == {1: 16, 2: 16, 3: 16}
    # a batch of b costs b times a batch of one
    assert analyze_phases.flops(model, torch.randn(7, 1, 8, 8)) == 7 * 3392


def test_the_phase_benchmark_smoke_run_prints_its_table(capsys, tmp_path):
    path = tmp_path / "phases.json"  # what scripts/gpu_check.sh reads (scripts/compare_metrics.py)
    analyze_phases.main(["--smoke", "--json", str(path)])
    out = capsys.readouterr().out
    assert "# CPU:" in out and "load average" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| phase")]
    phases = {row.split("|")[1].strip(): row.split("|")[2:-1] for row in rows}
    for name in ("tc_train", "tc_test", "tc_corrupt", "splits", "anisotropy", "gm_sharpness", "tc_mmd"):
        assert name in phases, name
        assert float(phases[name][0]) >= 0
    # a phase with a forward floor gets a ratio (of the unrounded seconds and floor); splits of one size share a floor
    assert all(re.fullmatch(r"\d+\.\d\dx", phases[name][2].strip()) for name in ("tc_test", "anisotropy", "tc_mmd"))
    assert phases["tc_train"][1] == phases["tc_test"][1] == phases["tc_corrupt"][1]
    assert phases["splits"][1].strip() == "-"  # no forward floor
    assert re.search(r"whole networks, test: \d+ of \d+ predictions", out)
    # the JSON: the device, the CPU, every metric of the analysis (floats) and each table row's seconds
    saved = json.loads(path.read_text())
    assert set(saved) == {"device", "cpu", "metrics", "phases"} and saved["device"] == "cpu" and saved["cpu"]
    assert saved["metrics"]["tc_test"] >= 0 and all(isinstance(v, float) for v in saved["metrics"].values())
    assert {"tc_test_seconds", "analysis_seconds", "splits_seconds"} <= set(saved["metrics"])
    assert set(phases) - {"analyze_run (wall)"} <= set(saved["phases"]) and "analyze_run" in saved["phases"]
    assert saved["phases"]["tc_test"] == saved["metrics"]["tc_test_seconds"]
