"""The controls of a consistency analysis: the cross-seed composite (`tc_test_crossseed*`), which says what
agreement another seed's features get (expected low), and the bf16 agreement check (`bf16_agreement`), which
says how often a bf16 composite predicts what the fp32 one does."""

from __future__ import annotations

import numpy as np

from tc.analysis.composites import Plan
from tc.analysis.inputs import RunContext
from tc.analysis.registry import add_means_over_cuts
from tc.analysis.splits import EvalSplit, split_named
from tc.config import AnalyzeConfig
from tc.core.checkpoints import Checkpoints
from tc.core.compose import ComposeOptions, composite_outputs
from tc.core.device import resolve_device


def control_metrics(plan: Plan, run: RunContext, splits: list[EvalSplit]) -> dict[str, float]:
    """The controls that apply: `cross_seed` on the test split when the run has a reference run (another seed)
    and a test split is analyzed, and `bf16_agreement` on the first split when the composites run in bf16."""
    metrics: dict[str, float] = {}
    test = split_named(splits, "test")
    if run.reference is not None and test is not None:
        metrics.update(cross_seed(plan, run.reference, test))
    if plan.cfg.precision == "bf16":
        metrics["bf16_agreement"] = bf16_agreement(plan, splits[0])
    return metrics


def control_warnings(cfg: AnalyzeConfig, run: RunContext) -> list[str]:
    """The controls asked for (`cfg.controls`) that `control_metrics` cannot compute: the cross-seed control (a
    reference run is given) without the test split."""
    if cfg.controls and run.reference is not None and "test" not in cfg.split_names:
        return [f"tc_test_crossseed not computed: the cross-seed control needs the test split (splits={cfg.splits})"]
    return []


def cross_seed(plan: Plan, reference: Checkpoints, split: EvalSplit) -> dict[str, float]:
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


def bf16_agreement(plan: Plan, split: EvalSplit) -> float:
    """Fraction of (shallow checkpoint, cut, sample) whose bf16 prediction of the final column equals fp32's."""
    T, cuts, sds = plan.T, plan.cuts, plan.ckpts.state_dicts
    xy = (plan.data.normalize(split.x), split.y)
    kw = dict(columns=[T], batch_size=plan.cfg.batch_size, device=resolve_device(plan.cfg.device))
    lo = composite_outputs(plan.model, sds, sds, xy, cuts, ComposeOptions(precision="bf16", **kw))
    hi = composite_outputs(plan.model, sds, sds, xy, cuts, ComposeOptions(precision="fp32", **kw))
    return float(np.mean([(lo[c].pred[:, T] == hi[c].pred[:, T]).double().mean() for c in cuts]))
