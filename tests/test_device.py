"""tc.core.device: the CPU checks, the guard against oneDNN's faulty AVX2 kernel, and the bf16 fallback (issue 11)."""

from __future__ import annotations

import torch
from mlflow.tracking import MlflowClient
from torch import nn

from entrypoints import analyze as analyze_ep
from entrypoints import train as train_ep
from tc.core import device as D
from tc.core.models import ModelSpec, build_model


def test_onednn_cap_below_avx512_is_seen(monkeypatch):
    monkeypatch.setattr(D, "cpu_capability", lambda: "AVX512")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not D.onednn_has_avx512()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core")
    assert D.onednn_has_avx512()
    monkeypatch.setattr(D, "cpu_capability", lambda: "AVX2")
    assert not D.onednn_has_avx512()


def test_guard_rewrites_only_narrow_strided_1x1_convs_and_keeps_the_function(monkeypatch):
    torch.manual_seed(0)
    net = build_model(ModelSpec("resnet20", 8, 4, 1, 8, 10))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(16, 1, 8, 8)
    net.eval()
    ref = net(x)
    monkeypatch.setattr(D, "onednn_has_avx512", lambda: True)
    assert D.guard_cpu_kernels(net, torch.device("cpu")) == 0  # AVX-512: torch's kernels are correct
    monkeypatch.setattr(D, "onednn_has_avx512", lambda: False)
    assert D.guard_cpu_kernels(net, torch.device("cpu")) == 1  # block2's 4 -> 8 shortcut; block3's has 8 inputs
    assert isinstance(net.blocks.block2.shortcut[0], D.SubsampledConv1x1)
    assert type(net.blocks.block3.shortcut[0]) is nn.Conv2d
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)


def test_subsampled_conv_matches_strided_conv_and_its_gradients():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 1, stride=2, bias=False)
    x = torch.randn(8, 4, 9, 9, requires_grad=True)
    with torch.backends.mkldnn.flags(enabled=False):  # the reference: ATen's own kernels
        conv(x).square().sum().backward()
    ref_w, ref_x = conv.weight.grad.clone(), x.grad.clone()
    conv.weight.grad, x.grad = None, None
    conv.__class__ = D.SubsampledConv1x1
    conv(x).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, ref_w)
    torch.testing.assert_close(x.grad, ref_x)


def test_bf16_falls_back_to_fp32_without_native_support(monkeypatch):
    monkeypatch.setattr(D, "has_native_bf16", lambda: True)
    assert D.resolve_precision("bf16", torch.device("cpu")) == ("bf16", None)
    monkeypatch.setattr(D, "has_native_bf16", lambda: False)
    precision, why = D.resolve_precision("bf16", torch.device("cpu"))
    assert precision == "fp32" and "no native bf16" in why
    assert D.resolve_precision("fp32", torch.device("cpu")) == ("fp32", None)


def test_analyze_without_native_bf16_runs_fp32_says_so_once_and_tags_it(mlflow_store, monkeypatch, capsys):
    argv = ["--dataset", "digits", "--model", "mlp", "--epochs", "2", "--batch_size", "128", "--train_size", "256"]
    assert train_ep.main(argv) == 0
    run_id = MlflowClient().search_runs(["0"])[0].info.run_id
    monkeypatch.setattr(D, "has_native_bf16", lambda: False)
    capsys.readouterr()
    common = ["--run_id", run_id, "--max_samples", "60", "--splits", "test", "--anisotropy", "false"]
    assert analyze_ep.main([*common, "--measures", "false", "--precision", "bf16"]) == 0
    out = capsys.readouterr().out
    assert sum("no native bf16" in line for line in out.splitlines()) == 1
    run = MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])[0]
    assert run.data.tags["tc.precision_fallback"] == "bf16->fp32"
    assert "bf16_agreement" not in MlflowClient().get_run(run_id).data.metrics  # ran as fp32: no bf16 check
    monkeypatch.setattr(D, "has_native_bf16", lambda: True)
    assert analyze_ep.main([*common, "--measures", "false", "--precision", "bf16"]) == 0
    assert "no native bf16" not in capsys.readouterr().out
    run = MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])[0]
    assert "tc.precision_fallback" not in run.data.tags
    assert "bf16_agreement" in MlflowClient().get_run(run_id).data.metrics  # bf16 did run this time
