"""The baseline generalization measures gm_* on a run's final checkpoint (`tc.core.baselines` holds their
formulas), with what each costs in seconds and in the run's own training epochs."""

from __future__ import annotations

import math

from tc.analysis.inputs import RunContext, initial_state
from tc.analysis.splits import EvalSplit
from tc.config import AnalyzeConfig
from tc.core import baselines as measures
from tc.core.checkpoints import Checkpoints
from tc.core.data import DataBundle
from tc.core.device import resolve_device
from tc.core.models import at_state

NO_INIT_WARNING = "gm_dist_init is NaN: the run logged no checkpoint at step 0 (its initialisation)"
# the measures that need tc's own models (resnet20, vgg, mlp): a traced torchvision or user model is skipped there
NEEDS_TC_MODELS = ("gm_log_spectral_product",)


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
    own time per epoch), and `gm_sharpness_evals`, the σ values its search tried. `gm_dist_init` = ||θ_T - θ_0||
    with θ_0 the step-0 checkpoint (`initial_state`); NaN, with `NO_INIT_WARNING` appended to `warnings`, when
    the run never logged step 0. A measure the model's layers do not allow (`NEEDS_TC_MODELS` on a traced
    torchvision or user model) is left out, with a warning that names it and why (`n_measures_skipped`, which
    `tc.analysis.run.add_measures` logs, counts it)."""
    train, test = splits
    final = at_state(run.model, ckpts.state_dicts[-1])
    init = initial_state(ckpts, run)
    evals: dict[str, int] = {}
    skipped: dict[str, str] = {}
    values, seconds = measures.compute_all(
        final,
        at_state(run.model, init) if init is not None else final,  # no θ_0: its distance is replaced below
        (data.normalize(train.x), train.y),
        other=at_state(run.model, run.reference.state_dicts[-1]) if run.reference is not None else None,
        x_test=data.normalize(test.x) if test is not None else None,
        seed=cfg.seed,
        device=resolve_device(cfg.device),
        evals=evals,
        skipped=skipped,
    )
    for name, why in skipped.items():
        if warnings is not None:
            warnings.append(f"{name} not computed: {why} (it needs tc's own models; docs/own-models.md)")
    if init is None:
        values["gm_dist_init"] = math.nan
        seconds.pop("gm_dist_init", None)
        if warnings is not None:
            warnings.append(NO_INIT_WARNING)
    out = dict(values)
    out.update({f"{name}_evals": float(n) for name, n in evals.items()})  # gm_sharpness_evals: σ values tried
    for name, sec in seconds.items():
        out[f"{name}_seconds"] = sec
        if run.seconds_per_epoch:
            out[f"{name}_cost_epochs"] = sec / run.seconds_per_epoch
    return out
