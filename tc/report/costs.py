"""What the report's measures cost per sweep trial, in total compute relative to ONE training run of the trial
(`run_costs`: the training runs a measure needs beyond the trial's own, plus its analysis time over the trial's
training time; costs_<env>.csv), or in training epochs (`epoch_costs`, the tables stored before issue 23); and what
the paper's scale would cost (an estimate, stated as one). Pure."""

from __future__ import annotations

import math
import re

import pandas as pd

from tc.config import SPLITS
from tc.report.experiments import Settings, trials_for

_SPLIT = "|".join(SPLITS)  # one split's timer: tc_<split>
# The analysis' timed steps, `<step>_seconds` each (`tc.analysis.registry`): listed, because a trial's run also holds
# other `_seconds` metrics, such as its training's `train_seconds`, which are no cost of a measure. The sums
# `analysis` (the consistency analysis) and `anisotropy` are always there; the per-phase timers (one split's
# composites, whole networks and scores `tc_<split>`, making the splits, the controls, the anisotropy's parts) only
# in analyses that log them: `cost_of` falls back to the sums without them. Only names an analysis emits: a
# timer added to the analysis must be added here too.
TIMED_STEP = re.compile(
    r"analysis|anisotropy|tc_mmd|gm_\w+|tc_test_cheap_k\d+_n\d+|tc_(" + _SPLIT + ")|splits|controls"
    r"|aniso_(grad|features|stats|perturb)"
)
#: The cost of training a trial's second seed, in epochs (its `epochs_trained`): what gm_disagreement,
#: tc_test_crossseed and every `<measure>_seed_sd` need besides their own computation.
SECOND_SEED = "second_seed_training"
TWO_SEEDS = ("gm_disagreement", "gm_js_disagreement")  # measures of the two seeds' final networks


def epoch_costs(trials: list[tuple[dict[str, float], float | None]], second_epochs: list[float] | None = None) -> dict:
    """Mean cost in training epochs of each timed step over the trials, given each trial's (metrics, seconds
    per training epoch): every `<step>_seconds` metric of a `TIMED_STEP` over that trial's seconds per epoch.
    `second_epochs`: the `epochs_trained` of each trial's second seed (a sweep with seeds=2), whose mean is
    the step `SECOND_SEED`."""
    totals: dict[str, list[float]] = {}
    for metrics, per_epoch in trials:
        for k, v in metrics.items():
            step = k.removesuffix("_seconds")
            if step != k and TIMED_STEP.fullmatch(step) and per_epoch:
                totals.setdefault(step, []).append(v / per_epoch)
    if second_epochs:
        totals[SECOND_SEED] = list(second_epochs)
    return {k: sum(v) / len(v) for k, v in totals.items()}


def run_costs(trials: list[tuple[dict[str, float], float | None]], seeds: int = 1) -> dict[str, float]:
    """Mean cost of each timed step in training runs: every `<step>_seconds` of a `TIMED_STEP` over the seconds of
    that trial's own training run (its seconds per epoch times its `epochs_trained`), averaged over the trials
    (`epoch_costs` with the run as the unit). With `seeds` = 2 the step `SECOND_SEED` costs exactly 1: the
    trial's second training run, which the two-seed measures need (`cost_of`). So a measure's `cost_of` is its
    training runs beyond the trial's own plus its analysis, relative to ONE training run of the trial."""
    per_run = [
        (m, per_epoch * m["epochs_trained"] if per_epoch and m.get("epochs_trained") else None)
        for m, per_epoch in trials
    ]
    out = epoch_costs(per_run)
    if seeds == 2:
        out[SECOND_SEED] = 1.0
    return out


def runs_from_epochs(costs: dict[str, float], epochs_per_run: float, seeds: int = 1) -> dict[str, float]:
    """Costs in epochs (`epoch_costs`, what tables stored before issue 23 hold) in training runs: each step's
    epochs over `epochs_per_run` (the trials' mean `epochs_trained`: an approximation, the mean of ratios being
    what `run_costs` measures), the second seed's training one run (`seeds` = 2). Empty without `epochs_per_run`."""
    if not epochs_per_run or not math.isfinite(epochs_per_run):
        return {}
    out = {k: v / epochs_per_run for k, v in costs.items() if k != SECOND_SEED}
    if seeds == 2:
        out[SECOND_SEED] = 1.0
    return out


def _split_of(measure: str) -> str | None:
    """The split a consistency measure is computed on (tc_corrupt_<name> on the corrupt split), else None."""
    for split in SPLITS:
        if re.search(rf"(^|_){split}(_|$)", measure.removeprefix("tc_").removeprefix("drift_")):
            return split
    return None


def _own_steps(measure: str, costs: dict[str, float]) -> list[str] | None:
    """The timed steps that compute `measure` in one analysis (its seed's training aside), each present in
    `costs`: the per-phase timers where the analysis logged them, else the sum they are part of. None for a
    measure of no timed step."""
    if measure in costs and not re.fullmatch(rf"tc_({_SPLIT})", measure):
        return [measure]  # its own timer: gm_*, tc_mmd, the cheap surrogates
    if measure.startswith("aniso_"):
        kind = measure.split("_")[1]  # grad, drift or perturb
        # aniso_stats: the spectra and nulls of both kinds; aniso_perturb: the drift directions and the test
        need = {
            "grad": ("aniso_grad", "aniso_stats"),
            "drift": ("aniso_features", "aniso_stats"),
            "perturb": ("aniso_features", "aniso_perturb"),
        }.get(kind, ())
        steps = [s for s in need if s in costs]
        return steps or (["anisotropy"] if "anisotropy" in costs else None)
    if not measure.startswith(("tc_", "drift_", "acc_", "half_life_")):
        return None
    if measure.startswith("tc_test_crossseed"):
        return ["controls"] if "controls" in costs else (["analysis"] if "analysis" in costs else None)
    split = _split_of(measure)
    if split is None:
        return ["analysis"] if "analysis" in costs else None
    # tc_<split>_seconds times the split's composites and its whole networks (tc_full_<split>) together: so
    # tc_full_<split> and tc_excess_<split> = (tc - tc_full) / (1 - tc_full) cost that one timer too
    if f"tc_{split}" not in costs:
        return ["analysis"] if "analysis" in costs else None
    return [f"tc_{split}"] + (["splits"] if split == "corrupt" and "splits" in costs else [])  # the corruptions


def cost_of(measure: str, costs: dict[str, float]) -> float | None:
    """What `measure` costs a sweep trial, in training epochs (`costs`: `epoch_costs`): every timed step it
    needs (`_own_steps`: its per-phase timers where logged, else the analysis or anisotropy sum it is part
    of); the two-seed measures (`TWO_SEEDS`) and `tc_test_crossseed*` also the second seed's training (`SECOND_SEED`);
    `<measure>_seed_sd` the measure on both seeds plus the second seed's training. `tc_window_checkpoints`
    costs 0: a count. None when no timed step produced the measure (or the second seed's training is not known
    for a measure that needs it)."""
    if measure == "tc_window_checkpoints":
        return 0.0
    base = measure.removesuffix("_seed_sd")
    steps = _own_steps(base, costs)
    if steps is None:
        return None
    own = sum(costs[s] for s in steps)
    second = base != measure or base in TWO_SEEDS or base.startswith("tc_test_crossseed")
    if not second:
        return own
    if SECOND_SEED not in costs:
        return None
    return (2 * own if base != measure else own) + costs[SECOND_SEED]


def costs_table(costs: dict[str, float], unit: str = "epochs") -> pd.DataFrame:
    """costs.csv: one row per timed step, its mean cost per trial in `unit`: `epochs` (`epoch_costs`, tables stored
    before issue 23) or `runs` (`run_costs`: training runs)."""
    return pd.DataFrame({"step": list(costs), unit: list(costs.values())})


# An estimate, not a measurement: stated as such in the report. 50k images x 100 epochs of ResNet-20 on one
# modern GPU at ~10k img/s (fp32) is ~10 min per run; the analysis (full matrix, 101 checkpoints) is of the same
# order. The seeded experiments train and analyze 2 ResNet arms (base, frozen) per seed; a sweep trial trains
# each of its seeds (its analysis, final matrix only, is small beside that).
PAPER_GPU_MINUTES = 10  # to train one paper-scale run, and as much to analyze it


def paper_scale(s: Settings, seeds: int) -> str:
    """The paper-scale estimate (PAPER_GPU_MINUTES per run and per analysis) at the report's seeds and trials,
    with `seeds` training seeds per sweep trial, rounded up to whole GPU-hours."""
    seeded = math.ceil(s.seeds * 2 * 2 * PAPER_GPU_MINUTES / 60)
    n_trials = sum(trials_for(s, env) for env in s.environments)
    trials = math.ceil(n_trials * seeds * PAPER_GPU_MINUTES / 60)
    per = {1: "one-seed", 2: "two-seed"}.get(seeds, f"{seeds}-seed")
    return (
        f"Estimated (not measured): about {PAPER_GPU_MINUTES} GPU-minutes to train one run and as much to analyze "
        f"it, so about {seeded} GPU-hours for the seeded experiments at {s.seeds} seeds per arm and about {trials} "
        f"GPU-hours for {n_trials} {per} sweep trials ({len(s.environments)} environment"
        f"{'s' if len(s.environments) != 1 else ''})."
    )
