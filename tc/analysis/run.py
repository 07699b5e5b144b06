"""Analyze a run: checkpoints + data + config in, every metric, tidy tables and summary out (no MLflow here).

`analyze_run` is the one owner of an analysis: the temporal-consistency quantities of SPEC sections 2-4
(`consistency_analysis`), the anisotropy statistics of section 5 (`tc.analysis.anisotropy`), the baseline
generalization measures gm_* (`tc.core.baselines`) and the feature MMD. `tc.analysis.registry.METRICS` names
every metric it logs. The splits it evaluates are described in `tc.analysis.splits`.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tc.analysis import plots
from tc.analysis.anisotropy import AnisotropyResult, anisotropy
from tc.analysis.registry import add_means_over_cuts
from tc.analysis.splits import EvalSplit, make_splits, parse_cuts, split_named
from tc.config import AnalyzeConfig
from tc.core import baselines as measures
from tc.core import consistency as C
from tc.core import sgd_noise as noise
from tc.core.checkpoints import Checkpoints, RunContext, init_index
from tc.core.compose import ComposeOptions, composite_outputs, composite_outputs_naive
from tc.core.data import DataBundle
from tc.core.device import exact_fp32, resolve_device
from tc.core.models import BlockNet, at_state
from tc.core.progress import progress_bar


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

    def write_files(self, out: Path, cfg: AnalyzeConfig) -> None:
        """The tidy CSV tables, summary.json (with the config) and the figures, into directory `out`."""
        for name in ("matrices", "lags", "drift", "per_sample", "corrupt"):
            getattr(self, name).to_csv(out / f"{name}.csv", index=False)
        (out / "summary.json").write_text(json.dumps({**self.summary, "config": asdict(cfg)}, indent=1))
        figures = {
            "drift_vs_consistency.png": plots.drift_vs_consistency(self.drift),
            "per_sample_kde.png": plots.per_sample_kde(self.per_sample),
        }
        if self.aniso is not None:
            self.aniso.stats.to_csv(out / "anisotropy.csv", index=False)
            self.aniso.spectra.to_csv(out / "anisotropy_spectra.csv", index=False)
            self.aniso.perturb.to_csv(out / "perturbation.csv", index=False)
            figures["anisotropy_spectra.png"] = plots.spectra_vs_null(self.aniso.spectra)
            figures["perturbation.png"] = plots.perturbation_curves(self.aniso.perturb)
        if cfg.matrix == "full":
            figures["consistency_heatmaps.png"] = plots.consistency_heatmaps(self.matrices)
            figures["lag_curves.png"] = plots.lag_curves(self.lags)
        plots.save_figures(figures, out)


MIN_WINDOW = 3  # fewer checkpoints in the tc window: warn and tag the run


def analyze_run(
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    run: RunContext,
    progress: Callable[[int], None] | None = None,
    *,
    controls: bool = True,
) -> AnalysisResult:
    """Every metric of an analysis of `ckpts` (see `tc.analysis.registry.METRICS`), with its tables and summary.
    `progress(n)` is called as the composite forwards finish n more samples. `controls=False` leaves out the
    controls of `consistency_analysis` (cross-seed, bf16 agreement): a cheap surrogate is timed alone.
    On CUDA the whole analysis runs with TF32 off (`tc.core.device.exact_fp32`), restored after."""
    with exact_fp32(resolve_device(cfg.device)):  # TF32 off on CUDA: fp32 means fp32 (tc.core.device.exact_fp32)
        splits = make_splits(data, cfg)
        result = consistency_analysis(ckpts, data, cfg, run, splits, progress, controls=controls)
        if cfg.anisotropy:
            split = split_named(splits, "test") or splits[0]
            t0 = time.perf_counter()
            steps = len(parse_cuts(cfg.cut_spec, run.model)) + 1  # gradient noise, then each cut
            with progress_bar(steps, "tc analyze: anisotropy", unit="step") as tick:
                result.aniso = anisotropy(ckpts, data, cfg, run, split, tick)
            result.metrics.update(result.aniso.metrics)
            result.metrics["anisotropy_seconds"] = time.perf_counter() - t0
            if "aniso_grad_min_pvalue" not in result.metrics:
                result.summary["warnings"].append(
                    "gradient noise skipped: the training set has fewer than 3 full minibatches"
                )
        train, test = split_named(splits, "train"), split_named(splits, "test")
        if cfg.measures:
            if train is None:
                result.summary["warnings"].append("baseline measures need the train split; skipped")
            else:
                gm = baseline_measures(ckpts, data, cfg, run, (train, test), result.summary["warnings"])
                result.metrics.update(gm)
            if train is not None and test is not None:
                t0 = time.perf_counter()
                result.metrics.update(mmd_measures(ckpts, data, cfg, run, (train, test)))
                result.metrics["tc_mmd_seconds"] = time.perf_counter() - t0
        if run.seconds_per_epoch:  # what the consistency analysis cost, in the run's own training epochs
            result.metrics["tc_cost_epochs"] = result.metrics["analysis_seconds"] / run.seconds_per_epoch
    return result


NO_INIT_WARNING = "gm_dist_init is NaN: the run logged no checkpoint at step 0 (its initialisation)"


def initial_state(ckpts: Checkpoints, run: RunContext) -> dict[str, torch.Tensor] | None:
    """The run's initialisation θ_0: the step-0 checkpoint, selected or not (`run.init`); None when unknown.
    Never the first *selected* checkpoint: with `checkpoints=5,10` that is θ_5, not θ_0 (`init_index`)."""
    i = init_index(ckpts.steps)
    return ckpts.state_dicts[i] if i is not None else run.init


def baseline_measures(
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    run: RunContext,
    splits: tuple[EvalSplit, EvalSplit | None],
    warnings: list[str] | None = None,
) -> dict[str, float]:
    """gm_<name> of the final checkpoint on the (train, test) analysis samples (`tc.core.baselines.compute_all`),
    each with its cost in seconds and in training-epoch equivalents (`gm_<name>_cost_epochs`, from the run's
    own time per epoch). `gm_dist_init` = ||θ_T - θ_0|| with θ_0 the step-0 checkpoint (`initial_state`); NaN,
    with `NO_INIT_WARNING` appended to `warnings`, when the run never logged step 0."""
    train, test = splits
    final = at_state(run.model, ckpts.state_dicts[-1])
    init = initial_state(ckpts, run)
    values, seconds = measures.compute_all(
        final,
        at_state(run.model, init) if init is not None else final,  # no θ_0: its distance is replaced below
        (data.normalize(train.x), train.y),
        other=at_state(run.model, run.reference.state_dicts[-1]) if run.reference is not None else None,
        x_test=data.normalize(test.x) if test is not None else None,
        seed=cfg.seed,
        device=resolve_device(cfg.device),
    )
    if init is None:
        values["gm_dist_init"] = math.nan
        seconds.pop("gm_dist_init", None)
        if warnings is not None:
            warnings.append(NO_INIT_WARNING)
    out = dict(values)
    for name, sec in seconds.items():
        out[f"{name}_seconds"] = sec
        if run.seconds_per_epoch:
            out[f"{name}_cost_epochs"] = sec / run.seconds_per_epoch
    return out


@dataclass(frozen=True)
class _Plan:
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


def _outputs(plan: _Plan, split: EvalSplit) -> dict:
    """Composite outputs of one split: the fast path, or the naive one where BatchNorm is recalibrated."""
    cfg, sds = plan.cfg, plan.ckpts.state_dicts
    columns = None if cfg.matrix == "full" else [plan.T]
    common = dict(columns=columns, batch_size=cfg.batch_size, device=resolve_device(cfg.device))
    xy = (plan.data.normalize(split.x), split.y)
    if cfg.bn_mode == "recalibrate":
        return composite_outputs_naive(
            plan.model, sds, sds, xy, plan.cuts, ComposeOptions(calibration=plan.calibration, **common)
        )
    opts = ComposeOptions(precision=cfg.precision, progress=plan.progress, **common)
    return composite_outputs(plan.model, sds, sds, xy, plan.cuts, opts)


def consistency_analysis(
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    run: RunContext,
    splits: list[EvalSplit] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    controls: bool = True,
) -> AnalysisResult:
    """Every SPEC section 2-3 quantity for each (cut, split); see `tc.core.consistency` for the formulas.
    `splits` defaults to `make_splits(data, cfg)`. Also `tc_full_<split>` (whole networks over the same
    window), `tc_excess_<split>`, `tc_kappa_<split>[_d<cut>]` and `tc_window_checkpoints`; a window of fewer
    than `MIN_WINDOW` checkpoints adds a line to `summary["warnings"]` and a tag to `summary["tags"]`. With
    `controls` (the default) also the controls: `tc_test_crossseed*` when `run.reference` is set, and
    `bf16_agreement` when `cfg.precision` is bf16 (`cfg.precision` is the composites' compute precision
    either way)."""
    t0 = time.perf_counter()
    splits = make_splits(data, cfg) if splits is None else splits
    model = run.model
    cuts = parse_cuts(cfg.cut_spec, model)
    steps = ckpts.steps
    T = len(steps) - 1
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
    # cfg.phases: the same scores over the early, middle and late thirds of training (fractions of the last
    # step, so that runs of different lengths are compared at matched points); raises before any compute
    # when a third holds no checkpoint.
    phases = C.phase_windows(steps) if cfg.phases else {}
    summary["phase_steps"] = {name: [steps[i] for i in idx] for name, idx in phases.items()}
    rows_used = sorted(set(win).union(*phases.values()))  # whole-network predictions needed for tc_full
    plan = _Plan(model, ckpts, data, cfg, cuts, win, calibration, progress)
    for split in splits:
        outs = _outputs(plan, split)
        network_pred = _network_predictions(plan, [*rows_used, T], split)
        at = {i: k for k, i in enumerate(rows_used)}  # checkpoint index -> row of network_pred
        metrics[f"tc_full_{split.name}"] = C.tc_full(network_pred, [at[i] for i in win])
        for name, idx in phases.items():
            metrics[f"tc_full_{split.name}_{name}"] = C.tc_full(network_pred, [at[i] for i in idx])
        per_cut_phase: dict[str, float] = {}  # phase scores per cut; only their means over cuts are logged
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
            for name, idx in phases.items():
                per_cut_phase[f"tc_{split.name}_{name}_d{cut}"] = C.tc_score(agree, idx)
                per_cut_phase[f"tc_kappa_{split.name}_{name}_d{cut}"] = C.tc_kappa(
                    out, out.pred[T, T], idx, num_classes
                )
            metrics[f"acc_{split.name}"] = float(acc[T, T])  # the final network itself (same at every cut)
            if (i0 := init_index(steps)) is not None:  # the initialisation, only if step 0 was selected
                metrics[f"tc_{split.name}_random_shallow_d{cut}"] = float(agree[i0, T])
            # the recalibrating (naive) path keeps no features, so it reports no drift
            drift = out.drift.mean(dim=1) if out.drift is not None else torch.full((len(steps),), math.nan)
            if out.drift is not None:
                metrics[f"drift_{split.name}_d{cut}"] = C.drift_score(out.drift, win)
            drift_rows += [
                (cut, split.name, steps[i], float(drift[i]), float(agree[i, T]), float(acc[i, T]))
                for i in range(len(steps))
            ]
            c = C.per_sample_consistency(out, split.y, win)
            sample_rows.append(
                pd.DataFrame({"cut": cut, "split": split.name, "sample": np.arange(len(c)), "c": c.numpy()})
            )
            if split.corruption is not None:
                scores = C.corruption_scores(out, split.y, win, split.corruption, split.severity)
                corrupt_rows += [(cut, *row) for row in scores]
        prefixes = ("tc_{}", "tc_kappa_{}", "tc_{}_random_shallow", "drift_{}")
        add_means_over_cuts(metrics, [p.format(split.name) for p in prefixes], cuts)
        phase_prefixes = [f"{p.format(split.name)}_{name}" for p in ("tc_{}", "tc_kappa_{}") for name in phases]
        add_means_over_cuts(per_cut_phase, phase_prefixes, cuts)
        metrics.update({k: per_cut_phase[k] for k in phase_prefixes})
        metrics[f"tc_excess_{split.name}"] = C.tc_excess(metrics[f"tc_{split.name}"], metrics[f"tc_full_{split.name}"])
        if rel_lags:
            r = np.nanmean(np.stack(rel_lags), axis=0)
            summary["half_life"][split.name] = C.half_life(r)  # None when censored
            metrics[f"half_life_{split.name}"] = C.half_life_metric(r)
    corrupt = pd.DataFrame(corrupt_rows, columns=["cut", "corruption", "severity", "tc", "acc"])
    for name, grp in corrupt.groupby("corruption"):
        metrics[f"tc_corrupt_{name}"] = float(grp["tc"].mean())
    test = split_named(splits, "test")
    if controls and run.reference is not None and test is not None:
        metrics.update(_cross_seed(plan, run.reference, test))
    if controls and cfg.precision == "bf16":
        metrics["bf16_agreement"] = _bf16_agreement(plan, splits[0])
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
def _network_predictions(plan: _Plan, indices: list[int], split: EvalSplit) -> torch.Tensor:
    """[len(indices), N] argmax predictions of the whole network f(x; θ) at those checkpoints (fp32, eval)."""
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


def _cross_seed(plan: _Plan, reference: Checkpoints, split: EvalSplit) -> dict[str, float]:
    """tc_test_crossseed_d = mean_{i in W} mean_x 1[g_d(shallow θ_i, deep θ'_T)(x) = f(x; θ'_T)]: shallow parts
    of this run's window checkpoints under the final deep part θ'_T of the reference run (another seed),
    against the reference network's own predictions. Expected to be low. Sampling unit: the sample x."""
    cfg, cuts = plan.cfg, plan.cuts
    ref_last = reference.state_dicts[-1]
    shallow = [plan.ckpts.state_dicts[i] for i in plan.win] + [ref_last]
    xy = (plan.data.normalize(split.x), split.y)
    opts = ComposeOptions(batch_size=cfg.batch_size, precision=cfg.precision, device=resolve_device(cfg.device))
    outs = composite_outputs(plan.model, shallow, [ref_last], xy, cuts, opts)
    metrics = {
        f"tc_test_crossseed_d{cut}": float((out.pred[:-1, 0] == out.pred[-1, 0]).double().mean())
        for cut, out in outs.items()
    }
    add_means_over_cuts(metrics, ["tc_test_crossseed"], cuts)
    return metrics


def _bf16_agreement(plan: _Plan, split: EvalSplit) -> float:
    """Fraction of (shallow checkpoint, cut, sample) whose bf16 prediction of the final column equals fp32's."""
    T, cuts, sds = plan.T, plan.cuts, plan.ckpts.state_dicts
    xy = (plan.data.normalize(split.x), split.y)
    kw = dict(columns=[T], batch_size=plan.cfg.batch_size, device=resolve_device(plan.cfg.device))
    lo = composite_outputs(plan.model, sds, sds, xy, cuts, ComposeOptions(precision="bf16", **kw))
    hi = composite_outputs(plan.model, sds, sds, xy, cuts, ComposeOptions(precision="fp32", **kw))
    return float(np.mean([(lo[c].pred[:, T] == hi[c].pred[:, T]).double().mean() for c in cuts]))


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
