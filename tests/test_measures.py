"""Baseline measures on cases with known answers."""

import math

import pytest
import torch
from torch import nn

from tc.core import baselines as M


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


def _jacobian_norm(module, shape):
    """Largest singular value of the explicit matrix of the linear map x -> module(x) - module(0)."""
    module = module.double().eval()
    zero = torch.zeros(shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: module(z) - module(zero), zero)
    return float(torch.linalg.matrix_norm(jac.reshape(-1, zero.numel()), ord=2))


@pytest.mark.parametrize(
    "kw",
    [
        dict(stride=2, padding=1),
        dict(stride=1, padding=0),
        dict(stride=2, padding=2, dilation=2),
        dict(stride=1, padding=1, groups=3),
        dict(stride=3, padding=1, bias=True),
    ],
)
def test_operator_norm_of_a_conv_is_the_largest_singular_value_of_its_matrix(kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, **{"bias": False, **kw})
    shape = (1, 3, 6, 6)
    assert M.operator_norm(conv, shape) == pytest.approx(_jacobian_norm(conv, shape), rel=1e-4)


def test_operator_norm_folds_batchnorm_and_handles_linear():
    torch.manual_seed(1)
    seq = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        seq[1].weight.uniform_(0.2, 3.0)
        seq[1].running_var.uniform_(0.1, 4.0)
        seq[1].running_mean.normal_()
    assert M.operator_norm(seq, (1, 2, 5, 5)) == pytest.approx(_jacobian_norm(seq, (1, 2, 5, 5)), rel=1e-4)
    lin = nn.Linear(7, 4)
    expected = float(torch.linalg.matrix_norm(lin.weight.detach(), 2))
    assert M.operator_norm(lin, (1, 7)) == pytest.approx(expected, rel=1e-4)


def test_conv_operator_norm_exceeds_the_reshaped_kernel_norm():
    # a 3x3 box filter: σ_max of the reshaped kernel is 3, its operator norm on large images nears 9
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    assert float(torch.linalg.matrix_norm(conv.weight.detach().flatten(1), 2)) == pytest.approx(3.0)
    assert M.operator_norm(conv, (1, 1, 16, 16)) == pytest.approx(_jacobian_norm(conv, (1, 1, 16, 16)), rel=1e-4)
    assert M.operator_norm(conv, (1, 1, 16, 16)) > 8.5


def test_log_spectral_product_of_layers_and_of_a_residual_block():
    net = nn.Sequential(_linear(torch.diag(torch.tensor([3.0, 0.5]))), nn.ReLU(), _linear(torch.tensor([[0.0, 2.0]])))
    assert M.log_spectral_product(net, (1, 2)) == pytest.approx(math.log(3.0) + math.log(2.0), rel=1e-6)
    from tc.core.models import BasicBlock

    torch.manual_seed(2)
    block = BasicBlock(2, 4, stride=2).eval()
    with torch.no_grad():
        for bn in (block.bn1, block.bn2, block.shortcut[1]):
            bn.weight.uniform_(0.5, 2.0)
            bn.running_var.uniform_(0.5, 2.0)
    shape = (1, 2, 6, 6)
    b1 = _jacobian_norm(nn.Sequential(block.conv1, block.bn1), shape)
    b2 = _jacobian_norm(nn.Sequential(block.conv2, block.bn2), (1, 4, 3, 3))
    sc = _jacobian_norm(block.shortcut, shape)
    # parallel, not in series: log(‖shortcut‖ + ‖branch‖), with BatchNorm folded into each conv
    assert M.log_spectral_product(block.float(), shape) == pytest.approx(math.log(sc + b1 * b2), rel=1e-4)


def _hand_rise(weight, bias, x, y, sigma, draws=5, seed=0, eps=1e-3):
    """The mean loss increase of a linear softmax classifier under the documented perturbation, by hand."""
    base = nn.functional.cross_entropy(x @ weight.T + bias, y)
    rises = []
    for k in range(draws):
        g = torch.Generator().manual_seed(seed + k)
        dw = torch.randn(weight.shape, generator=g) * sigma * (weight.abs() + eps)
        db = torch.randn(bias.shape, generator=g) * sigma * (bias.abs() + eps)
        rises.append(float(nn.functional.cross_entropy(x @ (weight + dw).T + (bias + db), y) - base))
    return sum(rises) / draws


def test_sharpness_sigma_is_where_the_loss_rises_by_the_target():
    torch.manual_seed(3)
    w, b = torch.randn(3, 4) * 2, torch.randn(3)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    sigma = M.sharpness_sigma(_linear(w, b), x, y, M.SharpnessOptions(target=0.1))
    assert _hand_rise(w, b, x, y, sigma) <= 0.1 < _hand_rise(w, b, x, y, sigma * 1.02)
    assert M.sharpness(_linear(w, b), x, y, M.SharpnessOptions(target=0.1)) == pytest.approx(1 / sigma**2)


def test_sharpness_perturbs_zero_weights_and_ranks_a_sharper_model_sharper():
    x, y = torch.randn(40, 4, generator=torch.Generator().manual_seed(4)), torch.arange(40) % 3
    zero = _linear(torch.zeros(3, 4), torch.zeros(3))
    assert M.sharpness_sigma(zero, x, y) < 1e3  # the old σ|θ| noise never moved a zero weight
    torch.manual_seed(5)
    w, b = torch.randn(3, 4), torch.randn(3)
    # the same classifier on inputs scaled by 3: every weight perturbation moves the logits 3x as far
    assert M.sharpness_sigma(_linear(w, b), 3 * x, y) < M.sharpness_sigma(_linear(w, b), x, y)


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
    s1, s2 = M.sharpness(net, x, y, M.SharpnessOptions(seed=1)), M.sharpness(net, x, y, M.SharpnessOptions(seed=1))
    assert s1 == s2 and s1 > 0
    other = _linear(torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]))
    assert M.disagreement(net, other, x) == pytest.approx(2 / 3)
    assert M.disagreement(net, net, x) == 0


def test_compute_all_times_every_measure():
    net, init = _linear(torch.eye(3)), _linear(torch.zeros(3, 3))
    x, y = torch.eye(3), torch.arange(3)
    values, seconds = M.compute_all(net, init, (x, y), other=net, x_test=x)
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
                "js_disagreement",
            )
        }
    )
    assert values["gm_disagreement"] == 0 and all(s >= 0 for s in seconds.values())
    assert values["gm_js_disagreement"] == 0  # a network against itself: the same distribution everywhere


def test_compute_all_skips_the_spectral_bound_for_a_traced_model_it_cannot_bound(capsys):
    """A torchvision or user model is cut into traced GraphModule blocks: the layer-wise operator-norm product
    needs tc's own block structure, so it is skipped, with its reason, into `skipped` (the analysis names it in
    a warning and counts it) instead of failing the whole analysis; a caller that takes no skips gets the error.
    The core prints nothing."""
    from tc.core.models import ModelSpec, build_model
    from tests.stage_models import small_net

    torch.manual_seed(0)
    net = build_model(ModelSpec("tests.stage_models:small_net", 0, 16, 3, 8, 10), factory=small_net)
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    skipped: dict[str, str] = {}
    values, seconds = M.compute_all(net, net, (x, y), skipped=skipped)
    assert "gm_log_spectral_product" not in values and "gm_log_spectral_product" not in seconds
    assert set(values) == {f"gm_{n}" for n in ("param_norm", "dist_init", "margin", "train_loss", "sharpness")}
    assert list(skipped) == ["gm_log_spectral_product"] and "cannot bound" in skipped["gm_log_spectral_product"]
    assert capsys.readouterr().out == ""
    with pytest.raises(TypeError, match="cannot bound"):
        M.compute_all(net, net, (x, y))
