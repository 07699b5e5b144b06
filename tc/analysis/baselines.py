"""The baseline generalization measures gm_* on a run's final checkpoint (`tc.core.baselines` holds their
formulas), with what each costs in seconds and in the run's own training epochs; and the learning-speed measures
from the run's training curve (`tc.core.learning_speed`), which cost no forward pass."""

from __future__ import annotations

import math
import time
from collections.abc import Collection

from tc.analysis.inputs import RunContext, initial_state
from tc.analysis.splits import EvalSplit
from tc.config import AnalyzeConfig
from tc.core import baselines as measures
from tc.core import learning_speed as speed
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
    leave_out: Collection[str] = (),
) -> dict[str, float]:
    """gm_<name> of the final checkpoint on the (train, test) analysis samples (`tc.core.baselines.compute_all`),
    each with its cost in seconds and in training-epoch equivalents (`gm_<name>_cost_epochs`, from the run's
    own time per epoch), and `gm_sharpness_evals`, the σ values its search tried. `gm_dist_init` = ||θ_T - θ_0||
    with θ_0 the step-0 checkpoint (`initial_state`); NaN, with `NO_INIT_WARNING` appended to `warnings`, when
    the run never logged step 0. A measure the model's layers do not allow (`NEEDS_TC_MODELS` on a traced
    torchvision or user model) is left out, with a warning that names it and why (`n_measures_skipped`, which
    `tc.analysis.run.add_measures` logs, counts it). `leave_out`: gm_<name>s not asked for (not computed, not
    counted: `tc.core.baselines.compute_all`)."""
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
        leave_out=leave_out,
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


# the learning-speed measures: read from the run's logged training curve (`RunContext.history`)
LEARNING_SPEED = ("gm_sum_train_loss", "gm_steps_to_criterion")


def learning_speed_asked(run: RunContext) -> list[str]:
    """The learning-speed measures an analysis of `run` asks for: none without a training curve; the steps to the
    criterion only for a run that had one (target_loss > 0: without it "reaching the criterion" means nothing)."""
    if run.history is None:
        return []
    return ["gm_sum_train_loss", *(["gm_steps_to_criterion"] if run.history.target_loss > 0 else [])]


def learning_speed_measures(run: RunContext, warnings: list[str] | None = None) -> dict[str, float]:
    """gm_sum_train_loss = mean over the run's epochs of its per-epoch `train_loss` (`speed.mean_train_loss`: a
    mean, so runs of different lengths compare), and, for a run with a target_loss, gm_steps_to_criterion = the
    first optimizer step whose `train_eval_loss` (the stopping criterion's loss) is <= target_loss
    (`speed.steps_to_criterion`), each with `_seconds` (and `_cost_epochs`). No training curve: {}. A run that
    logged no train_loss gets no gm_sum_train_loss, one that logged no train_eval_loss no gm_steps_to_criterion
    (both then counted in n_measures_skipped); one that never reached its criterion gets gm_steps_to_criterion =
    NaN (censored: it stopped at the epoch cap); each with a line in `warnings`."""
    h, out = run.history, {}
    if h is None:
        return out
    said = warnings if warnings is not None else []
    t0 = time.perf_counter()
    if h.train_loss:
        out["gm_sum_train_loss"] = speed.mean_train_loss(h.train_loss)
        out["gm_sum_train_loss_seconds"] = time.perf_counter() - t0
    else:
        said.append("gm_sum_train_loss not computed: the run logged no per-epoch train_loss")
    if h.target_loss > 0 and not h.criterion_loss:  # unknown, not censored: no NaN that says "never reached"
        said.append("gm_steps_to_criterion not computed: the run logged no train_eval_loss")
    elif h.target_loss > 0:
        t0 = time.perf_counter()
        steps = speed.steps_to_criterion(h.criterion_loss, h.target_loss)
        out["gm_steps_to_criterion"] = math.nan if steps is None else float(steps)
        out["gm_steps_to_criterion_seconds"] = time.perf_counter() - t0
        if steps is None:
            last = max(s for s, _ in h.criterion_loss)
            said.append(
                f"gm_steps_to_criterion is NaN: the run's train_eval_loss never reached target_loss={h.target_loss}"
                f" in its {last} steps"
            )
    for name in LEARNING_SPEED:
        if f"{name}_seconds" in out and run.seconds_per_epoch:
            out[f"{name}_cost_epochs"] = out[f"{name}_seconds"] / run.seconds_per_epoch
    return out
