"""The σ search that reuses its draws across σ (issue 21, P7) against the frozen deep-copy search
(benchmarks.reference.old_sharpness_sigma): the same σ exactly, and an honest count of the σ it tried."""

import pytest
import torch
from torch import nn

import benchmarks.reference as R
from tc.core import baselines as M
from tests.stage_models import SmallNet


def _mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(300, 6)
    y = net(x).argmax(1)  # a network that fits its labels: the loss is low and rises under noise
    return net.eval(), x.detach(), y


def _bn_cnn():
    torch.manual_seed(1)
    net = SmallNet(num_classes=4, in_channels=1)
    for m in net.modules():  # non-trivial running statistics, used in eval mode
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(48, 1, 8, 8)
    with torch.no_grad():
        y = net.eval()(x).argmax(1)
    return net.eval(), x, y


class _Counting:
    """Counts the calls of a module-level loss function."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("make", [_mlp, _bn_cnn])
@pytest.mark.parametrize("opts", [M.SharpnessOptions(), M.SharpnessOptions(target=0.05, draws=3, seed=4, steps=4)])
def test_sigma_equals_the_deep_copy_search_exactly_and_counts_its_evaluations(make, opts, monkeypatch):
    net, x, y = make()
    before = [p.detach().clone() for p in net.parameters()]
    old_loss = _Counting(R._old_loss)
    monkeypatch.setattr(R, "_old_loss", old_loss)
    old = R.old_sharpness_sigma(net, x, y, opts)
    old_rises = (old_loss.calls - 1) / opts.draws  # one base loss, then `draws` losses per rise(σ)

    new_loss = _Counting(M.loss)
    monkeypatch.setattr(M, "loss", new_loss)
    sigma, evals = M.sharpness_search(net, x, y, opts)
    assert sigma == old  # bit-identical perturbations, so the same comparisons, so the same σ
    assert evals == old_rises and new_loss.calls == 1 + evals * opts.draws
    assert M.sharpness_sigma(net, x, y, opts) == old
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))  # the model is untouched


def test_compute_all_reports_the_evaluations_and_shares_the_logits_pass(monkeypatch):
    net, x, y = _bn_cnn()
    opts = M.SharpnessOptions(seed=2)
    evals: dict[str, int] = {}
    logits = _Counting(M._logits)
    monkeypatch.setattr(M, "_logits", logits)
    # a plain nn.Module: the layer-wise spectral bound cannot take it, and is skipped (named in `skipped`)
    skipped: dict[str, str] = {}
    values, seconds = M.compute_all(net, net, (x, y), seed=2, evals=evals, skipped=skipped)
    assert list(skipped) == ["gm_log_spectral_product"]
    # one clean pass serves margin, train loss and the search's L(θ); the rest are the perturbed passes
    assert logits.calls == 1 + evals["gm_sharpness"] * opts.draws
    monkeypatch.undo()
    old_loss = _Counting(R._old_loss)
    monkeypatch.setattr(R, "_old_loss", old_loss)
    assert values["gm_sharpness"] == 1 / R.old_sharpness_sigma(net, x, y, opts) ** 2
    assert evals == {"gm_sharpness": (old_loss.calls - 1) / opts.draws} and evals["gm_sharpness"] > opts.steps
    monkeypatch.undo()
    assert values["gm_train_loss"] == R._old_loss(net, x, y) and values["gm_margin"] == M.margin(net, x, y)
    assert seconds["gm_sharpness"] >= seconds["gm_margin"] > 0
