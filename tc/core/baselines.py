"""Baseline generalization measures of a final checkpoint (Jiang et al. 2020, 2022), to set beside temporal
consistency on the same trials. Each takes a model (eval mode; BatchNorm uses its running statistics) and
plain tensors, returns one float, and is timed by `compute_all` so users can weigh power against price.

θ: all trainable parameters; θ_0: the initialisation (step 0); A_l: the linear map of layer l (a convolution
with its BatchNorm folded in) on the layer's actual input shape; f(x) ∈ R^K the logits; L: mean
cross-entropy on the given data.

Device: every measure computes where its model's parameters are (`compute_all(device=...)` moves them);
inputs are moved there. Seeded noise is drawn on the CPU and then moved, so a measure draws the same
perturbations on every device; ARPACK's iteration runs on the CPU, its operator applications on the device.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn
from torch.nn import functional as F

# the batched eval-mode forward and the two-network disagreement live with their soft version (JS); re-exported
from tc.core.divergence import disagreement as disagreement
from tc.core.divergence import mean_js, top1_disagreement
from tc.core.divergence import network_logits as _logits


def _device(module: nn.Module) -> torch.device:
    """Where `module` computes: the device of its first parameter or buffer (the CPU if it has none)."""
    t = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if t is None else t.device


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def param_norm(model: nn.Module) -> float:
    """||θ||_2."""
    return float(_params(model).norm())


def dist_from_init(model: nn.Module, init: nn.Module) -> float:
    """||θ - θ_0||_2."""
    return float((_params(model) - _params(init)).norm())


_AFFINE = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Identity,
)


def _check_affine(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        for child in module:
            _check_affine(child)
    elif not isinstance(module, _AFFINE):
        raise TypeError(f"operator_norm: {type(module).__name__} is not an affine layer (use {_AFFINE})")


def operator_norm(
    module: nn.Module, input_shape: tuple[int, ...], iters: int = 10000, tol: float = 1e-6, seed: int = 0
) -> float:
    """‖A‖_2 = max_{‖x‖=1} ‖A x‖_2, the exact ℓ2 operator norm (largest singular value) of the linear part
    A x = f(x) - f(0) of an affine module f on inputs of shape `input_shape` (the full tensor shape, batch
    included; batch 1 suffices since the map acts on each sample alike). `module`: a Conv2d (any stride,
    padding, dilation, groups, padding mode), a Linear, or a Sequential of affine layers such as Conv2d +
    BatchNorm2d, whose eval-mode scale γ/sqrt(var + eps) is thereby folded into the convolution.

    σ_max² is the top eigenvalue of AᵀA, found in float64 by Lanczos iteration (ARPACK's `eigsh`, the Krylov
    refinement of power iteration: plain power iteration crawls when the top singular values of a
    convolution cluster) on the operator v -> AᵀA v, with Aᵀ from autograd (the vector-Jacobian product of
    a conv is the transposed convolution with the right output padding), to relative tolerance `tol`.
    A convolution's operator norm is not σ_max of its reshaped kernel [out, in·k·k]: that underestimates it
    by up to a factor of the kernel size."""
    _check_affine(module)
    f = copy.deepcopy(module).double().eval()
    f.requires_grad_(False)
    n = math.prod(input_shape)
    gram = _folded_gram(f, input_shape) or _autograd_gram(f, input_shape)

    if n <= 2:  # ARPACK needs k < n
        a = np.stack([gram(e) for e in np.eye(n)])
        return float(math.sqrt(max(np.linalg.eigvalsh(a).max(), 0.0)))
    op, v0 = LinearOperator((n, n), matvec=gram, dtype=np.float64), np.random.default_rng(seed).standard_normal(n)
    top = eigsh(op, k=1, which="LA", tol=tol, maxiter=iters, v0=v0, return_eigenvectors=False)
    return float(math.sqrt(max(top[0], 0.0)))


def _autograd_gram(f: nn.Module, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """v -> AᵀA v for any affine f: f is affine, so its backward graph does not depend on the point; it is
    built once at 0 and reused."""
    device = _device(f)
    zero = torch.zeros(shape, dtype=torch.float64, device=device, requires_grad=True)
    f0 = f(zero)

    def gram(v: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).reshape(shape).to(device)
        with torch.no_grad():
            u = f(t) - f0
        return torch.autograd.grad(f0, zero, u, retain_graph=True)[0].reshape(-1).cpu().numpy()

    return gram


def _folded_gram(f: nn.Module, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray] | None:
    """The fast path for a Conv2d (zero padding) or Linear, optionally followed by a BatchNorm: the BatchNorm
    scale s = γ / sqrt(var + eps) folded into the weight (W' = s · W per output channel), Aᵀ as
    conv_transpose2d with the output padding that restores the input shape. None when f is not of that form."""
    layers = list(f) if isinstance(f, nn.Sequential) else [f]
    if not layers or not isinstance(layers[0], (nn.Conv2d, nn.Linear)) or len(layers) > 2:
        return None
    layer, w = layers[0], layers[0].weight.detach()
    if len(layers) == 2:
        bn = layers[1]
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or not bn.track_running_stats:
            return None
        scale = torch.ones_like(bn.running_var) if bn.weight is None else bn.weight.detach()
        scale = scale / torch.sqrt(bn.running_var + bn.eps)
        w = w * scale.view(-1, *([1] * (w.dim() - 1)))
    if isinstance(layer, nn.Linear):
        return lambda v: (torch.from_numpy(v).reshape(shape).to(w.device) @ w.T @ w).reshape(-1).cpu().numpy()
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return None
    kw = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
    out_hw = F.conv2d(torch.zeros(shape, dtype=torch.float64, device=w.device), w, **kw).shape[-2:]
    back = [
        (o - 1) * s - 2 * p + d * (k - 1) + 1
        for o, s, p, d, k in zip(out_hw, layer.stride, layer.padding, layer.dilation, w.shape[-2:], strict=True)
    ]
    output_padding = tuple(h - b for h, b in zip(shape[-2:], back, strict=True))

    def gram(v: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).reshape(shape).to(w.device)
        u = F.conv2d(t, w, **kw)
        return F.conv_transpose2d(u, w, output_padding=output_padding, **kw).reshape(-1).cpu().numpy()

    return gram


def _layer_terms(module: nn.Module, shape: tuple[int, ...]) -> tuple[float, tuple[int, ...]]:
    """(Σ log of the operator norms of `module`'s layers, output shape) on inputs of `shape`."""
    if hasattr(module, "conv1") and hasattr(module, "conv2") and hasattr(module, "shortcut"):  # a BasicBlock
        branch1 = nn.Sequential(module.conv1, module.bn1)
        branch2 = nn.Sequential(module.conv2, module.bn2)
        mid = _out_shape(branch1, shape)
        branch = operator_norm(branch1, shape) * operator_norm(branch2, mid)
        # residual: ‖shortcut + branch‖ ≤ ‖shortcut‖ + ‖branch‖ (the two are in parallel, not in series)
        return math.log(operator_norm(module.shortcut, shape) + branch), _out_shape(branch2, mid)
    if isinstance(getattr(module, "blocks", None), nn.ModuleDict):  # a BlockNet
        children = list(module.blocks.values())
    elif isinstance(module, (nn.Sequential, nn.ModuleDict)):
        children = list(module.children())
    elif isinstance(module, _AFFINE):
        children = [module]
    else:
        raise TypeError(f"log_spectral_product: cannot bound {type(module).__name__}")
    total, run = 0.0, []  # `run`: consecutive affine layers, taken as one linear map (conv + its BatchNorm)

    def flush(shape):
        nonlocal total, run
        if run and any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in run):
            total += math.log(operator_norm(nn.Sequential(*run), shape))
        out = _out_shape(nn.Sequential(*run), shape) if run else shape
        run = []
        return out

    start = shape
    for child in children:
        if isinstance(child, _AFFINE):
            run.append(child)
            continue
        shape = flush(start)
        if isinstance(child, (nn.ReLU, nn.MaxPool2d)):  # 1-Lipschitz, norm 1
            shape = _out_shape(child, shape)
        else:
            t, shape = _layer_terms(child, shape)
            total += t
        start = shape
    out = flush(start)  # before reading `total`: flush adds the last run's term
    return total, out


@torch.no_grad()
def _out_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    m = copy.deepcopy(module).eval()
    return tuple(m(torch.zeros(shape, device=_device(m))).shape)


def log_spectral_product(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """log Π_l ‖A_l‖_2 over the network's layers on inputs of `input_shape` (batch included; eval mode), with
    ‖·‖_2 the exact operator norm (`operator_norm`). A layer is a maximal run of affine modules: a
    convolution with the BatchNorm after it (folded in: BatchNorm's scale is part of the function, so the
    product tracks the function, not weight decay), or the head's pooling + linear map. A residual block
    contributes log(‖shortcut‖ + ‖conv2∘bn2‖·‖conv1∘bn1‖) (1 for an identity shortcut). ReLU and max
    pooling are 1-Lipschitz. The product bounds the network's Lipschitz constant (Jiang et al. 2020's
    spectral-norm product, with true operator norms in place of σ_max of reshaped kernels)."""
    return _layer_terms(model, tuple(input_shape))[0]


def margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, q: float = 0.1) -> float:
    """The q-quantile (default 10th percentile) over training samples of f_y(x) - max_{j≠y} f_j(x)."""
    return _margin_of(_logits(model, x), y, q)


def _margin_of(logits: torch.Tensor, y: torch.Tensor, q: float = 0.1) -> float:
    y = y.to(logits.device)
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -math.inf).max(dim=1).values
    return float(torch.quantile(true - other, q))


def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """L(θ) = mean cross-entropy (eval mode)."""
    return _loss_of(_logits(model, x), y)


def _loss_of(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float(nn.functional.cross_entropy(logits, y.to(logits.device)))


@dataclass(frozen=True)
class SharpnessOptions:
    """The knobs of the magnitude-aware sharpness search (`sharpness_sigma`): the loss rise `target`, `draws`
    seeded perturbations per σ (generator seeds `seed`, `seed` + 1, ...), the magnitude floor `eps`, `steps`
    bisections in log σ, and the largest σ tried, `sigma_max`."""

    target: float = 0.1
    draws: int = 5
    seed: int = 0
    eps: float = 1e-3
    steps: int = 6
    sigma_max: float = 1e3


class _Perturbation:
    """The σ search's σ-free work, done once: a working copy of the model, θ, s = |θ| + ε, and the seeded unit
    noises r_k (seed `opts.seed + k`, one CPU `randn` per parameter in order, moved to the device; memory:
    draws + 3 copies of θ). `increase(σ)` sets p <- θ + (r_k · σ) · s: the former deep copy's
    `p.add_(randn * σ * (|p| + ε))` in the same order, so bit-identical. `evals`: the σ values tried."""

    def __init__(self, model: nn.Module, opts: SharpnessOptions) -> None:
        self.model = copy.deepcopy(model)
        self.params = list(self.model.parameters())
        self.theta = [p.detach().clone() for p in self.params]
        self.scale = [t.abs() + opts.eps for t in self.theta]
        self.noise = []
        for k in range(opts.draws):
            g = torch.Generator().manual_seed(opts.seed + k)
            self.noise.append([torch.randn(p.shape, generator=g).to(p.device) for p in self.params])
        self.evals = 0

    @torch.no_grad()
    def increase(self, x: torch.Tensor, y: torch.Tensor, base: float, sigma: float) -> float:
        """mean over the draws of L(θ + δ_k) - `base`, δ_k = (r_k · σ) · s."""
        self.evals += 1
        increases = []
        for draw in self.noise:
            for p, theta, scale, r in zip(self.params, self.theta, self.scale, draw, strict=True):
                p.copy_(theta).add_(r * sigma * scale)
            increases.append(loss(self.model, x, y) - base)
        return float(sum(increases) / len(self.noise))


def sharpness_search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    opts: SharpnessOptions = SharpnessOptions(),
    base: float | None = None,
) -> tuple[float, int]:
    """(σ of `sharpness_sigma`, the number of σ it evaluated). `base`: L(θ) if the caller has it."""
    base = loss(model, x, y) if base is None else base
    noise = _Perturbation(model, opts)

    def rise(sigma):
        return noise.increase(x, y, base, sigma)

    lo, hi = 0.0, 1e-3
    while rise(hi) <= opts.target:
        lo, hi = hi, hi * 2
        if hi > opts.sigma_max:
            return opts.sigma_max, noise.evals
    for _ in range(opts.steps):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        lo, hi = (mid, hi) if rise(mid) <= opts.target else (lo, mid)
    return (lo if lo > 0 else hi / 2), noise.evals


def sharpness_sigma(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, opts: SharpnessOptions = SharpnessOptions()
) -> float:
    """Jiang et al. (2020)'s magnitude-aware PAC-Bayes search: the largest relative noise scale σ with

        E_δ[L(θ + δ)] - L(θ) <= target,   δ_i ~ N(0, (σ (|θ_i| + ε))²),

    L the mean training cross-entropy (eval mode, BatchNorm running statistics fixed), the expectation a mean
    over `opts.draws` seeded draws reused at every σ. ε = 1e-3 perturbs zero weights too (Jiang et al. add ε²
    to the variance; scaling ε by σ keeps σ = 0 noise-free so the search is well posed). σ is bracketed by
    doubling from 1e-3 (up to `opts.sigma_max`, returned if the loss never rises by `target`), then bisected
    `opts.steps` times in log σ (6: a resolution of 2^(1/64), about 1%), returning the lower end (the
    increase there is <= target). Smaller σ = sharper. Sampling unit: the training samples `x` (a mean
    loss), the noise averaged over `opts.draws` draws (drawn once, reused at every σ: `_Perturbation`)."""
    return sharpness_search(model, x, y, opts)[0]


def sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opts: SharpnessOptions = SharpnessOptions()) -> float:
    """1 / σ² with σ from `sharpness_sigma` (Jiang et al. 2020's `pacbayes.mag.flatness`): larger = sharper."""
    return 1.0 / sharpness_sigma(model, x, y, opts) ** 2


def compute_all(
    model: nn.Module,
    init: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    other: nn.Module | None = None,
    x_test: torch.Tensor | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    evals: dict[str, int] | None = None,
    skipped: dict[str, str] | None = None,
    leave_out: Collection[str] = (),
) -> tuple[dict[str, float], dict[str, float]]:
    """({gm_<name>: value}, {gm_<name>: seconds}) of `model` with its initialisation `init`, on the training
    samples `train` = (x, y); `gm_disagreement` (`disagreement`) and `gm_js_disagreement` (mean JS in bits between
    the two softmax outputs, `tc.core.divergence.mean_js`) with `other` (another seed) on `x_test` when both are given;
    `seed` seeds the sharpness perturbations. `device`: where to compute; the models are moved there (in
    place) and the samples copied there once (None: where `model` is).

    `evals`, when given, receives {gm_sharpness: σ values its search tried} (each `SharpnessOptions.draws`
    forwards over the training samples); `skipped`, {gm_log_spectral_product: why} when the model has a layer
    that bound cannot take (a traced user model; without `skipped`, its TypeError is raised). margin, train loss
    and the search's L(θ) share one logits pass, counted in each one's seconds and once in the wall time; so do
    the two disagreements, on the test inputs. `leave_out`: gm_<name>s not to compute (e.g. gm_sharpness)."""
    device = _device(model) if device is None else torch.device(device)
    model, init = model.to(device), init.to(device)
    other = other.to(device) if other is not None else None
    x_train, y_train = (t.to(device) for t in train)
    x_test = x_test.to(device) if x_test is not None else None
    shared: dict = {}  # passes several measures read (from the first job that needs them), and their seconds
    passes = {
        "train": lambda: _logits(model, x_train),
        "test": lambda: (_logits(model, x_test), _logits(other, x_test)),
    }

    def once(key: str):
        if key not in shared:
            t0 = time.perf_counter()
            shared[key] = passes[key]()
            shared[f"{key}_seconds"] = time.perf_counter() - t0
        return shared[key]

    def sharpness_job() -> float:
        opts = SharpnessOptions(seed=seed)
        sigma, tried = sharpness_search(model, x_train, y_train, opts, base=_loss_of(once("train"), y_train))
        if evals is not None:
            evals["gm_sharpness"] = tried
        return 1.0 / sigma**2  # = `sharpness`

    jobs: dict[str, Callable[[], float]] = {
        "param_norm": lambda: param_norm(model),
        "dist_init": lambda: dist_from_init(model, init),
        "log_spectral_product": lambda: log_spectral_product(model, (1, *x_train.shape[1:])),
        "margin": lambda: _margin_of(once("train"), y_train),
        "train_loss": lambda: _loss_of(once("train"), y_train),
        "sharpness": sharpness_job,
    }
    if other is not None and x_test is not None:  # both networks' test logits, once for the two disagreements
        jobs["disagreement"] = lambda: top1_disagreement(*once("test"))  # = `disagreement`
        jobs["js_disagreement"] = lambda: mean_js(*once("test"))
    values, seconds = {}, {}  # gm_<name> -> its value, its seconds
    for name, job in ((n, j) for n, j in jobs.items() if f"gm_{n}" not in leave_out):
        t0 = time.perf_counter()
        try:
            values[f"gm_{name}"] = job()
        except TypeError as e:  # the layer-wise bound needs tc's own block structure (not a traced user model)
            if name != "log_spectral_product" or skipped is None:
                raise
            skipped[f"gm_{name}"] = str(e)
            continue
        seconds[f"gm_{name}"] = time.perf_counter() - t0
    # margin and gm_disagreement ran first: a shared pass is in their own time, and added to the others'
    for name, key in (("gm_train_loss", "train"), ("gm_sharpness", "train"), ("gm_js_disagreement", "test")):
        if name in seconds:
            seconds[name] += shared.get(f"{key}_seconds", 0.0)
    return values, seconds
