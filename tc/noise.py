"""The vectors whose anisotropy `tc.anisotropy` tests, taken from a run's checkpoints (SPEC section 5).

- `drift_vectors`: global-average-pooled feature drift Δz_t(x) = z_{t+1}(x) - z_t(x) at a cut, over
  consecutive checkpoints t of the window and samples x (rows: sample-checkpoint pairs; dimension: channels,
  so samples ≫ dimension).
- `gradient_noise`: per-minibatch gradients of the shallow parameters minus their mean over a partition of
  the training set (= the full-batch gradient), randomly projected to `proj_dim` dimensions with a seeded
  Gaussian matrix (a random projection keeps isotropic noise isotropic). Rows: minibatches.
- `perturbation_test`: the final deep part's accuracy when z_T(x) is perturbed by noise of norm
  ε ||z_T(x)|| along the top-k principal drift directions (full feature space, coefficients ~ N(0, λ_i))
  versus in a uniformly random direction.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tc.anisotropy import top_directions
from tc.compose import StateDict
from tc.models import BlockNet


def _model_at(model: BlockNet, sd: StateDict) -> BlockNet:
    m = copy.deepcopy(model)
    m.load_state_dict(sd)
    return m.eval()


@torch.inference_mode()
def features(model: BlockNet, sds: Sequence[StateDict], x: torch.Tensor, cut: int, batch_size: int = 256):
    """[T, N, ...] shallow features of every checkpoint at `cut`."""
    out = []
    for sd in sds:
        m = _model_at(model, sd)
        out.append(torch.cat([m.forward_blocks(x[a : a + batch_size], 0, cut) for a in range(0, len(x), batch_size)]))
    return torch.stack(out)


def pool(z: torch.Tensor) -> torch.Tensor:
    """Global average pooling of [..., C, H, W] feature maps; vectors pass through."""
    return z.mean(dim=(-2, -1)) if z.dim() >= 4 else z


def drift_vectors(feats: torch.Tensor) -> np.ndarray:
    """Rows Δz_t(x) for consecutive checkpoints, pooled: [(T - 1) * N, C]."""
    pooled = pool(feats)
    return (pooled[1:] - pooled[:-1]).reshape(-1, pooled.shape[-1]).double().numpy()


def gradient_noise(
    model: BlockNet,
    sd: StateDict,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    cuts: Sequence[int],
    proj_dim: int = 128,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """{cut: [n_batches, proj_dim]} minibatch gradient noise of the parameters of blocks [0, cut), in train
    mode (BatchNorm uses batch statistics, as SGD saw it). Memory: one P x proj_dim projection at a time."""
    m = _model_at(model, sd).train()
    grads = {cut: [] for cut in cuts}
    names = {cut: [n for n, _ in m.named_parameters() if m.block_of(n) in m.block_names[:cut]] for cut in cuts}
    params = dict(m.named_parameters())
    for x, y in batches:
        m.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(m(x), y).backward()
        for cut in cuts:
            grads[cut].append(torch.cat([params[n].grad.flatten() for n in names[cut]]))
    out = {}
    for cut in cuts:
        g = torch.stack(grads[cut]).double()  # [n, P]
        g = g - g.mean(dim=0)
        gen = torch.Generator().manual_seed(seed + cut)
        proj = torch.randn(g.shape[1], proj_dim, generator=gen, dtype=torch.float64) / proj_dim**0.5
        out[cut] = (g @ proj).numpy()
    return out


@torch.inference_mode()
def perturbation_test(
    model: BlockNet,
    sd_final: StateDict,
    z_final: torch.Tensor,
    drift_full: torch.Tensor,
    y: torch.Tensor,
    cut: int,
    eps: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    k: int = 3,
    seed: int = 0,
) -> list[tuple[float, str, float]]:
    """[(ε, kind, accuracy)] for kind in clean / structured / isotropic. `drift_full`: [n, D] full-space
    drift vectors defining the top-k directions; `z_final`: [N, ...] features of the final checkpoint."""
    m = _model_at(model, sd_final)
    flat = z_final.flatten(1).double()
    dirs, var = top_directions(drift_full.double().numpy(), k)
    dirs, var = torch.from_numpy(dirs), torch.from_numpy(var)
    g = torch.Generator().manual_seed(seed)
    norms = flat.norm(dim=1, keepdim=True)

    def acc(zf: torch.Tensor) -> float:
        logits = m.forward_blocks(zf.float().view_as(z_final), cut)
        return float((logits.argmax(1) == y).double().mean())

    rows = [(0.0, "clean", acc(flat))]
    for e in eps:
        coef = torch.randn(len(flat), len(var), generator=g, dtype=torch.float64) * var.sqrt()
        structured = coef @ dirs
        iso = torch.randn(flat.shape, generator=g, dtype=torch.float64)
        for kind, noise in (("structured", structured), ("isotropic", iso)):
            noise = noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-12) * e * norms
            rows.append((e, kind, acc(flat + noise)))
    return rows
