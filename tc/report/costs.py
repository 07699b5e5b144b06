"""What the report's measures cost, in training epochs per sweep trial (costs.csv), and what the paper's
scale would cost (an estimate, stated as one). Pure."""

from __future__ import annotations

import math
import re

import pandas as pd

from tc.report.experiments import Settings

# The analysis' timed steps, `<step>_seconds` each (`tc.analysis.registry`): listed, because a trial's run also holds
# other `_seconds` metrics, such as its training's `train_seconds`, which are no cost of a measure.
TIMED_STEP = re.compile(r"analysis|anisotropy|tc_mmd|gm_\w+|tc_test_cheap_k\d+_n\d+")


def epoch_costs(trials: list[tuple[dict[str, float], float | None]]) -> dict[str, float]:
    """Mean cost in training epochs of each timed step over the trials, given each trial's (metrics, seconds
    per training epoch): every `<step>_seconds` metric of a `TIMED_STEP` over that trial's seconds per epoch."""
    totals: dict[str, list[float]] = {}
    for metrics, per_epoch in trials:
        for k, v in metrics.items():
            step = k.removesuffix("_seconds")
            if step != k and TIMED_STEP.fullmatch(step) and per_epoch:
                totals.setdefault(step, []).append(v / per_epoch)
    return {k: sum(v) / len(v) for k, v in totals.items()}


def cost_of(measure: str, costs: dict[str, float]) -> float | None:
    """The timed step that produced `measure`: its own timer, else the analysis it is part of."""
    if measure in costs:
        return costs[measure]
    if measure.startswith("aniso_"):
        return costs.get("anisotropy")
    if measure.startswith(("tc_", "drift_")):
        return costs.get("analysis")
    return None


def costs_table(costs: dict[str, float]) -> pd.DataFrame:
    """costs.csv: one row per timed step, its mean cost in training epochs per trial (`epoch_costs`)."""
    return pd.DataFrame({"step": list(costs), "epochs": list(costs.values())})


# An estimate, not a measurement: stated as such in the report. 50k images x 100 epochs of ResNet-20 on one
# modern GPU at ~10k img/s (fp32) is ~10 min per run; the analysis (full matrix, 101 checkpoints) is of the same
# order. The seeded experiments train and analyze 2 ResNet arms (base, frozen) per seed; a sweep trial trains
# each of its seeds (its analysis, final matrix only, is small beside that).
PAPER_GPU_MINUTES = 10  # to train one paper-scale run, and as much to analyze it


def paper_scale(s: Settings, seeds: int) -> str:
    """The paper-scale estimate (PAPER_GPU_MINUTES per run and per analysis) at the report's seeds and trials,
    with `seeds` training seeds per sweep trial, rounded up to whole GPU-hours."""
    seeded = math.ceil(s.seeds * 2 * 2 * PAPER_GPU_MINUTES / 60)
    trials = math.ceil(s.n_trials * seeds * PAPER_GPU_MINUTES / 60)
    per = {1: "one-seed", 2: "two-seed"}.get(seeds, f"{seeds}-seed")
    return (
        f"Estimated (not measured): about {PAPER_GPU_MINUTES} GPU-minutes to train one run and as much to analyze "
        f"it, so about {seeded} GPU-hours for the seeded experiments at {s.seeds} seeds per arm and about {trials} "
        f"GPU-hours for a {s.n_trials}-trial {per} sweep."
    )
