"""What an analysis gets besides its checkpoints and data: the training run's context (`RunContext`), and the
one rule for the run's initialisation θ_0 (`initial_state`).

`tc.tracking` builds a `RunContext` from a logged run (its config, the reference run, its timing); a user who
analyzes checkpoints of their own builds one by hand. The checkpoints themselves are `tc.core.checkpoints.Checkpoints`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from tc.config import AnalyzeConfig, TrainConfig
from tc.core.checkpoints import Checkpoints, StateDict, init_index


@dataclass(frozen=True)
class RunContext:
    """What an analysis needs to know about the training run besides its checkpoints and data.

    Example:

    >>> import tc
    >>> model = tc.build_model(tc.ModelSpec("mlp", 3, 16, in_channels=1, image_size=8, num_classes=10))
    >>> run = tc.RunContext(model, train_batch_size=32, train_seed=0)  # no other seed's run, no step-0 state
    >>> run.reference is None and run.init is None
    True
    """

    model: torch.nn.Module  # a `tc.core.models.BlockNet` of the run's architecture (its weights are never used)
    train_batch_size: int  # the run's minibatch size: gradient noise is measured on such minibatches
    train_seed: int  # the run's data-order seed: the same minibatches the run saw in epoch 0
    reference: Checkpoints | None = None  # another seed's run, for the cross-seed control
    seconds_per_epoch: float | None = None  # the run's own training time per epoch, for the *_cost_epochs
    # the run's step-0 state dict (its initialisation), whatever checkpoints the analysis selected: gm_dist_init
    # measures from it; None when the run never logged step 0 (or the caller did not load it)
    init: StateDict | None = None
    # the `TrainConfig` fields the run did not log (a run logged from a user's own loop holds only the settings its
    # user gave): the caller filled in tc's defaults there, and `unlogged_warnings` says where the analysis uses them
    unlogged: tuple[str, ...] = ()
    # the run's per-epoch training curve, for the learning-speed measures (gm_sum_train_loss, gm_steps_to_criterion);
    # None when the caller has none (they are then not asked for)
    history: TrainingHistory | None = None


@dataclass(frozen=True)
class TrainingHistory:
    """A run's per-epoch training metrics as it logged them (`tc.core.train`), each a tuple of (optimizer step at
    the epoch's end, value): what the learning-speed measures read (`tc.core.learning_speed`). `tc.tracking`
    reads it from a logged run; a user who trained their own loop builds one by hand.

    Example (three epochs of 10 steps, a run that stopped at its criterion 0.1):

    >>> h = TrainingHistory(train_loss=((10, 1.2), (20, 0.4), (30, 0.2)), criterion_loss=((10, 0.9), (20, 0.3),
    ...     (30, 0.08)), target_loss=0.1)
    >>> len(h.train_loss)
    3
    """

    train_loss: tuple[tuple[int, float], ...] = ()  # `train_loss`: the epoch's mean minibatch loss (train mode)
    # `train_eval_loss`: the loss the stopping criterion compares with target_loss (whole training set, eval mode)
    criterion_loss: tuple[tuple[int, float], ...] = ()
    target_loss: float = 0.0  # the run's stopping criterion; 0: none


# The training run's settings an analysis reads besides its architecture (which every checkpoint holds): which
# training samples and labels (`train_size`, `seed`, `label_noise`, as `tc.core.data.load_for` draws them), the
# epoch-0 order (`seed`) and the minibatch size (`batch_size`) of the gradient noise.
TRAINING_SAMPLES = ("train_size", "seed", "label_noise")


def unlogged_warnings(run: RunContext, cfg: AnalyzeConfig) -> list[str]:
    """One warning when the analysis uses training settings the run did not log (`run.unlogged`): what it
    assumed (tc's defaults) and what for; [] when it uses none of them."""
    uses = []
    if "train" in cfg.split_names:  # the measures (gm_*, tc_mmd) read its samples too
        uses.append(("the train split", TRAINING_SAMPLES))
    elif cfg.measures:  # they read the training samples whatever `splits` says (`tc.analysis.run.measure_samples`)
        uses.append(("the measures' training samples", TRAINING_SAMPLES))
    if cfg.anisotropy:
        uses.append(("the gradient-noise minibatches", (*TRAINING_SAMPLES, "batch_size")))
    if cfg.bn_mode == "recalibrate":
        uses.append(("the BatchNorm calibration batches", TRAINING_SAMPLES))
    missing = [n for n in dict.fromkeys(n for _, names in uses for n in names) if n in run.unlogged]
    if not missing:
        return []
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    assumed = ", ".join(f"{n}={defaults[n]}" for n in missing)
    what = "; ".join(w for w, names in uses if set(names) & set(missing))
    return [f"the run did not log {', '.join(missing)}: tc's defaults ({assumed}) are assumed for {what}"]


def initial_state(ckpts: Checkpoints, run: RunContext) -> StateDict | None:
    """The run's initialisation θ_0: the step-0 checkpoint, selected or not (`run.init`); None when unknown.
    Never the first *selected* checkpoint: with `checkpoints=5,10` that is θ_5, not θ_0 (`init_index`)."""
    i = init_index(ckpts.steps)
    return ckpts.state_dicts[i] if i is not None else run.init
