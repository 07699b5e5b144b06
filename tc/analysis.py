"""The `analyze` computation: checkpoints + data + config in, tidy tables and metrics out (no MLflow here).

Splits: `train` is a seeded subset of the training set with the labels the model was trained on (noisy
labels included); `test` a seeded subset of the test set; `corrupt` the same test subset with CIFAR-10-C-style
corruptions assigned round-robin (see `tc.corruptions.corrupted_set`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from tc import consistency as C
from tc.compose import StateDict, composite_outputs, composite_outputs_naive
from tc.config import AnalyzeConfig, split_list
from tc.corruptions import corrupted_set
from tc.data import DataBundle
from tc.device import resolve_device
from tc.models import BlockNet


@dataclass
class Checkpoints:
    steps: list[int]
    state_dicts: list[StateDict]


@dataclass
class EvalSplit:
    name: str
    x: torch.Tensor  # uint8 images
    y: torch.Tensor
    corruption: list[str] | None = None
    severity: list[int] | None = None


@dataclass
class AnalysisResult:
    matrices: pd.DataFrame  # cut, split, t1, t2, acc, agree, loss, rc (t1, t2 = steps)
    lags: pd.DataFrame  # cut, split, lag, acc, rc
    drift: pd.DataFrame  # cut, split, t1, drift, agree_final, acc_final
    per_sample: pd.DataFrame  # cut, split, sample, c
    corrupt: pd.DataFrame  # cut, corruption, severity, tc, acc
    metrics: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    aniso: AnisotropyResult | None = None


MIN_WINDOW = 3  # fewer checkpoints in the tc window: warn and tag the run


def parse_cuts(text: str, model: BlockNet) -> list[int]:
    if text == "stages":
        return list(model.stage_cuts)
    if text == "all":
        return list(model.cuts)
    try:
        cuts = sorted({int(c) for c in split_list(text)})
    except ValueError:
        cuts = []
    if not cuts or not set(cuts) <= set(model.cuts):
        raise ValueError(f"cuts={text!r} is not valid; use stages, all, or a comma list from {model.cuts}")
    return cuts


def select_steps(text: str, steps: list[int]) -> list[int]:
    """`all`, `every:K` (every K-th checkpoint counted from the first, plus the last), or a list of steps."""
    if text == "all":
        return list(steps)
    if text.startswith("every:"):
        k = int(text.split(":", 1)[1])
        if k < 1:
            raise ValueError(f"checkpoints={text!r}: K must be >= 1")
        return sorted(set(steps[::k]) | {steps[-1]})
    try:
        chosen = sorted({int(s) for s in split_list(text)})
    except ValueError:
        raise ValueError(f"checkpoints={text!r} is not valid; use all, every:K, or a list of steps") from None
    missing = sorted(set(chosen) - set(steps))
    if missing:
        raise ValueError(f"checkpoints: steps {missing} are not in the run; it has {steps}")
    if len(chosen) < 2:
        raise ValueError("checkpoints: choose at least two")
    return chosen


def _subset(n: int, k: int, seed: int) -> torch.Tensor:
    if k == 0 or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def make_splits(data: DataBundle, cfg: AnalyzeConfig) -> list[EvalSplit]:
    names = split_list(cfg.splits)
    out = []
    if "train" in names:
        idx = _subset(len(data.train_y), cfg.max_samples, cfg.seed)
        out.append(EvalSplit("train", data.train_x[idx], data.train_y[idx]))
    test_idx = _subset(len(data.test_y), cfg.max_samples, cfg.seed + 1)
    if "test" in names:
        out.append(EvalSplit("test", data.test_x[test_idx], data.test_y[test_idx]))
    if "corrupt" in names:
        x, cor, sev = corrupted_set(data.test_x[test_idx], cfg.corruption_names, cfg.severity_levels, cfg.seed)
        out.append(EvalSplit("corrupt", x, data.test_y[test_idx], cor, sev))
    return out


def _outputs(model, ckpts, split, data, cfg, cuts, columns, calibration, progress):
    """Composite outputs of one split: the fast path, or the naive one where BatchNorm is recalibrated."""
    sds = ckpts.state_dicts
    common = dict(columns=columns, batch_size=cfg.batch_size, device=resolve_device(cfg.device))
    x = data.normalize(split.x)
    if cfg.bn_mode == "recalibrate":
        return composite_outputs_naive(model, sds, sds, x, split.y, cuts, calibration=calibration, **common)
    return composite_outputs(model, sds, sds, x, split.y, cuts, precision=cfg.precision, progress=progress, **common)


def analyze(
    model: BlockNet,
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    reference: Checkpoints | None = None,
    progress: Callable[[int], None] | None = None,
    splits: list[EvalSplit] | None = None,
) -> AnalysisResult:
    """Every SPEC section 2-3 quantity for each (cut, split); see `tc.consistency` for the formulas.
    `splits` defaults to `make_splits(data, cfg)`. Also `tc_full_<split>` (whole networks over the same
    window), `tc_excess_<split>`, `tc_kappa_<split>[_d<cut>]` and `tc_window_checkpoints`; a window of fewer
    than `MIN_WINDOW` checkpoints adds a line to `summary["warnings"]` and a tag to `summary["tags"]`."""
    t0 = time.perf_counter()
    splits = make_splits(data, cfg) if splits is None else splits
    cuts = parse_cuts(cfg.cuts, model)
    steps = ckpts.steps
    T = len(steps) - 1
    columns = None if cfg.matrix == "full" else [T]
    win = C.window(steps, cfg.window)
    calibration = None
    if cfg.bn_mode == "recalibrate":
        g = torch.Generator().manual_seed(cfg.seed + 2)
        order = torch.randperm(len(data.train_y), generator=g)
        b = cfg.batch_size
        calibration = [data.normalize(data.train_x[order[i * b : (i + 1) * b]]) for i in range(cfg.calibration_batches)]
    rows, lag_rows, drift_rows, sample_rows, corrupt_rows = [], [], [], [], []
    metrics: dict[str, float] = {}
    summary: dict = {"cuts": cuts, "steps": steps, "window_steps": [steps[i] for i in win], "half_life": {}}
    metrics["tc_window_checkpoints"] = float(len(win))
    summary["warnings"], summary["tags"] = [], {}
    if len(win) < MIN_WINDOW:
        msg = (
            f"the tc window holds {len(win)} checkpoint(s) (steps {summary['window_steps']}), fewer than "
            f"{MIN_WINDOW}: tc rests on too few checkpoints to be a temporal average; save more checkpoints "
            f"(checkpoint_every) or widen the window"
        )
        summary["warnings"].append(msg)
        summary["tags"]["tc.window_warning"] = msg
    num_classes = model.spec.num_classes
    for split in splits:
        outs = _outputs(model, ckpts, split, data, cfg, cuts, columns, calibration, progress)
        network_pred = _network_predictions(model, [ckpts.state_dicts[i] for i in [*win, T]], split, data, cfg)
        metrics[f"tc_full_{split.name}"] = C.tc_full(network_pred, range(len(win)))
        rel_lags = []
        for cut, out in outs.items():
            acc = C.acc_matrix(out, split.y)
            agree = C.agree_matrix(out, C.own_predictions(out))
            loss = C.loss_matrix(out)
            rc = C.relative_consistency(acc)
            for i, j in zip(*torch.nonzero(out.done, as_tuple=True), strict=True):
                i, j = int(i), int(j)
                rows.append(
                    (
                        cut,
                        split.name,
                        steps[i],
                        steps[j],
                        float(acc[i, j]),
                        float(agree[i, j]),
                        float(loss[i, j]),
                        float(rc[i, j]),
                    )
                )
            if cfg.matrix == "full":
                m, r = C.window_lag_curve(acc, win), C.window_lag_curve(rc, win)
                rel_lags.append(r)
                lag_rows += [(cut, split.name, lag, m[lag], r[lag]) for lag in range(len(m))]
                hl = C.half_life(r)
                summary["half_life"][f"{split.name}_d{cut}"] = hl
            metrics[f"tc_{split.name}_d{cut}"] = C.tc_score(agree, win)
            metrics[f"tc_kappa_{split.name}_d{cut}"] = C.tc_kappa(out, out.pred[T, T], win, num_classes)
            metrics[f"acc_{split.name}"] = float(acc[T, T])  # the final network itself (same at every cut)
            if steps[0] == 0:  # the initialisation only if step 0 was selected (training saves it first)
                metrics[f"tc_{split.name}_random_shallow_d{cut}"] = float(agree[0, T])
            # the recalibrating (naive) path keeps no features, so it reports no drift
            drift = out.drift.mean(dim=1) if out.drift is not None else torch.full((len(steps),), math.nan)
            if out.drift is not None:
                metrics[f"drift_{split.name}_d{cut}"] = float(drift[win].mean())
            drift_rows += [
                (cut, split.name, steps[i], float(drift[i]), float(agree[i, T]), float(acc[i, T]))
                for i in range(len(steps))
            ]
            c = C.per_sample_consistency(out, split.y, win)
            sample_rows.append(
                pd.DataFrame({"cut": cut, "split": split.name, "sample": np.arange(len(c)), "c": c.numpy()})
            )
            if split.corruption is not None:
                frame = pd.DataFrame({"corruption": split.corruption, "severity": split.severity})
                ref = C.own_predictions(out)[T]
                hits = (out.pred[win, T] == ref).double().mean(0).numpy()
                correct = (out.pred[T, T] == split.y).double().numpy()
                frame["agree"], frame["correct"] = hits, correct
                for (name, sev), grp in frame.groupby(["corruption", "severity"]):
                    corrupt_rows.append((cut, name, int(sev), grp["agree"].mean(), grp["correct"].mean()))
        for prefix in (
            f"tc_{split.name}",
            f"tc_kappa_{split.name}",
            f"tc_{split.name}_random_shallow",
            f"drift_{split.name}",
        ):
            if f"{prefix}_d{cuts[0]}" in metrics:
                metrics[prefix] = float(np.mean([metrics[f"{prefix}_d{cut}"] for cut in cuts]))
        metrics[f"tc_excess_{split.name}"] = C.tc_excess(metrics[f"tc_{split.name}"], metrics[f"tc_full_{split.name}"])
        if rel_lags:
            r = np.nanmean(np.stack(rel_lags), axis=0)
            hl = C.half_life(r)
            summary["half_life"][split.name] = hl
            # Censored (never below 0.9 over the lags the window's rows observe): log the number of lags
            # observed, a lower bound.
            metrics[f"half_life_{split.name}"] = float(hl if hl is not None else len(r))
    corrupt = pd.DataFrame(corrupt_rows, columns=["cut", "corruption", "severity", "tc", "acc"])
    for name, grp in corrupt.groupby("corruption"):
        metrics[f"tc_corrupt_{name}"] = float(grp["tc"].mean())
    test = next((s for s in splits if s.name == "test"), None)
    if reference is not None and test is not None:
        metrics.update(_cross_seed(model, ckpts, reference, test, data, cfg, cuts, win))
    if cfg.precision == "bf16":
        metrics["bf16_agreement"] = _bf16_agreement(model, ckpts, splits[0], data, cfg, cuts, T)
    metrics["analysis_seconds"] = time.perf_counter() - t0
    summary["metrics"] = metrics
    return AnalysisResult(
        matrices=pd.DataFrame(rows, columns=["cut", "split", "t1", "t2", "acc", "agree", "loss", "rc"]),
        lags=pd.DataFrame(lag_rows, columns=["cut", "split", "lag", "acc", "rc"]),
        drift=pd.DataFrame(drift_rows, columns=["cut", "split", "t1", "drift", "agree_final", "acc_final"]),
        per_sample=pd.concat(sample_rows, ignore_index=True) if sample_rows else pd.DataFrame(),
        corrupt=corrupt,
        metrics=metrics,
        summary=summary,
    )


@torch.no_grad()
def _network_predictions(model, state_dicts, split, data, cfg) -> torch.Tensor:
    """[len(state_dicts), N] argmax predictions of the whole network f(x; θ) at each state dict (fp32, eval)."""
    device = resolve_device(cfg.device)
    m = copy.deepcopy(model).to(device).eval()
    x = data.normalize(split.x)
    preds = []
    for sd in state_dicts:
        m.load_state_dict(sd)
        preds.append(
            torch.cat(
                [m(x[i : i + cfg.batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), cfg.batch_size)]
            )
        )
    return torch.stack(preds)


def _cross_seed(model, ckpts, reference, split, data, cfg, cuts, win) -> dict[str, float]:
    """Shallow parts of this run's window checkpoints under the final deep part of the reference run
    (another seed): agreement with the reference network's own predictions. Expected to be low."""
    ref_last = reference.state_dicts[-1]
    shallow = [ckpts.state_dicts[i] for i in win] + [ref_last]
    x = data.normalize(split.x)
    outs = composite_outputs(
        model,
        shallow,
        [ref_last],
        x,
        split.y,
        cuts,
        batch_size=cfg.batch_size,
        precision=cfg.precision,
        device=resolve_device(cfg.device),
    )
    per_cut = {}
    for cut, out in outs.items():
        own = out.pred[-1, 0]
        per_cut[f"tc_test_crossseed_d{cut}"] = float((out.pred[:-1, 0] == own).double().mean())
    return {**per_cut, "tc_test_crossseed": float(np.mean(list(per_cut.values())))}


def _bf16_agreement(model, ckpts, split, data, cfg, cuts, T) -> float:
    """Fraction of (shallow checkpoint, cut, sample) whose bf16 prediction of the final column equals fp32's."""
    x = data.normalize(split.x)
    device = resolve_device(cfg.device)
    kw = dict(columns=[T], batch_size=cfg.batch_size, device=device)
    sds = ckpts.state_dicts
    lo = composite_outputs(model, sds, sds, x, split.y, cuts, precision="bf16", **kw)
    hi = composite_outputs(model, sds, sds, x, split.y, cuts, precision="fp32", **kw)
    return float(np.mean([(lo[c].pred[:, T] == hi[c].pred[:, T]).double().mean() for c in cuts]))


@dataclass
class AnisotropyResult:
    stats: pd.DataFrame  # cut, kind (drift|grad), statistic, value, n, p, unit
    spectra: pd.DataFrame  # cut, kind, index, eig, null_q05, null_q95
    perturb: pd.DataFrame  # cut, eps, kind (clean|top|random|bottom), draw, acc
    metrics: dict[str, float]


PERTURB_HEADLINE_EPS = 0.5
PERTURB_MEANS = ("perturb_clean_acc", "perturb_top_acc", "perturb_random_acc", "perturb_bottom_acc")


def anisotropy(
    model: BlockNet,
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    split: EvalSplit,
    train_batch_size: int,
    train_seed: int,
) -> AnisotropyResult:
    """SPEC section 5 at every cut: feature drift over the window and the final checkpoint (split `split`;
    `tc.anisotropy.drift_test`, sampling unit: samples, as pairs), gradient noise at the window's first
    checkpoint (sampling unit: minibatches), and the perturbation test on the final checkpoint.

    Metrics: per cut `aniso_{drift,grad}_{topk_var,eff_rank,pvalue,lw_pvalue}_d<cut>`; across cuts the mean of
    topk_var and eff_rank (descriptive) and `aniso_{drift,grad}_min_pvalue` / `_lw_min_pvalue`: the smallest
    Holm-adjusted p-value over the cuts ("anisotropic at some cut", family-wise error controlled). Perturbation
    at ε = 0.5: `aniso_perturb_{clean,top,random,bottom}_acc_d<cut>`, the last three with `_lo`/`_hi` (95% t
    interval over draws), and their means over cuts. A kind with fewer than 3 units (under 6 samples, or
    under 3 full training minibatches) is left out."""
    from tc import anisotropy as A
    from tc import noise
    from tc.data import iterate_batches

    cuts = parse_cuts(cfg.cuts, model)
    win = C.window(ckpts.steps, cfg.window)
    chosen = [ckpts.state_dicts[i] for i in win] + [ckpts.state_dicts[-1]]
    x = data.normalize(split.x)
    grad_ckpt = win[0]
    batches = []
    for xb, yb in iterate_batches(data, train_batch_size, train_seed, epoch=0, augment=False):
        if len(batches) == cfg.grad_batches or len(yb) < train_batch_size:
            break
        batches.append((data.normalize(xb), yb))
    grads = noise.gradient_noise(model, ckpts.state_dicts[grad_ckpt], batches, cuts, seed=cfg.seed)
    stat_rows, spec_rows, pert_frames, metrics = [], [], [], {}
    pvalues: dict[tuple[str, str], dict[int, float]] = {}
    for cut in cuts:
        feats = noise.features(model, chosen, x, cut, cfg.batch_size)
        reports = {}
        drift = noise.drift_vectors(feats)
        if len(A.drift_units(drift, cfg.seed)) >= 3:  # >= 3 pairs of samples whose drift differs
            reports["drift"] = A.drift_test(drift, k=cfg.aniso_k, draws=cfg.null_draws, seed=cfg.seed)
        if len(grads[cut]) >= 3:  # a tiny training set may give fewer full minibatches
            reports["grad"] = A.analyze_samples(
                grads[cut], k=cfg.aniso_k, draws=cfg.null_draws, seed=cfg.seed, unit="minibatches"
            )
        for kind, r in reports.items():
            values = {
                "topk_var": r.topk[r.k - 1],
                "eff_rank": r.eff_rank,
                "max_over_mean": r.max_over_mean,
                "pvalue": r.pvalue,
                "lw_pvalue": r.lw_pvalue,
                "spikes": r.spikes,
                "mp_spikes": r.mp_spikes,
                "power_law_alpha": r.power_law_alpha,
                **{f"top{j + 1}_var": v for j, v in enumerate(r.topk)},
            }
            stat_rows += [(cut, kind, name, float(v), r.n, r.p, r.unit) for name, v in values.items()]
            for name in ("topk_var", "eff_rank", "pvalue", "lw_pvalue"):
                metrics[f"aniso_{kind}_{name}_d{cut}"] = float(values[name])
            for name in ("pvalue", "lw_pvalue"):
                pvalues.setdefault((kind, name), {})[cut] = float(values[name])
            spec_rows += [(cut, kind, i + 1, r.eig[i], r.null_q05[i], r.null_q95[i]) for i in range(len(r.eig))]
        full = feats[1:] - feats[:-1]
        if not bool(full.any()):  # identical checkpoints: no drift directions to perturb along
            continue
        pert = noise.perturbation_test(
            model, ckpts.state_dicts[-1], feats[-1], full, split.y, cut, k=cfg.aniso_k, seed=cfg.seed
        )
        pert_frames.append(pert.assign(cut=cut)[["cut", "eps", "kind", "draw", "acc"]])
        summary = noise.perturbation_summary(pert)
        for row in summary.itertuples():
            if row.kind == "clean":
                metrics[f"aniso_perturb_clean_acc_d{cut}"] = row.acc
            elif row.eps == PERTURB_HEADLINE_EPS:
                for suffix, v in (("", row.acc), ("_lo", row.lo), ("_hi", row.hi)):
                    metrics[f"aniso_perturb_{row.kind}_acc{suffix}_d{cut}"] = float(v)
    # descriptive means over the cuts where the statistic exists (a cut may lack units, or drift)
    for name in ("drift_topk_var", "drift_eff_rank", "grad_topk_var", "grad_eff_rank", *PERTURB_MEANS):
        per_cut = [metrics[f"aniso_{name}_d{c}"] for c in cuts if f"aniso_{name}_d{c}" in metrics]
        if per_cut:
            metrics[f"aniso_{name}"] = float(np.mean(per_cut))
    # a mean of p-values is not a p-value: the smallest Holm-adjusted one tests "anisotropic at some cut"
    for (kind, name), per_cut in pvalues.items():
        prefix = "" if name == "pvalue" else "lw_"
        metrics[f"aniso_{kind}_{prefix}min_pvalue"] = float(A.holm(list(per_cut.values())).min())
    return AnisotropyResult(
        stats=pd.DataFrame(stat_rows, columns=["cut", "kind", "statistic", "value", "n", "p", "unit"]),
        spectra=pd.DataFrame(spec_rows, columns=["cut", "kind", "index", "eig", "null_q05", "null_q95"]),
        perturb=pd.concat(pert_frames, ignore_index=True)
        if pert_frames
        else pd.DataFrame(columns=["cut", "eps", "kind", "draw", "acc"]),
        metrics=metrics,
    )


def mmd_measures(
    model: BlockNet,
    ckpts: Checkpoints,
    cfg: AnalyzeConfig,
    data: DataBundle,
    train: EvalSplit,
    test: EvalSplit,
    max_rows: int = 1000,
) -> dict[str, float]:
    """tc_mmd_d<cut>: MMD² between the temporally augmented shallow features {z_t(x): t in the window,
    x in the train split} and the final checkpoint's features of the test split, global-average-pooled
    (at most `max_rows` rows each, seeded). Small = the augmentation covers the test distribution."""
    from tc import noise

    win = C.window(ckpts.steps, cfg.window)
    g = torch.Generator().manual_seed(cfg.seed + 3)
    out = {}
    for cut in parse_cuts(cfg.cuts, model):
        aug = noise.pool(
            noise.features(model, [ckpts.state_dicts[i] for i in win], data.normalize(train.x), cut, cfg.batch_size)
        ).flatten(0, 1)
        tst = noise.pool(noise.features(model, [ckpts.state_dicts[-1]], data.normalize(test.x), cut, cfg.batch_size))[0]
        aug = aug[torch.randperm(len(aug), generator=g)[:max_rows]]
        tst = tst[torch.randperm(len(tst), generator=g)[:max_rows]]
        out[f"tc_mmd_d{cut}"] = C.mmd2(aug, tst)[0]
    out["tc_mmd"] = float(np.mean(list(out.values())))
    return out
