"""Composite networks: the shallow blocks of one checkpoint feeding the deep blocks of another.

    g_d[i, j](x) = f_[d+1:n]( f_[1:d](x; θ_shallow[i]); θ_deep[j] )        (SPEC section 1)

BatchNorm (`bn_mode`): with "splice" (default) each part keeps its own checkpoint's affine parameters and
running statistics and runs in eval mode: the composite is exactly the spliced state dict. With "recalibrate"
the composite's BatchNorm statistics are re-estimated (cumulative average, train-mode forward, no gradient)
on training batches before it is evaluated; that costs one calibration pass per (cut, i, j).

Two implementations with the same results:
- `composite_outputs_naive`: splice a state dict for every (cut, i, j) and run a full forward pass;
- `composite_outputs`: run each shallow checkpoint once per sample chunk, keep its features at every cut,
  and run each deep checkpoint on the features of all shallow checkpoints at once (one large batch), in
  inference mode, optionally channels_last and bf16 autocast. Shallow reuse removes the redundant shallow
  passes; the large deep batches amortise per-call overhead. The diagonal g_d[i, i] (shallow and deep part of
  one checkpoint) is the whole network f(θ_i) at every cut: its shallow pass continues to the head once, and
  that one result fills every cut's diagonal (T(T-1) deep parts per cut, not T²).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from tc.core.checkpoints import StateDict
from tc.core.models import BlockNet, at_state


@dataclass
class CompositeOutputs:
    """Per-sample results of the composites at one cut. Shapes: [n_shallow, n_deep, N]; `done` [n_shallow,
    n_deep] marks the pairs that were evaluated (all of them, or only the last deep column)."""

    pred: torch.Tensor  # int64 argmax class
    nll: torch.Tensor  # float32 cross-entropy
    done: torch.Tensor  # bool
    drift: torch.Tensor | None = None  # [n_shallow, N]: ||z_i - z_last|| / ||z_last|| (last shallow ckpt)
    # [n_shallow, N]: argmax of the whole network f(x; θ_shallow[i]) (in the composites' precision) where the
    # fast path ran it (the diagonal, or every shallow checkpoint with `ComposeOptions.networks`); -1 where it
    # did not. One tensor shared by all cuts.
    network_pred: torch.Tensor | None = None
    # [n_shallow, N, K]: log_softmax of the logits of g[i, logp_column] (float32), for the soft temporal consistency
    # (`tc.core.divergence.tc_js`); kept for one deep column only, the last evaluated (the final checkpoint T), so
    # its memory is that of one column's logits, whatever the matrix. NaN where that pair was not evaluated.
    logp: torch.Tensor | None = None
    logp_column: int | None = None


@dataclass(frozen=True)
class ComposeOptions:
    """How composites are evaluated (not which): none of these changes a prediction, bf16 aside."""

    columns: Sequence[int] | None = None  # indices into `deep` to evaluate; None = all
    batch_size: int = 500  # samples per forward pass
    channels_last: bool | None = None  # None: True on the fast path, False on the naive one
    precision: str = "fp32"  # fast path: "bf16" = autocast
    device: str | torch.device = "cpu"
    group: int | None = None  # fast path: shallow checkpoints per deep call (None: 1 on CPU, all on CUDA)
    calibration: Sequence[torch.Tensor] | None = None  # naive path: BatchNorm re-estimated on these batches
    progress: Callable[[int], None] | None = None  # fast path: called with the samples done after each chunk
    networks: bool = False  # fast path: also the whole network f(θ_i) of every shallow checkpoint (network_pred)


def splice(model: BlockNet, shallow: StateDict, deep: StateDict, cut: int) -> StateDict:
    """The composite's state dict: blocks [0, cut) from `shallow`, blocks [cut, n) from `deep`."""
    shallow_blocks = set(model.block_names[:cut])
    return {k: (shallow[k] if model.block_of(k) in shallow_blocks else deep[k]) for k in deep}


def _loaded(model: BlockNet, state_dict: StateDict, channels_last: bool) -> BlockNet:
    m = at_state(model, state_dict)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def _fmt(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every BatchNorm's running statistics by their cumulative average over `batches`."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # None = cumulative moving average
    model.train()
    for x in batches:
        model(x)
    model.eval()


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def _accumulate(out: CompositeOutputs, logits: torch.Tensor, y: torch.Tensor, i, j: int, sl: slice) -> None:
    logits = logits.float()
    out.pred[i, j, sl] = logits.argmax(1).cpu()
    out.nll[i, j, sl] = nn.functional.cross_entropy(logits, y, reduction="none").cpu()
    if j == out.logp_column:  # the logits are at hand here: keeping them costs no forward pass
        if out.logp is None:
            out.logp = torch.full((out.pred.shape[0], out.pred.shape[2], logits.shape[-1]), float("nan"))
        out.logp[i, sl] = torch.log_softmax(logits, dim=1).cpu()


def _empty(n_shallow: int, n_deep: int, n: int, columns: Sequence[int]) -> CompositeOutputs:
    return CompositeOutputs(
        pred=torch.full((n_shallow, n_deep, n), -1, dtype=torch.long),
        nll=torch.full((n_shallow, n_deep, n), float("nan")),
        done=torch.zeros(n_shallow, n_deep, dtype=torch.bool),
        logp_column=max(columns, default=None),
    )


def composite_outputs_naive(
    model: BlockNet,
    shallow: Sequence[StateDict],
    deep: Sequence[StateDict],
    data: tuple[torch.Tensor, torch.Tensor],
    cuts: Sequence[int],
    opts: ComposeOptions = ComposeOptions(),
) -> dict[int, CompositeOutputs]:
    """Reference implementation: a spliced model and a full forward pass for every (cut, i, j), j in
    `opts.columns` (default: all). With `opts.calibration` (input batches), BatchNorm statistics are
    re-estimated per composite. `data`: (x, y)."""
    x, y = data
    device, batch_size = torch.device(opts.device), opts.batch_size
    channels_last, calibration = bool(opts.channels_last), opts.calibration
    columns = list(range(len(deep))) if opts.columns is None else list(opts.columns)
    outs = {}
    for cut in cuts:
        out = _empty(len(shallow), len(deep), len(y), columns)
        for i, s in enumerate(shallow):
            for j in columns:
                d = deep[j]
                m = _loaded(model, splice(model, s, d, cut), channels_last).to(device)
                if calibration is not None:
                    recalibrate_bn(m, [_fmt(c.to(device), channels_last) for c in calibration])
                with torch.inference_mode():
                    for a in range(0, len(y), batch_size):
                        sl = slice(a, a + batch_size)
                        logits = m(_fmt(x[sl].to(device), channels_last))
                        _accumulate(out, logits, y[sl].to(device), i, j, sl)
                out.done[i, j] = True
        outs[cut] = out
    return outs


def composite_outputs(
    model: BlockNet,
    shallow: Sequence[StateDict],
    deep: Sequence[StateDict],
    data: tuple[torch.Tensor, torch.Tensor],
    cuts: Sequence[int],
    opts: ComposeOptions = ComposeOptions(),
) -> dict[int, CompositeOutputs]:
    """Fast path (BatchNorm "splice" mode). `columns`: indices into `deep` to evaluate (default: all);
    the headline scores need only the last one. Also returns the feature drift of every shallow checkpoint
    against the last one. `progress(n)` is called after each sample chunk with the samples done.

    Where a shallow checkpoint is also an evaluated deep one (the same state dict object), its composite at
    every cut is the whole network: computed once per chunk by continuing its shallow pass to the head, and
    also returned as `network_pred`; `networks=True` adds that continuation for every shallow checkpoint (the
    whole networks of a final-column analysis).

    `group`: shallow checkpoints whose features go through a deep part in one call. Default: 1 on CPU,
    where batches beyond ~128 samples ran slower per sample (cache misses; measured on ResNet-20), and all
    of them on CUDA, where large batches fill the device. `data`: (x, y)."""
    x, y = data
    device, batch_size, progress = torch.device(opts.device), opts.batch_size, opts.progress
    channels_last = True if opts.channels_last is None else opts.channels_last
    group = opts.group
    if group is None:
        group = len(shallow) if device.type == "cuda" else 1
    columns = list(range(len(deep))) if opts.columns is None else list(opts.columns)
    # One model on the device per distinct checkpoint: the final checkpoint (and, for the full matrix,
    # every one) is in both `shallow` and `deep`, and the shallow and deep blocks of one loaded model serve
    # both roles (eval mode, no state changes), so it is loaded once, not twice.
    on_device: dict[int, BlockNet] = {}

    def load(sd: StateDict) -> BlockNet:
        if id(sd) not in on_device:
            on_device[id(sd)] = _loaded(model, sd, channels_last).to(device)
        return on_device[id(sd)]

    shallow_models = [load(sd) for sd in shallow]
    deep_models = {j: load(deep[j]) for j in columns}
    n_s = len(shallow)
    # The diagonal: pairs whose shallow and deep checkpoints are one state dict. Their composite is the whole
    # network at every cut (the same loaded model, the same blocks on the same tensors: bit-identical where the
    # deep batch is the same, i.e. group 1), so the shallow pass continues to the head once and every cut's
    # diagonal reads that one result instead of running the deep part again per cut.
    diagonal = {j: [i for i in range(n_s) if shallow[i] is deep[j]] for j in columns}
    whole = set(range(n_s)) if opts.networks else {i for d in diagonal.values() for i in d}
    outs = {cut: _empty(n_s, len(deep), len(y), columns) for cut in cuts}
    network_pred = torch.full((n_s, len(y)), -1, dtype=torch.long)
    for out in outs.values():
        out.done[:, columns] = True
        out.drift = torch.zeros(n_s, len(y))
        out.network_pred = network_pred
    deepest = max(cuts)
    with torch.inference_mode(), _autocast(opts.precision, device):
        for a in range(0, len(y), batch_size):
            sl = slice(a, a + batch_size)
            xb, yb = _fmt(x[sl].to(device), channels_last), y[sl].to(device)
            # feats[cut][i]: the shallow features of checkpoint i at this cut, one forward per checkpoint
            feats: dict[int, list[torch.Tensor]] = {cut: [] for cut in cuts}
            heads: dict[int, torch.Tensor] = {}  # i -> logits of the whole network f(θ_i), for i in `whole`
            for i, sm in enumerate(shallow_models):
                z, done = xb, 0
                for cut in sorted(cuts):
                    z = sm.forward_blocks(z, done, cut)
                    done = cut
                    feats[cut].append(z)
                if i in whole:
                    heads[i] = sm.forward_blocks(z, deepest)
                    network_pred[i, sl] = heads[i].float().argmax(1).cpu()
            for cut in cuts:
                last = feats[cut][-1].float().flatten(1)
                last_norm = last.norm(dim=1).clamp_min(1e-12)
                for i, f in enumerate(feats[cut]):  # one [b, dim] difference at a time: no n_shallow-fold copy
                    outs[cut].drift[i, sl] = ((f.float().flatten(1) - last).norm(dim=1) / last_norm).cpu()
                for j in columns:
                    for i in diagonal[j]:
                        _accumulate(outs[cut], heads[i], yb, i, j, sl)
                    rest = [i for i in range(n_s) if i not in diagonal[j]]
                    for g in range(0, len(rest), group):
                        rows = rest[g : g + group]
                        stacked = torch.cat([feats[cut][i] for i in rows])
                        logits = deep_models[j].forward_blocks(stacked, cut)
                        logits = logits.view(-1, len(yb), logits.shape[-1])  # [group, b, classes]
                        for k, i in enumerate(rows):
                            _accumulate(outs[cut], logits[k], yb, i, j, sl)
            if progress is not None:
                progress(len(yb))
    return outs
