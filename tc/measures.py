"""Baseline generalization measures of a final checkpoint (Jiang et al. 2020, 2022), to set beside temporal
consistency on the same trials. Each takes a model (eval mode; BatchNorm uses its running statistics) and
plain tensors, returns one float, and is timed by `compute_all` so users can weigh power against price.

θ: all trainable parameters; θ_0: the initialisation (step 0); W_l: the weight of layer l (a convolution
reshaped to [out, in * k * k]); f(x) ∈ R^K the logits; L: mean cross-entropy on the given data.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
from torch import nn


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def param_norm(model: nn.Module) -> float:
    """||θ||_2."""
    return float(_params(model).norm())


def dist_from_init(model: nn.Module, init: nn.Module) -> float:
    """||θ - θ_0||_2."""
    return float((_params(model) - _params(init)).norm())


def log_spectral_product(model: nn.Module) -> float:
    """log Π_l σ_max(W_l) = Σ_l log σ_max(W_l) over convolution and linear weights."""
    total = 0.0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().flatten(1).double()
            total += math.log(float(torch.linalg.matrix_norm(w, ord=2)))
    return total


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, q: float = 0.1) -> float:
    """The q-quantile (default 10th percentile) over training samples of f_y(x) - max_{j≠y} f_j(x)."""
    logits = _logits(model, x)
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -math.inf).max(dim=1).values
    return float(torch.quantile(true - other, q))


def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """L(θ) = mean cross-entropy (eval mode)."""
    return float(nn.functional.cross_entropy(_logits(model, x), y))


def sharpness(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float = 0.05, draws: int = 5, seed: int = 0
) -> float:
    """Magnitude-aware average sharpness: mean over `draws` of L(θ + δ) - L(θ), δ_i ~ N(0, (σ |θ_i|)²),
    seeded. An average-case (PAC-Bayes-style) perturbation, not a worst-case ascent."""
    base = loss(model, x, y)
    g = torch.Generator().manual_seed(seed)
    increases = []
    for _ in range(draws):
        noisy = copy.deepcopy(model)
        with torch.no_grad():
            for p in noisy.parameters():
                p.add_(torch.randn(p.shape, generator=g) * sigma * p.abs())
        increases.append(loss(noisy, x, y) - base)
    return float(sum(increases) / draws)


def disagreement(model: nn.Module, other: nn.Module, x: torch.Tensor) -> float:
    """Fraction of inputs on which two independently seeded networks predict different classes (Jiang et al.
    2022: it tracks test error)."""
    return float((_logits(model, x).argmax(1) != _logits(other, x).argmax(1)).double().mean())


def compute_all(
    model: nn.Module,
    init: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    other: nn.Module | None = None,
    x_test: torch.Tensor | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, float]]:
    """({gm_<name>: value}, {gm_<name>: seconds})."""
    jobs: dict[str, Callable[[], float]] = {
        "param_norm": lambda: param_norm(model),
        "dist_init": lambda: dist_from_init(model, init),
        "log_spectral_product": lambda: log_spectral_product(model),
        "margin": lambda: margin(model, x_train, y_train),
        "train_loss": lambda: loss(model, x_train, y_train),
        "sharpness": lambda: sharpness(model, x_train, y_train, seed=seed),
    }
    if other is not None and x_test is not None:
        jobs["disagreement"] = lambda: disagreement(model, other, x_test)
    values, seconds = {}, {}
    for name, job in jobs.items():
        t0 = time.perf_counter()
        values[f"gm_{name}"] = job()
        seconds[f"gm_{name}"] = time.perf_counter() - t0
    return values, seconds
