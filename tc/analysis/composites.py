"""The forward passes of a consistency analysis: what its splits share (`Plan`), the composite outputs g_d[i, j]
of one split, and the whole networks' predictions f(x; θ_i) (no scores here: `tc.analysis.consistency`).

The whole networks come out of the composite pass (`CompositeOutputs.network_pred`: the diagonal g[i, i] is
f(θ_i)), so a split costs one pass over its checkpoints, not two. They run channels_last there, as every
composite does; the second, contiguous forward they replaced differed at float rounding (≈1e-6 in the logits
of ResNet-20), so a prediction on a knife edge can differ from it (docs/benchmarks.md counts them)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tc.analysis.splits import EvalSplit, parse_cuts
from tc.config import AnalyzeConfig
from tc.core import consistency as C
from tc.core.checkpoints import Checkpoints
from tc.core.compose import ComposeOptions, CompositeOutputs, composite_outputs, composite_outputs_naive
from tc.core.data import DataBundle
from tc.core.device import resolve_device
from tc.core.models import BlockNet


@dataclass(frozen=True)
class Plan:
    """What every split of one consistency analysis shares."""

    model: BlockNet
    ckpts: Checkpoints
    data: DataBundle
    cfg: AnalyzeConfig
    cuts: list[int]
    win: list[int]  # indices of the tc window's checkpoints
    calibration: list[torch.Tensor] | None  # bn_mode=recalibrate: the BatchNorm calibration batches
    progress: Callable[[int], None] | None

    @property
    def T(self) -> int:  # index of the final checkpoint
        return len(self.ckpts.steps) - 1


MIN_CALIBRATION_BATCHES = 1  # BatchNorm re-estimated from no full batch: refused (`calibration_notes`)


def _calibration_count(data: DataBundle, cfg: AnalyzeConfig) -> int:
    """Full batches of `cfg.batch_size` that bn_mode=recalibrate uses: `cfg.calibration_batches`, or all the
    training set holds when fewer. Only full batches: `tc.core.compose.recalibrate_bn` averages per-batch
    statistics with equal weights, so a short batch would weigh as much as a full one. A `ValueError` below
    `MIN_CALIBRATION_BATCHES`, stating the minimum."""
    held = len(data.train_y) // cfg.batch_size
    if held < MIN_CALIBRATION_BATCHES:
        raise ValueError(
            f"bn_mode=recalibrate needs at least {MIN_CALIBRATION_BATCHES} full batch of batch_size={cfg.batch_size} "
            f"training examples to re-estimate BatchNorm, and the training set has {len(data.train_y)}: lower "
            "batch_size, or use bn_mode=splice"
        )
    return min(cfg.calibration_batches, held)


def calibration_notes(data: DataBundle, cfg: AnalyzeConfig) -> tuple[dict[str, float], list[str]]:
    """({n_calibration_batches: the batches bn_mode=recalibrate uses}, warnings): a warning when the training set
    holds fewer full batches than `cfg.calibration_batches`; ({}, []) with bn_mode=splice (no calibration)."""
    if cfg.bn_mode != "recalibrate":
        return {}, []
    n, asked = _calibration_count(data, cfg), cfg.calibration_batches
    warnings = []
    if n < asked:
        warnings.append(
            f"BatchNorm recalibration uses {n} batches, not calibration_batches={asked}: the training set "
            f"({len(data.train_y)} examples) holds {n} full batch(es) of batch_size={cfg.batch_size}"
        )
    return {"n_calibration_batches": float(n)}, warnings


def calibration_batches(data: DataBundle, cfg: AnalyzeConfig) -> list[torch.Tensor] | None:
    """With bn_mode=recalibrate: the first `_calibration_count` full normalized training batches of
    `cfg.batch_size` (`cfg.calibration_batches`, fewer when the training set holds fewer: `calibration_notes`
    says so), in an order seeded by `cfg.seed + 2`, on which every composite re-estimates its BatchNorm
    statistics (the same batches for every composite, so that they differ only by their weights); None
    otherwise."""
    if cfg.bn_mode != "recalibrate":
        return None
    n = _calibration_count(data, cfg)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    order = torch.randperm(len(data.train_y), generator=g)
    b = cfg.batch_size
    return [data.normalize(data.train_x[order[i * b : (i + 1) * b]]) for i in range(n)]


def make_plan(
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    model: BlockNet,
    progress: Callable[[int], None] | None = None,
) -> Plan:
    """The plan of a consistency analysis: the cuts `cfg.cut_spec` names on `model`, the tc window
    (`tc.core.consistency.window`) and the BatchNorm calibration batches (`calibration_batches`)."""
    cuts = parse_cuts(cfg.cut_spec, model)
    win = C.window(ckpts.steps, cfg.window)
    return Plan(model, ckpts, data, cfg, cuts, win, calibration_batches(data, cfg), progress)


def split_outputs(plan: Plan, split: EvalSplit) -> dict[int, CompositeOutputs]:
    """Composite outputs of one split per cut: every (shallow i, deep j) pair with matrix=full, else the final
    column j = T only. The fast path, or the naive one where BatchNorm is recalibrated."""
    cfg, sds = plan.cfg, plan.ckpts.state_dicts
    columns = None if cfg.matrix == "full" else [plan.T]
    common = dict(columns=columns, batch_size=cfg.batch_size, device=resolve_device(cfg.device))
    xy = (plan.data.normalize(split.x), split.y)
    if cfg.bn_mode == "recalibrate":
        return composite_outputs_naive(
            plan.model, sds, sds, xy, plan.cuts, ComposeOptions(calibration=plan.calibration, **common)
        )
    # networks: with matrix=final the window's checkpoints are no deep column, so their whole networks (tc_full)
    # continue their shallow pass to the head here instead of running again (`network_predictions`); tc_full is
    # fp32, so a bf16 analysis runs them apart
    fp32 = cfg.precision == "fp32"
    opts = ComposeOptions(precision=cfg.precision, progress=plan.progress, networks=fp32, **common)
    return composite_outputs(plan.model, sds, sds, xy, plan.cuts, opts)


def network_predictions(
    plan: Plan, indices: list[int], split: EvalSplit, outs: dict[int, CompositeOutputs] | None = None
) -> torch.Tensor:
    """[len(indices), N] argmax predictions of the whole network f(x; θ) at those checkpoints (fp32, eval):
    read from the split's composite outputs `outs` where they hold them (`split_outputs`' fast path in fp32),
    else one forward per checkpoint (the recalibrating path, whose diagonal has re-estimated BatchNorm, and
    bf16 composites)."""
    pred = next(iter(outs.values())).network_pred if outs and plan.cfg.precision == "fp32" else None
    if pred is not None and bool((pred[indices] >= 0).all()):
        return pred[indices].clone()
    return _forward_predictions(plan, indices, split)


@torch.no_grad()
def _forward_predictions(plan: Plan, indices: list[int], split: EvalSplit) -> torch.Tensor:
    cfg = plan.cfg
    device = resolve_device(cfg.device)
    m = copy.deepcopy(plan.model).to(device).eval()  # one copy, reloaded per checkpoint
    x = plan.data.normalize(split.x)
    preds = []
    for i in indices:
        m.load_state_dict(plan.ckpts.state_dicts[i])
        preds.append(
            torch.cat(
                [m(x[i : i + cfg.batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), cfg.batch_size)]
            )
        )
    return torch.stack(preds)
