"""Baseline measures on cases with known answers."""

import math

import pytest
import torch
from torch import nn

from tc import measures as M


def _linear(weight, bias=None):
    m = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        m.weight.copy_(weight)
        if bias is not None:
            m.bias.copy_(bias)
    return m


def test_param_norm_and_distance_from_init():
    a = _linear(torch.ones(2, 3))
    b = _linear(torch.ones(2, 3) * 3)
    assert M.param_norm(a) == pytest.approx(math.sqrt(6))
    assert M.dist_from_init(b, a) == pytest.approx(2 * math.sqrt(6))
    assert M.dist_from_init(a, a) == 0


def test_log_spectral_product_sums_log_largest_singular_values():
    net = nn.Sequential(_linear(torch.diag(torch.tensor([3.0, 0.5]))), nn.ReLU(), _linear(torch.tensor([[0.0, 2.0]])))
    assert M.log_spectral_product(net) == pytest.approx(math.log(3.0) + math.log(2.0))
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(4.0)
    assert M.log_spectral_product(conv) == pytest.approx(math.log(4.0))


def test_margin_is_the_quantile_of_true_minus_best_other_logit():
    net = _linear(torch.eye(3))  # logits = inputs
    x = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.5], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    y = torch.tensor([0, 1, 1, 2])  # margins 2, 0.5, -1, -1
    assert M.margin(net, x, y, q=0.0) == pytest.approx(-1.0)
    assert M.margin(net, x, y, q=1.0) == pytest.approx(2.0)


def test_loss_sharpness_and_disagreement():
    net = _linear(torch.eye(3) * 5)
    x, y = torch.eye(3), torch.arange(3)
    expected = -math.log(math.exp(5) / (math.exp(5) + 2))
    assert M.loss(net, x, y) == pytest.approx(expected, rel=1e-5)
    assert M.sharpness(net, x, y, sigma=0.0) == 0
    s1, s2 = M.sharpness(net, x, y, sigma=0.5, seed=1), M.sharpness(net, x, y, sigma=0.5, seed=1)
    assert s1 == s2 and s1 != 0
    other = _linear(torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]))
    assert M.disagreement(net, other, x) == pytest.approx(2 / 3)
    assert M.disagreement(net, net, x) == 0


def test_compute_all_times_every_measure():
    net, init = _linear(torch.eye(3)), _linear(torch.zeros(3, 3))
    x, y = torch.eye(3), torch.arange(3)
    values, seconds = M.compute_all(net, init, x, y, other=net, x_test=x)
    assert (
        set(values)
        == set(seconds)
        == {
            f"gm_{n}"
            for n in (
                "param_norm",
                "dist_init",
                "log_spectral_product",
                "margin",
                "train_loss",
                "sharpness",
                "disagreement",
            )
        }
    )
    assert values["gm_disagreement"] == 0 and all(s >= 0 for s in seconds.values())
