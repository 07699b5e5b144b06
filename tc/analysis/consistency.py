"""The consistency family on a run (SPEC sections 2-3): `consistency_analysis` and its steps.

The formulas are `tc.core.consistency`'s (tensors in, numbers out); here they are applied to a run's
checkpoints split by split and cut by cut, and gathered into the tidy tables (matrices, lags, drift,
per_sample, corrupt) and the metrics `tc_*`, `tc_kappa_*`, `tc_full_*`, `tc_gain_*`, `tc_excess_*`, `acc_*`, `drift_*`,
`half_life_*` and `tc_corrupt_*` (`tc.analysis.registry.METRICS` says what each means). The forward passes are
`tc.analysis.composites`'s, the controls (cross-seed, bf16) `tc.analysis.controls`'.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from tc.analysis.composites import Plan, make_plan, network_predictions, split_outputs
from tc.analysis.controls import control_metrics
from tc.analysis.inputs import RunContext
from tc.analysis.registry import mean_over_cuts
from tc.analysis.result import AnalysisResult
from tc.analysis.splits import EvalSplit, make_splits
from tc.analysis.timing import timed
from tc.config import AnalyzeConfig
from tc.core import consistency as C
from tc.core import divergence as D
from tc.core.checkpoints import Checkpoints, init_index
from tc.core.compose import CompositeOutputs
from tc.core.data import DataBundle

MIN_WINDOW = 3  # fewer checkpoints in the tc window: warn and tag the run

Phases = dict[str, list[int]]  # phase name -> indices of its checkpoints (`tc.core.consistency.phase_windows`)


def consistency_analysis(
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    run: RunContext,
    splits: list[EvalSplit] | None = None,
    progress: Callable[[int], None] | None = None,
) -> AnalysisResult:
    """Every SPEC section 2-3 quantity for each (cut, split); see `tc.core.consistency` for the formulas.
    `splits` defaults to `make_splits(data, cfg)`. Also `tc_full_<split>` (whole networks over the same
    window), `tc_gain_<split>`, `tc_excess_<split>`, `tc_kappa_<split>[_d<cut>]` and `tc_window_checkpoints`; a
    window of fewer than `MIN_WINDOW` checkpoints adds a line to `summary["warnings"]` and a tag to
    `summary["tags"]`. With `cfg.controls` (the default) also the controls: `tc_test_crossseed*` when `run.reference`
    is set, and `bf16_agreement` when `cfg.precision` is bf16 (`cfg.precision` is the composites' compute precision
    either way). Timers: `tc_<split>_seconds` per split, `controls_seconds`, and `analysis_seconds` for all of it."""
    t0 = time.perf_counter()
    splits = make_splits(data, cfg) if splits is None else splits
    plan = make_plan(ckpts, data, cfg, run.model, progress)
    steps = ckpts.steps
    summary: dict = {"cuts": plan.cuts, "steps": steps, "window_steps": [steps[i] for i in plan.win], "half_life": {}}
    metrics: dict[str, float] = {"tc_window_checkpoints": float(len(plan.win))}
    summary["warnings"], summary["tags"] = [], {}
    if (msg := window_warning(summary["window_steps"])) is not None:
        summary["warnings"].append(msg)
        summary["tags"]["tc.window_warning"] = msg
    # cfg.phases: the same scores over the early, middle and late thirds of training (fractions of the last
    # step, so that runs of different lengths are compared at matched points); raises before any compute
    # when a third holds no checkpoint.
    phases = C.phase_windows(steps) if cfg.phases else {}
    summary["phase_steps"] = {name: [steps[i] for i in idx] for name, idx in phases.items()}
    tables = Tables()
    for split in splits:
        with timed(metrics, f"tc_{split.name}_seconds"):  # its composites and whole networks, and its scores
            split_metrics, half_life = split_scores(plan, split, phases, tables)
        metrics.update(split_metrics)
        summary["half_life"].update(half_life)
    corrupt = tables.corrupt_frame()
    metrics.update(corruption_means(corrupt))
    if cfg.controls:
        with timed(metrics, "controls_seconds"):
            metrics.update(control_metrics(plan, run, splits))
    metrics["analysis_seconds"] = time.perf_counter() - t0
    summary["metrics"] = metrics  # the same dict: what analyze_run adds later lands in summary.json too
    return AnalysisResult(
        matrices=pd.DataFrame(tables.matrices, columns=["cut", "split", "t1", "t2", "acc", "agree", "loss", "rc"]),
        lags=pd.DataFrame(tables.lags, columns=["cut", "split", "lag", "acc", "rc"]),
        drift=pd.DataFrame(tables.drift, columns=["cut", "split", "t1", "drift", "agree_final", "acc_final"]),
        per_sample=pd.concat(tables.per_sample, ignore_index=True) if tables.per_sample else pd.DataFrame(),
        corrupt=corrupt,
        metrics=metrics,
        summary=summary,
    )


def window_warning(window_steps: list[int]) -> str | None:
    """The warning for a tc window of fewer than `MIN_WINDOW` checkpoints (None when it has enough): tc is a
    mean over the window, and a mean over one or two checkpoints is no temporal average."""
    if len(window_steps) >= MIN_WINDOW:
        return None
    return (
        f"the tc window holds {len(window_steps)} checkpoint(s) (steps {window_steps}), fewer than "
        f"{MIN_WINDOW}: tc rests on too few checkpoints to be a temporal average; save more checkpoints "
        f"(checkpoint_every) or widen the window"
    )


@dataclass
class Tables:
    """The rows of the tidy tables, gathered split by split and cut by cut (columns: `AnalysisResult`)."""

    matrices: list[tuple] = field(default_factory=list)  # cut, split, t1, t2, acc, agree, loss, rc
    lags: list[tuple] = field(default_factory=list)  # cut, split, lag, acc, rc
    drift: list[tuple] = field(default_factory=list)  # cut, split, t1, drift, agree_final, acc_final
    per_sample: list[pd.DataFrame] = field(default_factory=list)  # cut, split, sample, c
    corrupt: list[tuple] = field(default_factory=list)  # cut, corruption, severity, tc, acc

    def corrupt_frame(self) -> pd.DataFrame:
        """The corrupt table (needed before the result: `corruption_means` reads it)."""
        return pd.DataFrame(self.corrupt, columns=["cut", "corruption", "severity", "tc", "acc"])


def split_scores(plan: Plan, split: EvalSplit, phases: Phases, tables: Tables) -> tuple[dict[str, float], dict]:
    """Every metric of one split, in the order they are logged, and its half-lives (`{split}_d{cut}` per cut
    and `{split}` over the cuts, None when censored; only with matrix=full); appends its rows to `tables`.
    The composites come first, then the whole networks (`whole_network_scores`), then each cut's matrices
    and scores, then the means over the cuts (`means_over_cuts`) and the half-life over the cuts."""
    outs = split_outputs(plan, split)
    metrics = whole_network_scores(plan, split, phases, outs)
    half_life: dict[str, int | None] = {}
    per_cut_phase: dict[str, float] = {}  # phase scores per cut; only their means over cuts are logged
    rel_lags = []
    for cut, out in outs.items():
        m = cut_matrices(out, split.y)
        tables.matrices += matrix_rows(cut, split.name, plan.ckpts.steps, out, m)
        if plan.cfg.matrix == "full":
            acc_lag, rc_lag = C.window_lag_curve(m.acc, plan.win), C.window_lag_curve(m.rc, plan.win)
            rel_lags.append(rc_lag)
            tables.lags += [(cut, split.name, lag, acc_lag[lag], rc_lag[lag]) for lag in range(len(acc_lag))]
            half_life[f"{split.name}_d{cut}"] = C.half_life(rc_lag)
        scores, phase_scores = cut_scores(plan, split.name, cut, out, m, phases)
        metrics.update(scores)
        per_cut_phase.update(phase_scores)
        tables.drift += drift_rows(plan, split.name, cut, out, m)
        c = C.per_sample_consistency(out, split.y, plan.win)
        tables.per_sample.append(
            pd.DataFrame({"cut": cut, "split": split.name, "sample": np.arange(len(c)), "c": c.numpy()})
        )
        if split.corruption is not None:
            scores = C.corruption_scores(out, split.y, plan.win, split.corruption, split.severity)
            tables.corrupt += [(cut, *row) for row in scores]
    metrics.update(means_over_cuts(metrics, per_cut_phase, split.name, phases, plan.cuts))
    if rel_lags:
        r = np.nanmean(np.stack(rel_lags), axis=0)  # r(Δ) averaged over the cuts
        half_life[split.name] = C.half_life(r)  # None when censored
        metrics[f"half_life_{split.name}"] = C.half_life_metric(r)
    return metrics, half_life


def whole_network_scores(
    plan: Plan, split: EvalSplit, phases: Phases, outs: dict[int, CompositeOutputs] | None = None
) -> dict[str, float]:
    """tc_full_{split} over the window and tc_full_{split}_{phase} over each phase (`tc.core.consistency.tc_full`):
    the agreement of the whole networks f(x; θ_i) with f(x; θ_T), the convergence baseline that tc must beat.
    The networks' predictions at every checkpoint any of them needs, and at T, are read from the split's
    composite outputs `outs` (`tc.analysis.composites.network_predictions`)."""
    rows_used = sorted(set(plan.win).union(*phases.values()))
    network_pred = network_predictions(plan, [*rows_used, plan.T], split, outs)
    at = {i: k for k, i in enumerate(rows_used)}  # checkpoint index -> row of network_pred
    metrics = {f"tc_full_{split.name}": C.tc_full(network_pred, [at[i] for i in plan.win])}
    for name, idx in phases.items():
        metrics[f"tc_full_{split.name}_{name}"] = C.tc_full(network_pred, [at[i] for i in idx])
    return metrics


@dataclass(frozen=True)
class CutMatrices:
    """The [n_shallow, n_deep] matrices of one cut and split (NaN where the pair was not evaluated)."""

    acc: torch.Tensor  # accuracy of g[i, j]
    agree: torch.Tensor  # agreement of g[i, j] with the deep checkpoint's own network f(·; θ_j)
    loss: torch.Tensor  # cross-entropy of g[i, j]
    rc: torch.Tensor  # relative consistency acc[i, j] / acc[j, j]


def cut_matrices(out: CompositeOutputs, y: torch.Tensor) -> CutMatrices:
    """acc, agree, loss and rc of one cut's composite outputs on labels `y` (`tc.core.consistency`)."""
    acc = C.acc_matrix(out, y)
    return CutMatrices(
        acc, C.agree_matrix(out, C.own_predictions(out)), C.loss_matrix(out), C.relative_consistency(acc)
    )


def matrix_rows(cut: int, split: str, steps: list[int], out: CompositeOutputs, m: CutMatrices) -> list[tuple]:
    """The matrices table's rows of one cut: (cut, split, t1, t2, acc, agree, loss, rc) for every evaluated
    pair, t1 and t2 as steps."""
    rows = []
    for i, j in zip(*torch.nonzero(out.done, as_tuple=True), strict=True):
        i, j = int(i), int(j)
        rows.append(
            (
                cut,
                split,
                steps[i],
                steps[j],
                float(m.acc[i, j]),
                float(m.agree[i, j]),
                float(m.loss[i, j]),
                float(m.rc[i, j]),
            )
        )
    return rows


def cut_scores(
    plan: Plan, split: str, cut: int, out: CompositeOutputs, m: CutMatrices, phases: Phases
) -> tuple[dict[str, float], dict[str, float]]:
    """The scores of one cut: (logged, per phase). Logged: tc_{split}_d{cut} (`tc_score`), tc_kappa (`tc_kappa`),
    acc_{split} (the final network itself, the same at every cut), tc_js_{split}_d{cut} (the soft temporal
    consistency, mean JS in bits over the same window: `tc.core.divergence.tc_js`),
    tc_{split}_random_shallow_d{cut} (agree[0, T], only when step 0 is analyzed) and drift_{split}_d{cut} (when
    the path kept features). Per phase: tc and
    tc_kappa over each phase's checkpoints, of which only the means over the cuts are logged."""
    T, win, num_classes = plan.T, plan.win, plan.model.spec.num_classes
    metrics = {
        f"tc_{split}_d{cut}": C.tc_score(m.agree, win),
        f"tc_kappa_{split}_d{cut}": C.tc_kappa(out, out.pred[T, T], win, num_classes),
    }
    per_phase = {}
    for name, idx in phases.items():
        per_phase[f"tc_{split}_{name}_d{cut}"] = C.tc_score(m.agree, idx)
        per_phase[f"tc_kappa_{split}_{name}_d{cut}"] = C.tc_kappa(out, out.pred[T, T], idx, num_classes)
    metrics[f"acc_{split}"] = float(m.acc[T, T])
    if out.logp is not None and out.logp_column == T:  # the final column's distributions, kept by the composites
        metrics[f"tc_js_{split}_d{cut}"] = D.tc_js(out.logp, win, T)
    if (i0 := init_index(plan.ckpts.steps)) is not None:  # the initialisation, only if step 0 was selected
        metrics[f"tc_{split}_random_shallow_d{cut}"] = float(m.agree[i0, T])
    if out.drift is not None:  # the recalibrating (naive) path keeps no features, so it reports no drift
        metrics[f"drift_{split}_d{cut}"] = C.drift_score(out.drift, win)
    return metrics, per_phase


def drift_rows(plan: Plan, split: str, cut: int, out: CompositeOutputs, m: CutMatrices) -> list[tuple]:
    """The drift table's rows of one cut, one per checkpoint t1: (cut, split, t1, mean relative feature drift
    of θ_t1 from θ_T, agree[t1, T], acc[t1, T]); the drift is NaN on the naive path, which keeps no features."""
    steps, T = plan.ckpts.steps, plan.T
    drift = out.drift.mean(dim=1) if out.drift is not None else torch.full((len(steps),), math.nan)
    return [
        (cut, split, steps[i], float(drift[i]), float(m.agree[i, T]), float(m.acc[i, T])) for i in range(len(steps))
    ]


def means_over_cuts(
    metrics: dict[str, float], per_cut_phase: dict[str, float], split: str, phases: Phases, cuts: list[int]
) -> dict[str, float]:
    """One split's aggregates over its cuts (`tc.analysis.registry.mean_over_cuts`): tc_{split},
    tc_kappa_{split}, tc_js_{split}, tc_{split}_random_shallow and drift_{split} from `metrics`, each phase's tc
    and tc_kappa from `per_cut_phase`, the convergence-adjusted scores tc_gain_{split} = tc - tc_full (`tc_gain`)
    and tc_excess_{split} = (tc - tc_full) / max(1 - tc_full, EXCESS_FLOOR) (`tc_excess`), and the single-run
    error estimates err_hat_tc_{split} = 1 - tc_{split} and err_hat_full_{split} = 1 - tc_full_{split}
    (`error_estimates`)."""
    prefixes = [p.format(split) for p in ("tc_{}", "tc_kappa_{}", "tc_js_{}", "tc_{}_random_shallow", "drift_{}")]
    means = {p: mean for p in prefixes if (mean := mean_over_cuts(metrics, p, cuts)) is not None}
    phase_prefixes = [f"{p.format(split)}_{name}" for p in ("tc_{}", "tc_kappa_{}") for name in phases]
    means.update({p: mean_over_cuts(per_cut_phase, p, cuts) for p in phase_prefixes})  # every cut has them all
    means[f"tc_gain_{split}"] = C.tc_gain(means[f"tc_{split}"], metrics[f"tc_full_{split}"])
    means[f"tc_excess_{split}"] = C.tc_excess(means[f"tc_{split}"], metrics[f"tc_full_{split}"])
    means.update(error_estimates(means[f"tc_{split}"], metrics[f"tc_full_{split}"], split))
    return means


def error_estimates(tc: float, tc_full: float, split: str) -> dict[str, float]:
    """The single-run estimates of the final network's error on the split, from no label (GDE's logic, Jiang et al.
    2022, with the run's own earlier checkpoints in place of a second seed):

        err_hat_tc_{split}   = 1 - tc_{split}        (composites g_d[t, T] that disagree with f(θ_T), t in W)
        err_hat_full_{split} = 1 - tc_full_{split}   (whole networks f(θ_t) that disagree with f(θ_T), t in W)

    How well they match the error is `tc.stats.calibration.calibration` over trials; they rank the trials as
    tc and tc_full do (reversed), so the sweep correlates none of them as a measure of its own."""
    return {f"err_hat_tc_{split}": 1.0 - tc, f"err_hat_full_{split}": 1.0 - tc_full}


def corruption_means(corrupt: pd.DataFrame) -> dict[str, float]:
    """tc_corrupt_{corruption}: the corrupt table's tc averaged over the cuts and severities of each corruption."""
    return {f"tc_corrupt_{name}": float(grp["tc"].mean()) for name, grp in corrupt.groupby("corruption")}
