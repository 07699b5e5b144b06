"""The vectors whose anisotropy `tc.core.anisotropy` tests, taken from a run's checkpoints (SPEC section 5).

- `drift_vectors`: global-average-pooled feature drift Δz_t(x) = z_{t+1}(x) - z_t(x) at a cut, over
  consecutive checkpoints t and samples x, as an array [transitions, samples, channels] for
  `tc.core.anisotropy.drift_test` (which turns it into independent units: samples).
- `gradient_noise`: per-minibatch gradients of the shallow parameters minus their mean over the minibatches
  used, projected by `random_projection` (orthonormal columns, so isotropic noise stays isotropic; the old
  Gaussian matrix was far from orthonormal when P is not ≫ 128 and made isotropic noise look anisotropic).
  Rows: minibatches.
- `perturbation_test`: the final deep part's accuracy when z_T(x) is perturbed at norm ε ||z_T(x)|| inside
  a k-dimensional subspace: the top-k principal drift directions, k random orthonormal directions, or the
  bottom-k (smallest nonzero-variance) drift directions. Same k, same norm, same isotropic coefficients
  within the subspace: the kinds differ only in WHICH subspace (an isotropic perturbation of the whole
  D-dimensional space would hit a readout about sqrt(D / k) times harder per unit norm whatever the drift is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import linalg
from torch import nn

from tc.core.anisotropy import principal_directions
from tc.core.compose import StateDict
from tc.core.device import guard_cpu_kernels
from tc.core.models import BlockNet, at_state


@torch.inference_mode()
def features_at_cuts(
    model: BlockNet,
    sds: Sequence[StateDict],
    x: torch.Tensor,
    cuts: Sequence[int],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[int, torch.Tensor]:
    """{cut: [T, N, ...]} shallow features of every checkpoint at every cut in `cuts`, from one pass per
    checkpoint and sample chunk up to the deepest cut (each cut's features are the pass's intermediate tensor
    there: the same blocks on the same tensors as a pass per cut, so the numbers are the same bit for bit).
    Computed on `device` (one checkpoint's model there at a time) and returned on the CPU, where the
    statistics that use them run. Memory: every cut's features at once (Σ_cuts T·N·D floats)."""
    order = sorted(set(cuts))
    out: dict[int, list[torch.Tensor]] = {cut: [] for cut in order}
    for sd in sds:
        m = at_state(model, sd).to(device)
        chunks: dict[int, list[torch.Tensor]] = {cut: [] for cut in order}
        for a in range(0, len(x), batch_size):
            z, done = x[a : a + batch_size].to(device), 0
            for cut in order:
                z, done = m.forward_blocks(z, done, cut), cut
                chunks[cut].append(z.cpu())
        for cut in order:
            out[cut].append(torch.cat(chunks[cut]))
    return {cut: torch.stack(out[cut]) for cut in cuts}


def features(
    model: BlockNet,
    sds: Sequence[StateDict],
    x: torch.Tensor,
    cut: int,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """[T, N, ...] shallow features of every checkpoint at `cut` (`features_at_cuts` at one cut), computed on
    `device` and returned on the CPU."""
    return features_at_cuts(model, sds, x, [cut], batch_size, device)[cut]


def pool(z: torch.Tensor) -> torch.Tensor:
    """Global average pooling of [..., C, H, W] feature maps; vectors pass through."""
    return z.mean(dim=(-2, -1)) if z.dim() >= 4 else z


def drift_vectors(feats: torch.Tensor) -> np.ndarray:
    """Pooled drift Δz_t(x) of consecutive checkpoints: [T - 1, N, C] (transitions, samples, channels)."""
    pooled = pool(feats)
    return (pooled[1:] - pooled[:-1]).double().numpy()


def random_projection(p: int, dim: int, seed: int = 0) -> np.ndarray:
    """[p, min(p, dim)] matrix with orthonormal columns spanning a uniformly random subspace (QR of a seeded
    Gaussian matrix, signs fixed so the basis is Haar-distributed); the identity when p <= dim (no
    projection). An orthonormal projection maps N(0, σ² I_p) to N(0, σ² I_dim): isotropy is kept exactly."""
    if p <= dim:
        return np.eye(p)
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((p, dim)))
    return q * np.sign(np.diag(r))


def project_noise(g: np.ndarray, proj_dim: int = 128, seed: int = 0, chunk: int = 1 << 16) -> np.ndarray:
    """Rows g_b minus their mean, projected by `random_projection(P, proj_dim, seed)`: [n, min(P, proj_dim)].

    Streams the projection so that memory stays O(chunk x proj_dim) however large P is (a dense P x 128
    float64 matrix is 11 GB for resnet18's 11M parameters). Q = G R⁻¹ with R the Cholesky factor of GᵀG is
    exactly the sign-fixed QR factor of `random_projection` (the positive-diagonal QR is unique), so
    Qᵀ g = R⁻ᵀ (Gᵀ g) needs only the running sums GᵀG and Gᵀg over row chunks of the same seeded G."""
    g = np.asarray(g)
    n, p = g.shape
    if p <= proj_dim:
        return (g - g.mean(axis=0)).astype(np.float64)
    rng = np.random.default_rng(seed)
    gram = np.zeros((proj_dim, proj_dim))
    gtx = np.zeros((proj_dim, n))
    for a in range(0, p, chunk):
        rows = rng.standard_normal((min(chunk, p - a), proj_dim))  # same stream as one (p, dim) draw
        block = g[:, a : a + chunk].astype(np.float64)
        gram += rows.T @ rows
        gtx += rows.T @ (block - block.mean(axis=0)).T
    upper = np.linalg.cholesky(gram).T
    return linalg.solve_triangular(upper, gtx, trans="T").T


def gradient_noise(
    model: BlockNet,
    sd: StateDict,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    cuts: Sequence[int],
    proj_dim: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    method: str = "loop",
) -> dict[int, np.ndarray]:
    """{cut: [n_batches, min(P, proj_dim)]} minibatch gradient noise of the P parameters of blocks [0, cut),
    in train mode (BatchNorm uses batch statistics, as SGD saw it): g_b - ḡ projected (`project_noise`).
    The gradients are computed on `device`; the seeded projection runs on the CPU (numpy), so it draws the
    same random subspace wherever the gradients came from.

    Sampling unit: the minibatches in `batches` (analyze passes the first `grad_batches` full minibatches of
    the training run's epoch-0 shuffle, e.g. 32 of 39 at 5,000 examples and batch 128). ḡ is their mean, not
    the gradient of the whole training set: it estimates the full-batch gradient from the same batches, so
    the rows sum to zero and carry n - 1 degrees of freedom; `tc.core.anisotropy.analyze_samples` centres its
    null draws the same way, so its test is calibrated for that. (Batches of one shuffle are drawn without
    replacement; their exchangeable negative correlation is a common component that the centring removes.)
    Memory: the [n, P] float32 gradients plus a streamed projection (`project_noise`).

    `method`: "loop" (one backward pass per minibatch) or "vmap" (`torch.func.vmap` of `grad` over the
    minibatches, `VMAP_CHUNK` at a time; the same gradients to float rounding). The loop is the default: on
    a 2-core AVX-512 CPU vmap ran slower (issue 21, docs/benchmarks.md)."""
    if method not in ("loop", "vmap"):
        raise ValueError(f"method={method!r}: use loop or vmap")
    m = at_state(model, sd).to(device).train()
    guard_cpu_kernels(m, next(m.parameters()).device)  # weight gradients: oneDNN's AVX2 bug (tc/core/device.py)
    names = {cut: [n for n, _ in m.named_parameters() if m.block_of(n) in m.block_names[:cut]] for cut in cuts}
    grads = (_minibatch_grads_vmap if method == "vmap" else _minibatch_grads_loop)(m, batches, names, device)
    # float32 rows: the [n, P] gradients are the only P-sized array kept (1.4 GB for resnet18 at n = 32)
    return {cut: project_noise(grads[cut].numpy(), proj_dim, seed + cut) for cut in cuts}


def _minibatch_grads_loop(
    m: BlockNet, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], names: dict[int, list[str]], device
) -> dict[int, torch.Tensor]:
    """{cut: [n, P_cut]} float32 on the CPU: one backward pass per minibatch."""
    grads: dict[int, list[torch.Tensor]] = {cut: [] for cut in names}
    params = dict(m.named_parameters())
    for x, y in batches:
        m.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(m(x.to(device)), y.to(device)).backward()
        for cut in names:  # to the CPU per minibatch: the device holds one minibatch's gradients, not n of them
            grads[cut].append(torch.cat([params[n].grad.flatten() for n in names[cut]]).cpu())
    return {cut: torch.stack(rows) for cut, rows in grads.items()}


VMAP_CHUNK = 8  # minibatches per vmapped backward: bounds the activations held at once


def _minibatch_grads_vmap(
    m: BlockNet, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], names: dict[int, list[str]], device
) -> dict[int, torch.Tensor]:
    """{cut: [n, P_cut]} float32 on the CPU: `vmap(grad)` of the loss over the minibatches. BatchNorm keeps
    per-minibatch batch statistics (`replace_all_batch_norm_modules_` drops the running statistics, whose
    in-place update vmap cannot batch and which the gradients do not depend on)."""
    from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap

    if len({len(y) for _, y in batches}) > 1:
        raise ValueError("method=vmap needs minibatches of one size (analyze passes full minibatches only)")
    if not names or not batches:
        return _minibatch_grads_loop(m, batches, names, device)
    replace_all_batch_norm_modules_(m)  # m is the caller's private copy (`at_state`)
    deepest = max(names, key=lambda cut: len(names[cut]))
    wanted = names[deepest]  # every shallow parameter of every cut: the deepest cut's names contain the others
    params = {n: p.detach() for n, p in m.named_parameters()}
    buffers = dict(m.named_buffers())

    def loss(shallow: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(m, ({**params, **shallow}, buffers), (x,)), y)

    per_batch = vmap(grad(loss), in_dims=(None, 0, 0))
    shallow = {n: params[n] for n in wanted}
    rows: dict[int, list[torch.Tensor]] = {cut: [] for cut in names}
    for a in range(0, len(batches), VMAP_CHUNK):
        chunk = batches[a : a + VMAP_CHUNK]
        g = per_batch(
            shallow, torch.stack([x for x, _ in chunk]).to(device), torch.stack([y for _, y in chunk]).to(device)
        )
        for cut in names:
            rows[cut].append(torch.cat([g[n].flatten(1) for n in names[cut]], dim=1).cpu())
    return {cut: torch.cat(r) for cut, r in rows.items()}


def drift_rows(drift_full: torch.Tensor, max_rows: int = 2000, seed: int = 0) -> torch.Tensor:
    """[rows, D] drift rows for the principal directions: drift_full [T - 1, N, ...] flattened, centred within each
    transition (its mean update is systematic drift, not noise), then at most `max_rows` (transition, sample)
    rows drawn uniformly without replacement (seeded), so every transition is equally represented."""
    d = drift_full.double().flatten(2)  # [T - 1, N, D]
    d = (d - d.mean(dim=1, keepdim=True)).flatten(0, 1)
    if len(d) > max_rows:
        d = d[torch.randperm(len(d), generator=torch.Generator().manual_seed(seed))[:max_rows]]
    return d


@dataclass(frozen=True)
class PerturbOptions:
    """The perturbation test's Monte-Carlo design."""

    eps: Sequence[float] = (0.1, 0.25, 0.5, 1.0)  # perturbation norms, relative to ||z_T(x)||
    k: int = 3  # dimension of each subspace
    draws: int = 5  # draws per (ε, kind)
    seed: int = 0
    max_rows: int = 2000  # drift rows for the principal directions (`drift_rows`)


KINDS = ("top", "random", "bottom")
# rows per deep-part forward = batch_size x this on CUDA (a large batch fills the device); on the CPU batches
# beyond ~128 samples ran slower per sample (docs/benchmarks.md), so there it is batch_size itself
CUDA_CHUNK_FACTOR = 16


def perturbation_draws(n: int, dim: int, kk: int, opts: PerturbOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Every seeded draw of the perturbation test, made on the CPU before any forward pass, in the order the
    test has always made them (so its numbers do not depend on how the forwards are batched): per draw the
    random subspace's seed (`randint`), then per ε, per kind in `KINDS`, the coefficients randn(n, kk).

    Returns (random subspaces [draws, kk, dim] float64, orthonormal rows; coefficients [draws, len(eps),
    len(KINDS), n, kk] float64)."""
    g = torch.Generator().manual_seed(opts.seed)
    subspaces = torch.empty(opts.draws, kk, dim, dtype=torch.float64)
    coefs = torch.empty(opts.draws, len(opts.eps), len(KINDS), n, kk, dtype=torch.float64)
    for d in range(opts.draws):
        seed = int(torch.randint(2**31, (1,), generator=g))
        subspaces[d] = torch.from_numpy(random_projection(dim, kk, seed).T)
        for i in range(len(opts.eps)):
            for j in range(len(KINDS)):
                coefs[d, i, j] = torch.randn(n, kk, generator=g, dtype=torch.float64)
    return subspaces, coefs


@torch.inference_mode()
def perturbation_test(
    model: BlockNet,
    sd_final: StateDict,
    z_final: torch.Tensor,
    drift_full: torch.Tensor,
    labelled_cut: tuple[torch.Tensor, int],
    opts: PerturbOptions = PerturbOptions(),
    device: str | torch.device = "cpu",
    *,
    batch_size: int = 128,
    channels_last: bool = False,
) -> pd.DataFrame:
    """Accuracy of the final deep part on perturbed final features: rows (eps, kind, draw, acc) with kind in
    clean (eps 0, draw 0) / top / random / bottom. `drift_full`: [T - 1, N, ...] full-space drift (rows for
    the directions: `drift_rows`); `z_final`: [N, ...] features of the final checkpoint.

    Each draw, every sample gets its own noise c @ V (c ~ N(0, I_k), V the kind's k orthonormal directions:
    top-k / bottom-k principal drift directions, or a fresh uniformly random k-dim subspace), scaled to norm
    ε ||z_T(x)||. Draws differ in c (and in the random subspace), so `tc.analysis.anisotropy.perturbation_summary`
    gives a CI over draws: Monte-Carlo uncertainty of the perturbation, conditional on the samples and the drift
    directions.
    `labelled_cut`: (the samples' labels y, the cut).

    Work at its floor: the seeded draws are made first on the CPU (`perturbation_draws`, so every device sees
    the same perturbations), then the clean and every perturbed copy of the N samples stream through the deep
    part as one sequence of (variant, sample) rows, `batch_size` rows per forward on the CPU (x
    `CUDA_CHUNK_FACTOR` on CUDA). Each chunk's noise is built on `device` in float64 from its coefficients,
    in the same operations as always, so no [variants, N, D] array exists; the accuracies equal the
    pre-issue-21 test's exactly. `channels_last`: run 4-D features channels_last (accuracies within 1/N of
    the contiguous ones); off by default: on the 2-core AVX-512 dev machine it ran 2-4x slower and erratic
    at 128 rows, the contiguous format 3-4x faster than the old test (issue 21)."""
    (y, cut), eps = labelled_cut, [float(e) for e in opts.eps]
    device = torch.device(device)
    m = at_state(model, sd_final).to(device)
    conv = z_final.dim() == 4 and channels_last
    if conv:
        m = m.to(memory_format=torch.channels_last)
    n, shape = len(z_final), z_final.shape[1:]
    # only the top-k and bottom-k directions (`principal_directions` with k: [min(2k, r), p], ~4-6x faster
    # than all r); dirs[:kk] and dirs[len(dirs) - kk:] are then the top-kk and bottom-kk as in the full result
    found = principal_directions(drift_rows(drift_full, opts.max_rows, opts.seed).numpy(), opts.k)
    dirs = found[0]
    kk = min(opts.k, found.rank)
    if kk == 0:
        raise ValueError("the drift has no nonzero-variance direction")
    random_dirs, coefs = perturbation_draws(n, z_final[0].numel(), kk, opts)
    top, bottom = torch.from_numpy(dirs[:kk]), torch.from_numpy(dirs[len(dirs) - kk :])
    # variant v >= 1: (draw, ε, kind) in draw-major order; its subspace, ε and coefficients
    subspaces = torch.stack([torch.stack([top, r, bottom]) for r in random_dirs]).to(device)  # [draws, 3, kk, D]
    coefs = coefs.to(device)
    variants = [(d, i, j) for d in range(opts.draws) for i in range(len(eps)) for j in range(len(KINDS))]
    z = z_final.to(device)
    rows = batch_size * (CUDA_CHUNK_FACTOR if device.type == "cuda" else 1)
    norms = torch.cat([z[a : a + rows].flatten(1).double().norm(dim=1, keepdim=True) for a in range(0, n, rows)])
    total = (1 + len(variants)) * n  # the clean samples, then each variant's
    hits = torch.empty(total, dtype=torch.bool, device=device)
    labels = y.to(device).repeat(1 + len(variants))
    for a in range(0, total, rows):
        b = min(a + rows, total)
        parts = []
        for v in range(a // n, (b - 1) // n + 1):  # the variants this chunk touches (one or two at 128 rows)
            lo, hi = max(a - v * n, 0), min(b - v * n, n)
            if v == 0:
                parts.append(z[lo:hi])
                continue
            d, i, j = variants[v - 1]
            # the old per-variant arithmetic, row by row: (c V) / ||c V|| * ε * ||z||, added to z in float64
            noise = coefs[d, i, j, lo:hi] @ subspaces[d, j]
            noise = noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-12) * eps[i] * norms[lo:hi]
            parts.append((z[lo:hi].flatten(1).double() + noise).float().view(-1, *shape))
        zb = torch.cat(parts).to(z_final.dtype)
        if conv:
            zb = zb.contiguous(memory_format=torch.channels_last)
        hits[a:b] = m.forward_blocks(zb, cut).argmax(1) == labels[a:b]
    acc = hits.view(1 + len(variants), n).double().mean(1).cpu().tolist()
    rows_out = [(0.0, "clean", 0, acc[0])]
    rows_out += [(eps[i], KINDS[j], d, a) for (d, i, j), a in zip(variants, acc[1:], strict=True)]
    return pd.DataFrame(rows_out, columns=["eps", "kind", "draw", "acc"])
