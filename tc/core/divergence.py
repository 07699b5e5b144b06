"""Divergences between predictive distributions: the soft (Jensen-Shannon) counterparts of top-1 disagreement
(tensors in, numbers out).

Jensen-Shannon divergence, in bits (log base 2), between the softmax distributions p and q of two logit vectors:

    JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m),   m = (p + q) / 2,   KL(p ‖ m) = Σ_k p_k log2(p_k / m_k)

Why base 2: JS then lies in [0, 1], the range of top-1 disagreement, and between two one-hot distributions it
*is* top-1 disagreement (0 for the same class, 1 for different ones), so a mean JS reads on the same scale as
the disagreement (and the error) it softens (Schirmer, Zhang and Nalisnick 2023 use JS to estimate test error).
In nats it would be ln 2 times as large. Computed in float64 from log-probabilities (log_softmax), so a class
whose probability underflows contributes 0 (p log p → 0), never NaN.

Used by the two-seed measure `gm_js_disagreement` (`tc.analysis.baselines`) and by the soft temporal consistency
`tc_js_{split}` (`tc.analysis.consistency`: the composites' final-column log-probabilities,
`tc.core.compose.CompositeOutputs.logp`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

LN2 = math.log(2.0)


def js_divergence(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Per-row JS(p, q) in bits (module doc) of two [..., K] tensors of log-probabilities (log_softmax outputs)
    over the last dimension: [...] in [0, 1] (clamped: float rounding can leave -1e-17 or 1 + 1e-16)."""
    logp, logq = logp.double(), logq.double()
    logm = torch.logaddexp(logp, logq) - LN2  # log((p + q) / 2), stable where one of them underflows

    def kl_to_m(lp: torch.Tensor) -> torch.Tensor:
        p = lp.exp()
        # p_k = 0 (lp = -inf or underflow) contributes 0: torch.where keeps -inf - (-inf) = NaN out of the sum
        return torch.where(p > 0, p * (lp - logm), torch.zeros_like(p)).sum(-1)

    return ((kl_to_m(logp) + kl_to_m(logq)) / (2 * LN2)).clamp(0.0, 1.0)


def mean_js(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """mean_x JS(softmax(a(x)), softmax(b(x))) in bits over the rows of two [N, K] logit tensors: the soft
    disagreement of two networks on N inputs (top-1 disagreement when both are one-hot)."""
    la = torch.log_softmax(logits_a.double(), dim=-1)
    lb = torch.log_softmax(logits_b.double(), dim=-1)
    return float(js_divergence(la, lb).mean())


@torch.no_grad()
def network_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """[N, K] logits of `model` on `x` (eval mode), in batches, on the device of the model's first parameter or
    buffer (the CPU if it has none); `x` is moved there."""
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    return torch.cat([model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)])


def disagreement(model: nn.Module, other: nn.Module, x: torch.Tensor) -> float:
    """gm_disagreement: the fraction of inputs on which two independently seeded networks predict different
    classes (Jiang et al. 2022, GDE: it tracks test error). `tc.core.baselines.disagreement` is this function."""
    return top1_disagreement(network_logits(model, x), network_logits(other, x))


def top1_disagreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """mean_x 1[argmax a(x) ≠ argmax b(x)] over the rows of two [N, K] logit tensors."""
    return float((logits_a.argmax(-1) != logits_b.argmax(-1)).double().mean())


def tc_js(logp: torch.Tensor, window: Sequence[int], final: int) -> float:
    """Soft temporal consistency of one cut: mean_{t in W} mean_x JS(g_d[t, T](x), f(x; θ_T)) in bits.

    `logp` [n_shallow, N, K]: log-probabilities of the composites g_d[i, T] (shallow part of checkpoint i, deep
    part of the final one T) on N inputs; row `final` is g_d[T, T] = f(·; θ_T), the final network itself.
    `window`: the tc window's rows (`tc.core.consistency.window`), the same as tc's top-1 agreement averages over.
    0 when every composite's distribution is the final network's; NaN for an empty window."""
    if not len(window):
        return math.nan
    ref = logp[final]  # [N, K]
    return float(torch.stack([js_divergence(logp[t], ref).mean() for t in window]).mean())
