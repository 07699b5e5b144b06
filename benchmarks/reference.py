"""The implementations that tc's fast paths replaced, frozen here as references: the benchmarks time the new
code against them, and the tests (tests/test_sweep_fast.py) use them as oracles. One home: tests may import
benchmarks/, benchmarks never import tests/ (a benchmark runs from a checkout without the test suite).

`old_same` and `old_granulated`: `tc.sweep`'s Ψ grouping before the cached row-set groups (scalar comparisons
over pandas rows, one measure at a time).

Issue 21 froze the analysis phases as they were before it brought each to its floor (copied verbatim from
main 488f277, renamed `old_*`; helpers they call that issue 21 may change are frozen too):
`old_principal_directions` (a full SVD), `old_perturbation_test` (chunks of 1024, contiguous, per-(draw, ε)
calls), `old_features` (one pass per checkpoint per cut), `old_gradient_noise` (a loop of backward passes),
`old_sharpness_sigma` (a model copy and three separate loss passes per σ), `old_mmd2` (four distance
matrices) and `old_network_predictions` (a second full forward per checkpoint).
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from tc.core.device import guard_cpu_kernels
from tc.core.models import at_state
from tc.core.sgd_noise import KINDS, drift_rows, project_noise, random_projection


def old_same(a, b, space, tol):
    """Whether trials (pandas rows) a and b match on every hyperparameter of `space` (the old scalar rule)."""
    for name, spec in space.items():
        x, y = a[name], b[name]
        if spec["type"] in ("categorical", "int"):
            if x != y:
                return False
        else:
            x, y = (math.log(x), math.log(y)) if spec.get("log") else (x, y)
            width = (math.log(spec["high"]) - math.log(spec["low"])) if spec.get("log") else spec["high"] - spec["low"]
            if abs(x - y) > tol * width:
                return False
    return True


def old_granulated(trials, measure, target, space, tol=0.1, min_groups=2, min_hyperparameters=2):
    """Ψ by pandas rows, one measure at a time (the old `granulated_kendall`)."""
    psi, counts, pairs = {}, {}, {}
    rows = trials.reset_index(drop=True)
    mu, g = rows[measure].to_numpy(float), rows[target].to_numpy(float)
    for h in space:
        others = {k: v for k, v in space.items() if k != h}
        taus, n_pairs, seen = [], 0, set()
        for i in range(len(rows)):
            if i in seen:
                continue
            members = [j for j in range(len(rows)) if j not in seen and old_same(rows.loc[i], rows.loc[j], others, tol)]
            seen.update(members)
            differing = [
                (a, b)
                for a, b in itertools.combinations(members, 2)
                if not old_same(rows.loc[a], rows.loc[b], {h: space[h]}, tol)
            ]
            if differing:
                taus.append(float(np.mean([np.sign(mu[a] - mu[b]) * np.sign(g[a] - g[b]) for a, b in differing])))
                n_pairs += len(differing)
        counts[h], pairs[h] = len(taus), n_pairs
        psi[h] = float(np.mean(taus)) if taus else math.nan
    entered = [h for h in space if counts[h] >= min_groups and not math.isnan(psi[h])]
    value = float(np.mean([psi[h] for h in entered])) if len(entered) >= max(min_hyperparameters, 1) else math.nan
    return value, psi, counts, pairs, entered


# ---- issue 21: the analysis phases before they were brought to their floor (main 488f277) ----


def old_principal_directions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(all principal directions of rows `x` with nonzero variance [r, p], orthonormal rows, descending;
    their variances [r]). r = numerical rank of the centred rows (<= n - 1)."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    r = int((s > s[0] * 1e-10).sum()) if len(s) and s[0] > 0 else 0
    return vt[:r], s[:r] ** 2 / (len(x) - 1)


@torch.inference_mode()
def old_features(model, sds, x, cut, batch_size=256, device="cpu"):
    """[T, N, ...] shallow features of every checkpoint at `cut` (one pass per checkpoint per cut)."""
    out = []
    for sd in sds:
        m = at_state(model, sd).to(device)
        chunks = [
            m.forward_blocks(x[a : a + batch_size].to(device), 0, cut).cpu() for a in range(0, len(x), batch_size)
        ]
        out.append(torch.cat(chunks))
    return torch.stack(out)


@torch.inference_mode()
def old_perturbation_test(model, sd_final, z_final, drift_full, labelled_cut, opts, device="cpu") -> pd.DataFrame:
    """rows (eps, kind, draw, acc) of the final deep part on perturbed final features (see
    `tc.core.sgd_noise.perturbation_test`)."""
    (y, cut), eps, k, draws, seed = labelled_cut, opts.eps, opts.k, opts.draws, opts.seed
    m = at_state(model, sd_final).to(device)
    flat = z_final.flatten(1).double()
    dirs, _ = old_principal_directions(drift_rows(drift_full, opts.max_rows, seed).numpy())
    kk = min(k, len(dirs))
    if kk == 0:
        raise ValueError("the drift has no nonzero-variance direction")
    fixed = {"top": torch.from_numpy(dirs[:kk]), "bottom": torch.from_numpy(dirs[len(dirs) - kk :])}
    g = torch.Generator().manual_seed(seed)
    norms = flat.norm(dim=1, keepdim=True)

    def accs(variants, chunk=1024):
        z = torch.cat(variants).view(-1, *z_final.shape[1:]).to(z_final.dtype)
        pred = torch.cat(
            [m.forward_blocks(z[a : a + chunk].to(device), cut).argmax(1).cpu() for a in range(0, len(z), chunk)]
        )
        return (pred.view(len(variants), -1) == y).double().mean(1).tolist()

    rows = [(0.0, "clean", 0, accs([flat])[0])]
    for draw in range(draws):
        random_dirs = torch.from_numpy(
            random_projection(flat.shape[1], kk, int(torch.randint(2**31, (1,), generator=g))).T.copy()
        )
        subspaces = {**fixed, "random": random_dirs}
        for e in eps:
            variants = []
            for kind in KINDS:
                noise = torch.randn(len(flat), kk, generator=g, dtype=torch.float64) @ subspaces[kind]
                noise = noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-12) * e * norms
                variants.append((flat + noise).float())
            rows += [(float(e), kind, draw, a) for kind, a in zip(KINDS, accs(variants), strict=True)]
    return pd.DataFrame(rows, columns=["eps", "kind", "draw", "acc"])


def old_gradient_noise(model, sd, batches, cuts, proj_dim=128, seed=0, device="cpu"):
    """{cut: [n_batches, min(P, proj_dim)]} projected minibatch gradient noise (a loop of backward passes)."""
    m = at_state(model, sd).to(device).train()
    guard_cpu_kernels(m, next(m.parameters()).device)
    grads = {cut: [] for cut in cuts}
    names = {cut: [n for n, _ in m.named_parameters() if m.block_of(n) in m.block_names[:cut]] for cut in cuts}
    params = dict(m.named_parameters())
    for x, y in batches:
        m.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(m(x.to(device)), y.to(device)).backward()
        for cut in cuts:
            grads[cut].append(torch.cat([params[n].grad.flatten() for n in names[cut]]).cpu())
    return {cut: project_noise(torch.stack(grads[cut]).numpy(), proj_dim, seed + cut) for cut in cuts}


@torch.no_grad()
def _old_logits(model, x, batch_size=500):
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)])


def _old_loss(model, x, y):
    logits = _old_logits(model, x)
    return float(nn.functional.cross_entropy(logits, y.to(logits.device)))


def old_sharpness_sigma(model, x, y, opts) -> float:
    """Jiang et al. (2020)'s magnitude-aware σ search as it was: a deep copy and a fresh CPU draw of every
    parameter's noise per (σ, draw) (see `tc.core.baselines.sharpness_sigma`)."""
    base = _old_loss(model, x, y)

    def rise(sigma):
        increases = []
        for k in range(opts.draws):
            g = torch.Generator().manual_seed(opts.seed + k)
            noisy = copy.deepcopy(model)
            with torch.no_grad():
                for p in noisy.parameters():
                    p.add_(torch.randn(p.shape, generator=g).to(p.device) * sigma * (p.abs() + opts.eps))
            increases.append(_old_loss(noisy, x, y) - base)
        return float(sum(increases) / opts.draws)

    lo, hi = 0.0, 1e-3
    while rise(hi) <= opts.target:
        lo, hi = hi, hi * 2
        if hi > opts.sigma_max:
            return opts.sigma_max
    for _ in range(opts.steps):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        lo, hi = (mid, hi) if rise(mid) <= opts.target else (lo, mid)
    return lo if lo > 0 else hi / 2


def old_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> tuple[float, float]:
    """Unbiased MMD² with a Gaussian kernel and the median-distance bandwidth (four distance matrices)."""
    x, y = x.double().flatten(1), y.double().flatten(1)
    if bandwidth is None:
        pooled = torch.cat([x, y])
        d = torch.cdist(pooled, pooled)
        bandwidth = float(d[torch.triu(torch.ones_like(d, dtype=torch.bool), 1)].median())
    h2 = 2 * max(bandwidth, 1e-12) ** 2

    def k(a, b):
        return torch.exp(-(torch.cdist(a, b) ** 2) / h2)

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2 * k(x, y).mean()), bandwidth


@torch.no_grad()
def old_network_predictions(model, state_dicts, x, batch_size=128, device="cpu") -> torch.Tensor:
    """[len(state_dicts), N] argmax predictions of the whole network at each checkpoint (fp32, eval, contiguous)."""
    m = copy.deepcopy(model).to(device).eval()
    preds = []
    for sd in state_dicts:
        m.load_state_dict(sd)
        preds.append(
            torch.cat([m(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)])
        )
    return torch.stack(preds)
