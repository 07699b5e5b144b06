"""The feature MMD tc_mmd on a run: does the temporal augmentation (the window's shallow features of the
training samples) cover the final features of the test samples? (`tc.core.consistency.mmd2` is the formula.)"""

from __future__ import annotations

import torch

from tc.analysis.inputs import RunContext
from tc.analysis.registry import add_means_over_cuts
from tc.analysis.splits import EvalSplit, parse_cuts
from tc.config import AnalyzeConfig
from tc.core import consistency as C
from tc.core import sgd_noise as noise
from tc.core.checkpoints import Checkpoints
from tc.core.data import DataBundle
from tc.core.device import resolve_device


def mmd_measures(
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    run: RunContext,
    splits: tuple[EvalSplit, EvalSplit],
    max_rows: int = 1000,
) -> dict[str, float]:
    """tc_mmd_d<cut>: MMD² between the temporally augmented shallow features {z_t(x): t in the window,
    x in the train split} and the final checkpoint's features of the test split, global-average-pooled
    (at most `max_rows` rows each, seeded). Small = the augmentation covers the test distribution. Features
    and MMD² are computed on `cfg.device`; the row subsets are drawn on the CPU (the same rows everywhere)."""
    (train, test), model = splits, run.model
    device = resolve_device(cfg.device)
    win = C.window(ckpts.steps, cfg.window)
    g = torch.Generator().manual_seed(cfg.seed + 3)
    out = {}
    cuts = parse_cuts(cfg.cut_spec, model)
    for cut in cuts:
        shallow = [ckpts.state_dicts[i] for i in win]
        aug = noise.pool(noise.features(model, shallow, data.normalize(train.x), cut, cfg.batch_size, device))
        tst = noise.pool(
            noise.features(model, [ckpts.state_dicts[-1]], data.normalize(test.x), cut, cfg.batch_size, device)
        )
        aug, tst = aug.flatten(0, 1), tst[0]
        aug = aug[torch.randperm(len(aug), generator=g)[:max_rows]]
        tst = tst[torch.randperm(len(tst), generator=g)[:max_rows]]
        out[f"tc_mmd_d{cut}"] = C.mmd2(aug.to(device), tst.to(device))[0]
    add_means_over_cuts(out, ["tc_mmd"], cuts)
    return out
