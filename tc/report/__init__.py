"""The report (docs/REPORT.md): its seeded experiments and their claims (verdicts from `tc.stats.replicates`), the
sweep's verdict, and its text as a sequence of small section functions. No MLflow here: metrics and tables
in, markdown (`render`) and files (`write`) out; `entrypoints/report.py` runs the experiments as MLflow runs.

Every setting the text states (training schedule, seeds, analysis window, top-k, levels, margins, the sweep's
stopping rule and cap, the freezing cut, the machine) is read from `Settings`, the config dataclasses and
`tc.core.device`, never typed into the text. `write` stores the tables and the settings (report/settings.json)
beside the text; `rerender` re-renders the parts that follow from them (report/effects.csv, report/trials.csv,
report/costs.csv, report/settings.json): the verdict tables, section 4, the sweep's section and the forest
figure, with the current verdict rules, without rerunning an experiment."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from tc.analysis import anisotropy as anisotropy_metrics
from tc.analysis import plots
from tc.analysis.anisotropy import PERTURB_HEADLINE_EPS
from tc.config import AnalyzeConfig, SweepConfig, TrainConfig, from_strings
from tc.core.models import ModelSpec, build_model, default_depth
from tc.stats.multiplicity import ALPHA, PRIMARY_TARGET
from tc.stats.multiplicity import CONFIRMATORY_MEASURE as HEADLINE  # TODO(report): rename; headline = shown first
from tc.stats.rankcorr import CorrelationOptions, correlation_table
from tc.stats.replicates import (
    DIFFERS,
    INCONCLUSIVE,
    NO_DIFFERENCE,
    REFUTED,
    REPRODUCES,
    Claim,
    Effect,
    paired_effect,
    t_interval,
    verdict,
)
from tc.sweep.summary import measure_columns, split_converged

MAX_COST_EPOCHS = 2.0  # the bar: a consistency measure must cost at most this many training epochs per trial
MIN_TAU = 0.5  # the bar: |Kendall τ| with test accuracy at least this
MIN_TRIALS = 3  # the fewest converged trials a rank correlation is computed on (`tc.sweep.summary.summarize`)


@dataclass(frozen=True)
class Settings:
    """The report's scale. `base`: the ResNet runs (consistency, controls, anisotropy, freezing, BatchNorm)
    at `seeds` seeds; `labels`: the random-label MLP runs at `label_seeds` seeds per arm; the sweep's
    `n_trials` converged trials (`sweep_extra` on top of the sweep's defaults); `samples` per split;
    `analysis`: analyze parameters of every ResNet analysis (AnalyzeConfig's defaults for the rest; the report's
    own choices per analysis, e.g. `splits`, win)."""

    base: dict
    seeds: int
    labels: dict
    label_seeds: int
    n_trials: int
    sweep_extra: dict
    samples: int
    quick: bool
    analysis: dict = field(default_factory=dict)


def settings(quick: bool, trials: int, root: Path) -> Settings:
    """Quick (the test): ResNet-8 and a small MLP on digits, 2 seeds, at most 6 trials. Full: ResNet-20 (width
    16) on 5,000 Fashion-MNIST images at 5 seeds; the random-label MLP (width 256) on 1,000 digits at 5 seeds
    per arm; the sweep's default proxy (digits MLP trained to cross-entropy 0.01) at `trials` converged trials."""
    # random labels: no augmentation, no weight decay, a constant learning rate, trained until the training
    # cross-entropy on the labels used is <= 0.02 (accuracy >= 0.99, checked); a checkpoint every 8 steps,
    # analyzed at LABEL_FRACTIONS matched fractions of training (runs of different lengths compare at equal
    # progress)
    labels = {"dataset": "digits", "model": "mlp", "width": 256, "lr": 0.05, "schedule": "constant"}
    labels |= {"weight_decay": 0.0, "augment": "false", "batch_size": 64, "checkpoint_every": 8}
    if quick:
        base = {"dataset": "digits", "model": "resnet20", "depth": 8, "width": 8, "epochs": 4}
        base |= {"train_size": 800, "batch_size": 64}
        labels |= {"width": 64, "train_size": 300, "epochs": 150, "target_loss": 0.05}
        sweep_extra = {"search_space": str(root / "examples/digits_space.yaml"), "epochs": 150}
        return Settings(base, 2, labels, 2, min(trials, 6), sweep_extra, 200, True)
    base = {"dataset": "fashion-mnist", "model": "resnet20", "width": 16, "epochs": 6, "train_size": 5000}
    labels |= {"train_size": 1000, "epochs": 400, "target_loss": 0.02}
    return Settings(base, 5, labels, 5, trials, {}, 500, False)


FREEZE_EPOCH = 2
LABEL_FRACTIONS = 13  # the random-label runs are analyzed at this many matched fractions of training


def as_strings(params: dict) -> dict[str, str]:
    """Parameters as MLflow passes them: every value a string."""
    return {k: str(v) for k, v in params.items()}


def train_config(params: dict) -> TrainConfig:
    """The resolved training config of a run's parameters (TrainConfig's defaults for the rest)."""
    return from_strings(TrainConfig, as_strings(params))


def analyze_config(params: dict, run_id: str = "report") -> AnalyzeConfig:
    """The resolved analysis config of an analysis's parameters (AnalyzeConfig's defaults for the rest)."""
    return from_strings(AnalyzeConfig, as_strings({"run_id": run_id, **params}))


def freeze_cut(base: dict) -> int:
    """The cut after the base model's first stage (its second stage boundary, `BlockNet.stage_cuts[1]`): the
    freezing control freezes the blocks before it. Read from the model itself, so that it follows depth."""
    cfg = train_config(base)
    # the stage boundaries depend on the architecture only, not on the input: any image shape builds it
    spec = ModelSpec(cfg.model, cfg.depth or default_depth(cfg.model), cfg.width, 1, 8, 10)
    return build_model(spec).stage_cuts[1]


def training_runs(s: Settings) -> dict[str, dict]:
    """`<arm>/s<seed>` -> training parameters: the base runs, the same runs with the shallow part frozen after
    epoch FREEZE_EPOCH, and the random-label MLP with clean (0%) and random (100%) labels."""
    cut = freeze_cut(s.base)
    runs: dict[str, dict] = {}
    for seed in range(s.seeds):
        runs[f"base/s{seed}"] = {**s.base, "seed": seed}
        runs[f"frozen/s{seed}"] = {**s.base, "seed": seed, "freeze_cut": cut, "freeze_epoch": FREEZE_EPOCH}
    for seed in range(s.label_seeds):
        runs[f"clean/s{seed}"] = {**s.labels, "seed": seed, "label_noise": 0.0}
        runs[f"random/s{seed}"] = {**s.labels, "seed": seed, "label_noise": 1.0}
    return runs


def analyses(s: Settings, runs: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(result name, training run key, analyze parameters), in order. The BatchNorm arms analyze the same
    run on the same samples and split, so that only bn_mode differs; each base run's full analysis comes
    last, so that the run keeps it (a later analysis replaces an earlier one). The cross-seed reference of
    base seed s is base seed s + 1."""
    light = {**s.analysis, "anisotropy": "false", "measures": "false"}
    bn = {**light, "matrix": "final", "splits": "test", "max_samples": min(s.samples, 300)}
    out = []
    for seed in range(s.seeds):
        key = f"base/s{seed}"
        out.append((f"splice/s{seed}", key, {**bn, "bn_mode": "splice"}))
        out.append((f"recalibrate/s{seed}", key, {**bn, "bn_mode": "recalibrate"}))
        reference = runs.get(f"base/s{(seed + 1) % s.seeds}", "none")
        out.append((key, key, {**base_analysis(s), "reference_run_id": reference}))
        out.append((f"frozen/s{seed}", f"frozen/s{seed}", {**light, "matrix": "final", "max_samples": s.samples}))
    labels = {**light, "matrix": "final", "splits": "train,test", "phases": "true"}
    labels["checkpoints"] = f"fractions:{LABEL_FRACTIONS}"
    for seed in range(s.label_seeds):
        for arm in ("clean", "random"):
            out.append((f"{arm}/s{seed}", f"{arm}/s{seed}", {**labels, "max_samples": s.samples}))
    return out


def base_analysis(s: Settings) -> dict:
    """The parameters of each base run's full analysis (sections 1, 3 and 5; the cross-seed reference aside)."""
    return {**s.analysis, "max_samples": s.samples, "measures": "false", "phases": "true"}


def sweep_parameters(s: Settings, study_name: str, n_trials: int) -> dict:
    """The correlation sweep: the sweep's defaults (QMC, digits MLP to cross-entropy 0.01, two seeds per
    configuration) with a light per-trial analysis (no anisotropy: it is not a candidate predictor here)."""
    return {
        "n_trials": n_trials,
        "study_name": study_name,
        "max_samples": min(s.samples, 500),
        "anisotropy": "false",
        "bootstrap": 1000,
        **s.sweep_extra,
    }


def sweep_config(s: Settings) -> SweepConfig:
    """The resolved config of the report's sweep (SweepConfig's defaults for what `sweep_parameters` leaves)."""
    return from_strings(SweepConfig, as_strings(sweep_parameters(s, "tc-report", max(s.n_trials, 1))))


def describe_machine(device: str = "auto") -> str:
    """The machine the experiments ran on, in words: the CPU cores this process may use, and the device that
    `device` resolves to (`tc.core.device.resolve_device`), with the GPU's name when it is one."""
    import torch

    from tc.core.device import resolve_device

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    dev = resolve_device(device)
    where = f"GPU {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else "no GPU"
    return f"{cores} CPU cores, {where}"


BASE_FIGURES = {
    "heat": "consistency_heatmaps.png",
    "lag": "lag_curves.png",
    "kde": "per_sample_kde.png",
    "drift": "drift_vs_consistency.png",
    "spec": "anisotropy_spectra.png",
    "pert": "perturbation.png",
}
SWEEP_FIGURES = {"sweep_scatter": "sweep_scatter.png", "sweep_bars": "sweep_bars.png"}

PHASES = ("early", "middle", "late")
MEMORISED = 0.99  # random labels: every seed's final training accuracy on its labels must reach this
NOT_TESTED = "not tested (a run did not memorise its labels)"

# The claims, each read off a seed-level paired interval (`tc.stats.replicates`). Arms: base, frozen, splice,
# recalibrate (the BatchNorm modes on the same base runs and samples), clean and random (labels).
CONSISTENCY = (
    Claim(
        "tc_excess_test",
        "base",
        text="test: the final deep part agrees on earlier features beyond whole-network convergence",
    ),
    Claim("tc_excess_corrupt", "base", text="corrupted test data: the same"),
    Claim("tc_excess_train", "base", text="training data: the same"),
    Claim("tc_test", "base", "base", metric_b="tc_test_crossseed", text="above another seed's deep part"),
)
LABELS = (
    Claim(
        "tc_kappa_test", "clean", "random", text="headline (pre-specified): consistency collapses under random labels"
    ),
    Claim("tc_test", "clean", "random", text="raw agreement, same window"),
    Claim("tc_full_test", "clean", "random", text="whole-network convergence baseline"),
    Claim("tc_kappa_train", "clean", "random", text="on the training samples (labels used)"),
    *(Claim(f"tc_kappa_test_{p}", "clean", "random", text=f"{p} third of training") for p in PHASES),
)
CONTROLS = (
    Claim("tc_test", "base", "base", metric_b="tc_test_random_shallow", text="the initial shallow part fails"),
    Claim(
        "test_acc",
        "frozen",
        "base",
        expected=-1,
        margin=0.01,
        text=f"freezing the shallow part after epoch {FREEZE_EPOCH} hurts test accuracy",
    ),
    Claim("tc_test", "frozen", "base", expected=0, margin=0.01, text="freezing changes consistency"),
    Claim(
        "tc_test",
        "recalibrate",
        "splice",
        expected=0,
        margin=0.01,
        text="BatchNorm recalibrated vs spliced (same runs, samples)",
    ),
)
ANISOTROPY = (
    Claim(
        "aniso_perturb_top_acc",
        "base",
        "base",
        metric_b="aniso_perturb_random_acc",
        text="noise along the top-k drift directions hurts less than along k random ones",
    ),
    Claim(
        "aniso_perturb_top_acc",
        "base",
        "base",
        expected=0,
        metric_b="aniso_perturb_bottom_acc",
        text="top-k against bottom-k drift directions",
    ),
)
SECTION_CLAIMS = {"consistency": CONSISTENCY, "labels": LABELS, "controls": CONTROLS, "anisotropy": ANISOTROPY}
INTERVAL_VERDICTS = (REPRODUCES, REFUTED, INCONCLUSIVE, DIFFERS, NO_DIFFERENCE)


def seed_values(metrics: dict[str, dict[str, float]], arm: str, metric: str) -> dict[int, float]:
    """{seed: metric} over the results named `<arm>/s<seed>` (NaN where the metric was not logged)."""
    out = {}
    for name, m in metrics.items():
        a, _, seed = name.partition("/s")
        if a == arm and seed.isdigit():
            out[int(seed)] = float(m.get(metric, math.nan))
    return out


def effect_of(claim: Claim, metrics: dict[str, dict[str, float]]) -> Effect:
    """The claim's seed-level `Effect` from the experiments' metrics."""
    a = seed_values(metrics, claim.a, claim.metric)
    b = seed_values(metrics, claim.b, claim.metric_b or claim.metric) if claim.b else None
    return paired_effect(claim, a, b)


def memorised(metrics: dict[str, dict[str, float]], arm: str) -> float:
    """The lowest final training accuracy on its own labels (eval mode) over the arm's seeds."""
    values = seed_values(metrics, arm, "train_eval_acc").values()
    return min(values, default=math.nan)


def section_effects(metrics: dict[str, dict[str, float]]) -> dict[str, list[Effect]]:
    """Every claim's `Effect`, by section (SECTION_CLAIMS), with its final verdict: the random-label claims
    are NOT_TESTED unless both arms memorised their labels (>= MEMORISED at every seed), because a control
    that never fitted its labels says nothing about them."""
    out = {name: [effect_of(c, metrics) for c in claims] for name, claims in SECTION_CLAIMS.items()}
    if not all(memorised(metrics, arm) >= MEMORISED for arm in ("clean", "random")):
        out["labels"] = [replace(e, verdict=NOT_TESTED) for e in out["labels"]]
    return out


def effects_from_table(table: pd.DataFrame) -> dict[str, list[Effect]]:
    """`section_effects` rebuilt from a stored effects.csv (`all_effects`): each row is matched to its claim
    by section and label, and its verdict is read again off its interval with the claim's current sign and
    margin (`tc.stats.replicates.verdict`); a stored verdict that is not an interval's (NOT_TESTED: a precondition
    failed) is kept. Every claim of SECTION_CLAIMS must have a row (ValueError naming the missing ones)."""
    out, missing = {}, []
    for section, claims in SECTION_CLAIMS.items():
        rows = table[table["section"] == section]
        effects = []
        for c in claims:
            match = rows[rows["label"] == c.label()]
            if len(match) > 1:
                match = match[match["claim"] == c.text]
            if len(match) != 1:
                missing.append(f"{section}: {c.label()}")
                continue
            r = match.iloc[0]
            low, high = float(r["low"]), float(r["high"])
            stored = str(r["verdict"])
            v = verdict(low, high, c.expected, c.margin) if stored in INTERVAL_VERDICTS else stored
            effects.append(
                Effect(c, float(r["mean_a"]), float(r["mean_b"]), float(r["diff"]), low, high, int(r["n_seeds"]), v)
            )
        out[section] = effects
    if missing:
        raise ValueError(f"effects table has no row for claim(s) {missing}; re-run the report")
    return out


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


def meets_the_bar(tau_tc: float, tau_baseline: float, cost_epochs: float | None) -> bool:
    """The bar for "consistency predicts generalization": |τ| with test accuracy ≥ `MIN_TAU`, above the best
    baseline's |τ|, at a cost of at most `MAX_COST_EPOCHS` training epochs per trial (unknown cost: 0)."""
    return tau_tc >= MIN_TAU and tau_tc > tau_baseline and (cost_epochs or 0) <= MAX_COST_EPOCHS


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_p(p) -> str:
    """A p-value with 3 decimals; below 0.001 as "< 0.001" (not "0.000": a p-value is never 0)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


@dataclass(frozen=True)
class Results:
    """What the report's text is made from (measured by `entrypoints/report.py`, or read back by
    `from_tables`)."""

    settings: Settings
    metrics: dict[str, dict[str, float]]  # result name (`analyses`: `<arm>/s<seed>`) -> the run's metrics then
    figures: dict[str, str]  # figure key -> path relative to the report (sweep figures only when they exist)
    trials: pd.DataFrame  # the sweep's trials.csv (converged trials and those that hit the cap)
    corr: pd.DataFrame  # the sweep's correlations.csv (converged trials only; empty below MIN_TRIALS)
    costs: dict[str, float] = field(default_factory=dict)  # `epoch_costs` of the sweep's trials
    timing: dict[str, float] = field(default_factory=dict)  # seconds per step of this report
    seconds: float = 0.0  # the whole report
    machine: str = ""  # `describe_machine()` where the experiments ran
    effects: dict[str, list[Effect]] | None = None  # None: `section_effects(metrics)`
    sweep_error: str = ""  # why the sweep gave no tables, when it failed (`type: message`)
    space: dict = field(default_factory=dict)  # the sweep's search space, fitted to its data set
    sweep_cfg: SweepConfig | None = None  # None: `sweep_config(settings)`
    notes: tuple[str, ...] = ()  # remarks a re-render states (stored in settings.json with the tables)


def sweep_config_of(r: Results) -> SweepConfig:
    """The sweep's resolved config: the stored one, else that of the settings."""
    return r.sweep_cfg if r.sweep_cfg is not None else sweep_config(r.settings)


def effects_of(r: Results) -> dict[str, list[Effect]]:
    """The results' effects by section: the stored ones, else those of its metrics."""
    return r.effects if r.effects is not None else section_effects(r.metrics)


def _mean_ci(values: dict[int, float], digits: int = 3) -> str:
    mean, lo, hi = t_interval(list(values.values()))
    return f"{fmt(mean, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def effect_rows(effects: list[Effect], verdicts: dict[int, str] | None = None) -> list[str]:
    """A table of claims: arms' means, the paired difference with its 95% CI over seeds, what the claim
    predicts (`predicted`: side and margin), and the verdict (`verdicts` overrides the verdict of the row at
    that index)."""
    lines = [
        "| claim | difference | a | b | difference [95% CI] | predicted | seeds | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, e in enumerate(effects):
        v = (verdicts or {}).get(i, e.verdict)
        lines.append(
            f"| {e.claim.text} | `{e.claim.label()}` | {fmt(e.mean_a)} | {fmt(e.mean_b)} | "
            f"{fmt(e.diff)} [{fmt(e.low)}, {fmt(e.high)}] | {predicted(e.claim)} | {e.n} | **{v}** |"
        )
    return lines


def predicted(c: Claim) -> str:
    """What the claim predicts of the difference, with its margin: "> 0", "< −0.01", "beyond ±0.01", "≠ 0"."""
    m = f"{c.margin:g}"
    if c.expected == 0:
        return f"beyond ±{m}" if c.margin else "≠ 0"
    return f"> {m}" if c.expected == 1 else f"< −{m}" if c.margin else "< 0"


def _margins(claims: tuple[Claim, ...]) -> str:
    """The margins `claims` use, in words."""
    values = sorted({c.margin for c in claims if c.margin})
    return " or ".join(f"{m:g}" for m in values) or "none"


def _how_to_read(s: Settings) -> list[str]:
    return [
        "**How to read it.** Every claim is tested on independent training seeds: the same configuration is "
        "trained at each seed in each arm, arms are paired by seed (same initialisation and data order), and the "
        "claim's difference gets a Student-t 95% confidence interval over the seeds (`tc.stats.replicates`; sampling "
        "unit: the seed). The verdict follows from the interval alone, against the claim's *margin*, the smallest "
        "difference that would matter (the `predicted` column: the side and the margin; 0 where any difference "
        "counts): **reproduces** when "
        "the whole interval lies beyond the margin on the side the claim predicts; **does not reproduce** when it "
        "lies entirely short of it (inside ±margin, or on the other side); **inconclusive** when it contains the "
        "margin. A claim without a direction reads **differs** (entirely beyond ±margin), **no difference larger "
        "than the margin** (entirely inside ±margin) or **inconclusive**. The full table is in `tc.stats.replicates`. "
        f"With {s.seeds} seeds the half-width is "
        f"{stats.t.ppf(0.975, max(s.seeds - 1, 1)):.1f} × sd(seed differences) / √{s.seeds}: small effects come "
        "out inconclusive, as they should.",
    ]


def _runs_line(s: Settings) -> str:
    cfg, a = train_config(s.base), analyze_config(base_analysis(s))
    cuts = {"stages": "stage"}.get(a.cuts, a.cuts)  # `cuts=stages`: the model's stage boundaries
    depth = cfg.depth or default_depth(cfg.model)
    every = "a checkpoint per epoch" if not cfg.checkpoint_every else f"a checkpoint every {cfg.checkpoint_every} steps"
    return (
        f"Runs: {cfg.model} (depth {depth}, width {cfg.width}) on {cfg.train_size or 'all'} {cfg.dataset} training "
        f"images, {cfg.epochs} epochs, {cfg.optimizer.upper()} lr {cfg.lr:g} {cfg.schedule}, batch {cfg.batch_size}, "
        f"{every}, at {s.seeds} seeds (sections 1, 3-5); analysis on {a.max_samples} samples per split, {cuts} "
        f"cuts, corruptions at severity {a.severities}. Random labels: section 2. The sweep: section 6."
    )


def _model_name(model: str) -> str:
    """A model as the text names it: the MLP in capitals, the zoo's other names as they are."""
    return model.upper() if model == "mlp" else model


def _generated_line(r: Results) -> str:
    machine = f" ({r.machine})" if r.machine else ""
    quick = " -P quick=true" if r.settings.quick else ""
    return (
        f"Generated by `mlflow run . --env-manager local --experiment-name tc -e report{quick}` "
        f"in {r.seconds / 60:.0f} min on this machine{machine}. Every number below was measured in "
        "that run by tc's own train, analyze and sweep code (nested MLflow runs of the report run; their ids are "
        "in its `report_runs.json`)."
    )


def _header(r: Results) -> list[str]:
    s = r.settings
    return [
        "# Temporal consistency: what reproduces, and does it predict generalization?",
        "",
        _generated_line(r),
        "",
        *_how_to_read(s),
        "",
        f"![every claim: difference and 95% CI over seeds, coloured by verdict]({r.figures['forest']})",
        "",
        _runs_line(s),
        "",
    ]


def _consistency(r: Results) -> list[str]:
    m, a = r.metrics, analyze_config(base_analysis(r.settings))
    rows = [
        f"| {sp} | {_mean_ci(seed_values(m, 'base', f'acc_{sp}'))} | {_mean_ci(seed_values(m, 'base', f'tc_{sp}'))} | "
        f"{_mean_ci(seed_values(m, 'base', f'tc_kappa_{sp}'))} | {_mean_ci(seed_values(m, 'base', f'tc_full_{sp}'))} |"
        for sp in ("train", "test", "corrupt")
    ]
    return [
        "## 1. Temporal consistency (train, test, corrupted)",
        "",
        f"Mean over {r.settings.seeds} seeds [95% CI]. tc: agreement of the final deep part on the shallow features "
        f"of the window's checkpoints (the last {a.window:.0%} of training) with its own final predictions; "
        "tc_kappa: the same, chance-corrected; tc_full: the whole network at those checkpoints against the final "
        "one (the baseline tc must beat); tc_excess = (tc − tc_full)/(1 − tc_full).",
        "",
        "| split | final accuracy | tc | tc_kappa | tc_full |",
        "|---|---|---|---|---|",
        *rows,
        "",
        *effect_rows(effects_of(r)["consistency"]),
        "",
        f"![relative consistency, seed 0]({r.figures['heat']})",
        "",
        "Rows: shallow checkpoint t1; columns: deep checkpoint t2 (relative consistency "
        "acc[t1,t2]/acc[t2,t2]), seed 0.",
        "",
    ]


def _headline_line(head: Effect) -> str:
    return (
        f"**Verdict (headline, `{head.claim.label()}`): {head.verdict}** — difference "
        f"{fmt(head.diff)} [{fmt(head.low)}, {fmt(head.high)}] over {head.n} seeds."
    )


def _random_labels(r: Results) -> list[str]:
    s, m = r.settings, r.metrics
    lab = train_config(s.labels)
    fit = {arm: memorised(m, arm) for arm in ("clean", "random")}
    effects = effects_of(r)["labels"]
    epochs = {arm: _mean_ci(seed_values(m, arm, "epochs_trained"), 0) for arm in ("clean", "random")}
    acc = {arm: _mean_ci(seed_values(m, arm, "test_acc")) for arm in ("clean", "random")}
    depth = lab.depth or default_depth(lab.model)
    return [
        "## 2. Random labels: the paper's central control",
        "",
        f"An {_model_name(lab.model)} ({depth} hidden layers, width {lab.width}) on {lab.train_size} {lab.dataset}, "
        f"{'with' if lab.augment else 'no'} augmentation, weight decay {lab.weight_decay:g}, {lab.schedule} lr "
        f"{lab.lr:g}, batch {lab.batch_size}, trained until its training cross-entropy on the labels it sees is "
        f"<= {lab.target_loss:g} (cap {lab.epochs} epochs), with 0% (clean) and 100% (random) labels at "
        f"{s.label_seeds} seeds per arm, paired by seed. A checkpoint every {lab.checkpoint_every} steps; the "
        f"analysis uses the {LABEL_FRACTIONS} checkpoints nearest the fractions 0, 1/{LABEL_FRACTIONS - 1}, ..., 1 "
        f"of each run's training (`checkpoints=fractions:{LABEL_FRACTIONS}`), so the runs, which stop at different "
        "steps, are compared at matched points; `phases=true` adds the early, middle and late thirds.",
        "",
        f"Memorisation (lowest final training accuracy on the labels used, over seeds): clean {fmt(fit['clean'])}, "
        f"random {fmt(fit['random'])} (required: >= {MEMORISED}). Epochs to the criterion: clean {epochs['clean']}, "
        f"random {epochs['random']}. Test accuracy: clean {acc['clean']}, random {acc['random']}.",
        "",
        *effect_rows(effects),
        "",
        _headline_line(effects[0]),
        "",
    ]


def _drift(r: Results) -> list[str]:
    m = r.metrics
    return [
        "## 3. Feature drift versus consistency",
        "",
        f"Mean relative drift ||z_T - z_t|| / ||z_T|| over the window (test): "
        f"{_mean_ci(seed_values(m, 'base', 'drift_test'))} over seeds; the final deep part still agrees with itself "
        f"on those features for {_mean_ci(seed_values(m, 'base', 'tc_test'))} of test images.",
        "",
        f"![drift vs consistency, seed 0]({r.figures['drift']})",
        "",
    ]


def _controls(r: Results) -> list[str]:
    cut = freeze_cut(r.settings.base)
    return [
        "## 4. Controls: initial shallow part, freezing, BatchNorm",
        "",
        f"Freezing: the same runs (same seeds, samples and splits) with the shallow part (the blocks before cut "
        f"{cut}, the end of the first stage) frozen after epoch {FREEZE_EPOCH}; test accuracy is on the whole test "
        "set. BatchNorm: each base run analyzed twice on the same test samples, with each part's own BatchNorm "
        "statistics (splice) or statistics re-estimated on training batches (recalibrate). Margins: differences "
        f"under {_margins(CONTROLS)} (the `predicted` column) are treated as no effect.",
        "",
        *effect_rows(effects_of(r)["controls"]),
        "",
    ]


def _pvalues(r: Results, kind: str) -> str:
    p = seed_values(r.metrics, "base", f"aniso_{kind}_min_pvalue")
    below = sum(v < ALPHA for v in p.values())
    return f"{below} of {len(p)} ({', '.join(fmt(v, 3) for _, v in sorted(p.items()))})"


def _anisotropy(r: Results) -> list[str]:
    m, a = r.metrics, analyze_config(base_analysis(r.settings))
    draws = anisotropy_metrics.perturb_options(a).draws
    return [
        "## 5. Anisotropy of SGD noise",
        "",
        f"| vectors (sampling unit) | top-{a.aniso_k} explained variance [95% CI over seeds] "
        f"| seeds with Holm p < {ALPHA:g} (p per seed) |",
        "|---|---|---|",
        f"| feature drift (disjoint sample pairs) | {_mean_ci(seed_values(m, 'base', 'aniso_drift_topk_var'))} | "
        f"{_pvalues(r, 'drift')} |",
        f"| gradient noise (minibatches) | {_mean_ci(seed_values(m, 'base', 'aniso_grad_topk_var'))} | "
        f"{_pvalues(r, 'grad')} |",
        "",
        "Each seed's p-value is the Monte-Carlo test against an isotropic Gaussian null, Holm-adjusted over the "
        f"cuts (`aniso_*_min_pvalue`). Perturbation test (ε = {PERTURB_HEADLINE_EPS:g}, k-dimensional subspaces "
        f"at equal norm, {draws} draws per seed averaged, mean over cuts):",
        "",
        *effect_rows(effects_of(r)["anisotropy"]),
        "",
        f"![spectra, seed 0]({r.figures['spec']})",
        "",
        f"![perturbation, seed 0]({r.figures['pert']})",
        "",
    ]


def _sweep(r: Results) -> list[str]:
    cfg = sweep_config_of(r)
    trials = r.trials
    conv = split_converged(trials)[0] if len(trials) else trials
    space = ", ".join(k.replace("_", " ") for k in r.space) or "the search space"
    design = (
        "Optuna's scrambled-Sobol QMC sampler (a space-filling design, not an optimiser)"
        if cfg.sampler == "qmc"
        else f"Optuna's {cfg.sampler} sampler"
    )
    fit = (
        f"until its training cross-entropy is <= {cfg.target_loss:g} (cap {cfg.epochs} epochs): every trial at "
        "equal fit"
        if cfg.target_loss
        else f"for {cfg.epochs} epochs"
    )
    lines = [
        f"## 6. Does consistency predict generalization? {len(conv)} converged trials",
        "",
        f"`sweep` over {space} with {design}: the {cfg.dataset} {_model_name(cfg.model)} trained at {cfg.seeds} "
        f"seed{'s' if cfg.seeds > 1 else ''} per configuration {fit}. {len(trials)} trials ran; "
        f"{len(trials) - len(conv)} hit the cap and are left out. Sampling unit: the trial (one configuration, "
        "scored on its own training run). Kendall τ-b of each measure with test accuracy and with the gap (clean "
        "training accuracy − test accuracy, whole test set) with a bootstrap 95% CI over trials; Ψ where groups "
        f"exist. **One confirmatory test**, fixed before the run (docs/sweep.md): `{HEADLINE}` against test "
        f"accuracy, at α = {ALPHA:g} on its own (its p is its own p-value). Every other measure, and every "
        "measure against the gap, is exploratory: p-values Holm-adjusted over every exploratory measure of the "
        "same target. = `name` marks a measure with identical ranks here, the same ranks as `name` on these "
        "trials (so the same τ and raw p); it is a flag, and the measure still counts in its family. Cost: "
        "seconds per trial over the trial's seconds per epoch.",
        "",
    ]
    if r.sweep_error:
        lines += [f"**No verdict.** The sweep failed: {r.sweep_error}", ""]
    elif len(r.corr):
        lines += correlation_lines(r.corr, r.costs)
    else:
        lines += [
            f"**No verdict.** Only {len(conv)} converged trial{'s' if len(conv) != 1 else ''}: a rank correlation "
            f"needs at least {MIN_TRIALS}, so no correlation was computed. Rerun with more trials (`-P trials=`).",
        ]
    for key, alt in (("sweep_scatter", f"{HEADLINE} vs test accuracy"), ("sweep_bars", "|τ| per measure")):
        if key in r.figures:
            lines += ["", f"![{alt}]({r.figures[key]})"]
    return [*lines, ""]


def _compute(r: Results) -> list[str]:
    return [
        "## Compute used and how to scale up",
        "",
        f"The whole report took {r.seconds / 60:.0f} min. Time per step (seconds): "
        + ", ".join(f"{k} {v:.0f}" for k, v in r.timing.items())
        + ".",
        "",
        "Paper scale (not run here): CIFAR-10, ResNet-20 width 16, 100+ epochs with augmentation, on a GPU "
        "(`-P dataset=cifar10 -P augment=true -P epochs=100 -P device=cuda`, `download=true` once). "
        + paper_scale(r.settings, sweep_config_of(r).seeds),
        "",
        FULL_TABLES,
        "",
    ]


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


SETTINGS_FILE = "settings.json"  # in report/: the settings, the sweep's config and space, the sweep's error
STORED_TABLES = ("trials.csv", "correlations.csv", "effects.csv", "costs.csv", SETTINGS_FILE)
FULL_TABLES = "Full tables: " + ", ".join(f"`report/{name}`" for name in STORED_TABLES) + "."

SECTIONS = (_header, _consistency, _random_labels, _drift, _controls, _anisotropy, _sweep, _compute)


def all_effects(metrics: dict[str, dict[str, float]], effects: dict[str, list[Effect]] | None = None) -> pd.DataFrame:
    """Every claim of sections 1, 2, 4 and 5 as one table (report/effects.csv, the forest figure), with each
    claim's sign and margin and its final verdict (`section_effects`, or the `effects` given)."""
    effects = effects if effects is not None else section_effects(metrics)
    rows = []
    for section, items in effects.items():
        for e in items:
            c = e.claim
            rows.append(
                {
                    "section": section,
                    "claim": c.text,
                    "label": c.label(),
                    "mean_a": e.mean_a,
                    "mean_b": e.mean_b,
                    "diff": e.diff,
                    "low": e.low,
                    "high": e.high,
                    "n_seeds": e.n,
                    "expected": c.expected,
                    "margin": c.margin,
                    "verdict": e.verdict,
                }
            )
    return pd.DataFrame(rows)


def render(r: Results) -> str:
    """docs/REPORT.md: the sections in order."""
    return "\n".join(line for section in SECTIONS for line in section(r))


def _correlation_row(name: str, a, g, cost: float | None) -> str:
    gap = f"{fmt(g.kendall, 2)} [{fmt(g.kendall_ci_low, 2)}, {fmt(g.kendall_ci_high, 2)}]" if g is not None else "n/a"
    role = " (confirmatory)" if _is_confirmatory(name, a) else ""
    twin = a.get("same_ranks_as", "")
    twin = f" = `{twin}`" if isinstance(twin, str) and twin else ""
    return (
        f"| `{name}`{role}{twin} | {fmt(a.kendall, 2)} [{fmt(a.kendall_ci_low, 2)}, {fmt(a.kendall_ci_high, 2)}] | "
        f"{fmt_p(a.get('kendall_p_holm', math.nan))} | {fmt(a.spearman, 2)} | "
        f"{fmt(a.granulated_kendall, 2)} ({fmt(a.worst_psi, 2)}) | {fmt(a.partial_kendall, 2)} | {gap} | "
        f"{fmt(cost, 2) if cost is not None else 'n/a'} |"
    )


def _is_confirmatory(name: str, row) -> bool:
    """The row's role; a table stored before the roles were renamed says `headline` for the confirmatory one;
    a table without roles: the pre-specified HEADLINE."""
    role = row.get("role", None)
    return role in ("confirmatory", "headline") if isinstance(role, str) else name == HEADLINE


def correlation_lines(corr: pd.DataFrame, costs: dict[str, float]) -> list[str]:
    """The sweep's correlation table (sorted by |τ| with test accuracy) and the verdict paragraph."""
    acc = corr[corr["target"] == PRIMARY_TARGET].set_index("measure")
    gap = corr[corr["target"] == "gen_gap"].set_index("measure")
    # by |τ|; among equal |τ|, the confirmatory measure first, then a measure before its rank twins
    twin = acc["same_ranks_as"].fillna("").astype(str) != "" if "same_ranks_as" in acc else False
    first = [not _is_confirmatory(n, acc.loc[n]) for n in acc.index]
    keys = acc.assign(a=-acc["kendall"].abs(), c=first, t=twin)
    order = keys.sort_values(["a", "c", "t"], kind="stable").index
    lines = [
        "| measure | τ with test acc [95% CI] | p (confirmatory: alone; others: Holm) | ρ | Ψ (worst ψ_h) "
        "| partial τ | τ with gap [95% CI] | cost (epochs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        g = gap.loc[name] if name in gap.index else None
        lines.append(_correlation_row(name, acc.loc[name], g, cost_of(name, costs)))
    return lines + sweep_verdict(acc, costs)


def abs_interval(low: float, high: float) -> tuple[float, float]:
    """The interval of |τ| given the interval [low, high] of τ (from 0 when it spans 0)."""
    if low <= 0 <= high:
        return 0.0, max(-low, high)
    return min(abs(low), abs(high)), max(abs(low), abs(high))


def _predicts(h) -> bool:
    """The confirmatory verdict of the headline's row: its τ interval excludes 0 and its p < ALPHA."""
    return bool((h.kendall_ci_low > 0 or h.kendall_ci_high < 0) and h.get("kendall_p_holm", math.nan) < ALPHA)


PREDICTS, NO_EVIDENCE, NOT_MEASURED = "predicts", "no evidence", "no verdict"


def confirmatory_verdict(corr: pd.DataFrame) -> str:
    """The sweep's verdict in one word (PREDICTS, NO_EVIDENCE, or NOT_MEASURED without the headline's row)."""
    if corr.empty:
        return NOT_MEASURED
    acc = corr[corr["target"] == PRIMARY_TARGET].set_index("measure")
    return NOT_MEASURED if HEADLINE not in acc.index else PREDICTS if _predicts(acc.loc[HEADLINE]) else NO_EVIDENCE


def sweep_verdict(acc: pd.DataFrame, costs: dict[str, float]) -> list[str]:
    """The one-paragraph answer, from intervals and the confirmatory test only: does the pre-specified
    headline predict test accuracy (its τ interval excludes 0 and its own p < ALPHA:
    `tc.stats.multiplicity.multiplicity`), and does it beat the best baseline gm_* (its |τ| interval lies above
    the baseline's) at no greater cost?"""
    if HEADLINE not in acc.index:
        return ["", f"The headline `{HEADLINE}` was not measured on these trials: no verdict."]
    h = acc.loc[HEADLINE]
    h_lo, h_hi = abs_interval(h.kendall_ci_low, h.kendall_ci_high)
    p = h.get("kendall_p_holm", math.nan)
    predicts = _predicts(h)
    gm = [n for n in acc.index if n.startswith("gm_")]
    lines = [
        "",
        f"**Verdict.** The confirmatory test: the headline `{HEADLINE}` has τ = {fmt(h.kendall, 2)} "
        f"[{fmt(h.kendall_ci_low, 2)}, {fmt(h.kendall_ci_high, 2)}] with test accuracy (p {fmt_p(p)}, tested alone "
        f"at α = {ALPHA:g}): "
        + (
            "it **predicts** test accuracy on these trials"
            if predicts
            else "there is **no evidence** that it predicts test accuracy on these trials"
        )
        + f", at a cost of {fmt(cost_of(HEADLINE, costs), 2)} training epochs per trial.",
    ]
    if gm:
        best = max(gm, key=lambda n: abs(acc.loc[n, "kendall"]))
        b = acc.loc[best]
        b_lo, b_hi = abs_interval(b.kendall_ci_low, b.kendall_ci_high)
        if h_lo > b_hi:
            cmp = "**better than** the best baseline"
        elif h_hi < b_lo:
            cmp = "**worse than** the best baseline"
        else:
            cmp = "**not distinguishable from** the best baseline at this number of trials"
        lines[-1] += (
            f" Its |τ| interval [{h_lo:.2f}, {h_hi:.2f}] is {cmp}, `{best}` (|τ| interval [{b_lo:.2f}, {b_hi:.2f}], "
            f"cost {fmt(cost_of(best, costs), 2)} epochs; exploratory). Non-overlapping intervals are the "
            "criterion: conservative."
        )
        met = meets_the_bar(abs(h.kendall), abs(b.kendall), cost_of(HEADLINE, costs))
        lines += [
            "",
            f"SPEC's bar (|τ| ≥ {MIN_TAU}, above every baseline, at most {MAX_COST_EPOCHS:g} epochs), on point "
            f"estimates: {'met' if met else 'not met'}.",
        ]
    return lines


def sweep_tables(art: Path, fig_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, correlations) from a sweep run's downloaded artifacts `art`, whose figures move into
    `fig_dir` (default `art/..`, the report's figure directory) as sweep_scatter.png and sweep_bars.png; `art`
    is removed. A sweep with fewer than MIN_TRIALS converged trials has no correlations and no figures: the
    tables are then (trials, empty) and nothing moves; a sweep without trials.csv gives two empty tables."""
    fig_dir = art.parent if fig_dir is None else fig_dir
    trials, corr = _read_table(art / "trials.csv"), _read_table(art / "correlations.csv")
    for src, dst in (("scatter.png", "sweep_scatter.png"), ("correlation_bars.png", "sweep_bars.png")):
        if (art / src).exists():
            shutil.move(art / src, fig_dir / dst)
    shutil.rmtree(art, ignore_errors=True)
    return trials, corr


def sweep_figures(fig_dir: Path) -> dict[str, str]:
    """{key: path relative to the report} of the sweep figures present in `fig_dir`."""
    return {k: f"report/{name}" for k, name in SWEEP_FIGURES.items() if (fig_dir / name).is_file()}


def write(r: Results, out: Path) -> Path:
    """REPORT.md into `out`, and into `out/report/` the forest figure and the stored tables (STORED_TABLES):
    effects.csv, trials.csv, correlations.csv, costs.csv and settings.json (`settings_record`): the path of
    REPORT.md."""
    figs = out / "report"
    figs.mkdir(parents=True, exist_ok=True)
    effects = all_effects(r.metrics, effects_of(r))
    plots.save_figures({"effects.png": plots.effects_forest(effects)}, figs)
    (out / "REPORT.md").write_text(render(replace(r, figures={**r.figures, "forest": "report/effects.png"})))
    for name, table in (("correlations", r.corr), ("trials", r.trials), ("effects", effects)):
        table.to_csv(figs / f"{name}.csv", index=False)
    costs_table(r.costs).to_csv(figs / "costs.csv", index=False)
    write_settings(figs, r)
    return out / "REPORT.md"


def settings_record(r: Results) -> dict:
    """What settings.json holds: the report's `Settings`, the sweep's resolved config and fitted space, the
    sweep's error (empty when it ran), the run's duration and machine, and `notes` for a re-render to state."""
    return {
        "settings": asdict(r.settings),
        "sweep_config": asdict(sweep_config_of(r)),
        "space": r.space,
        "sweep_error": r.sweep_error,
        "seconds": r.seconds,
        "machine": r.machine,
        "notes": list(r.notes),
    }


def write_settings(figs: Path, r: Results) -> Path:
    """`settings_record(r)` as `figs`/settings.json."""
    path = figs / SETTINGS_FILE
    path.write_text(json.dumps(settings_record(r), indent=1) + "\n")
    return path


def costs_table(costs: dict[str, float]) -> pd.DataFrame:
    """costs.csv: one row per timed step, its mean cost in training epochs per trial (`epoch_costs`)."""
    return pd.DataFrame({"step": list(costs), "epochs": list(costs.values())})


# ---- re-rendering from the stored tables ----------------------------------------------------------------


def from_tables(figs: Path) -> Results:
    """The parts of `Results` that the stored tables in `figs` hold: the settings, the sweep's config and space,
    its error, the run's duration and machine and the notes (settings.json: `settings_record`; ValueError
    without it), the effects (effects.csv, verdicts read again off their intervals: `effects_from_table`), the
    sweep's trials (trials.csv), its correlations recomputed from those trials by the sweep's own
    `tc.stats.rankcorr.correlation_table` (the stored space, bootstrap draws and seed: the same numbers the sweep
    computed, with the current multiplicity rules), and the costs (costs.csv; empty when absent). The per-seed
    metrics are not stored: `metrics` is empty, so only `rerender` can use these results."""
    path = figs / SETTINGS_FILE
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: a re-render needs the settings the report was produced with, which "
            "`tc.report.write` stores there; re-run the report, or write the file once with "
            "`tc.report.write_settings` from the settings it ran with"
        )
    stored = json.loads(path.read_text())
    s = Settings(**stored["settings"])
    cfg = SweepConfig(**stored["sweep_config"])
    space = stored["space"]
    effects = effects_from_table(pd.read_csv(figs / "effects.csv"))
    trials = _read_table(figs / "trials.csv")
    corr = pd.DataFrame()
    conv = split_converged(trials)[0] if len(trials) else trials
    if len(conv) >= MIN_TRIALS:
        options = CorrelationOptions(draws=cfg.bootstrap, seed=cfg.seed)
        corr = correlation_table(conv, measure_columns(list(conv.columns)), space, options)
    table = _read_table(figs / "costs.csv")
    costs = dict(zip(table["step"], table["epochs"].astype(float), strict=True)) if len(table) else {}
    figures = {"forest": "report/effects.png", **sweep_figures(figs)}
    return Results(
        s,
        {},
        figures,
        trials,
        corr,
        costs,
        seconds=float(stored["seconds"]),
        machine=stored["machine"],
        effects=effects,
        sweep_error=stored["sweep_error"],
        space=space,
        sweep_cfg=cfg,
        notes=tuple(stored["notes"]),
    )


def _read_table(path: Path) -> pd.DataFrame:
    """A stored table; empty when the file is absent or holds no columns (what `write` stores for an empty
    table, e.g. the trials of a sweep that failed)."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


RERENDER_NOTE = "**Re-rendered on"


def _blocks(text: str) -> list[list[str]]:
    """The text as blocks separated by blank lines (a block is a list of lines)."""
    blocks, current = [], []
    for line in text.split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _split_sections(text: str) -> list[tuple[str, str]]:
    """[(heading line or "" for the header, the section's text)], in order."""
    parts = re.split(r"(?m)^(?=## )", text)
    return [(p.split("\n", 1)[0] if p.startswith("## ") else "", p) for p in parts]


def verdict_changes(old: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    """The claims whose verdict differs between two effects tables, in words (old → new)."""
    key = ["section", "label"]
    both = old[[*key, "verdict"]].merge(new[[*key, "verdict"]], on=key, suffixes=("_old", "_new"))
    changed = both[both["verdict_old"] != both["verdict_new"]]
    return [f"`{r.label}` ({r.section}): {r.verdict_old} → {r.verdict_new}" for r in changed.itertuples()]


def rerender(
    text: str, r: Results, on: str, changes: list[str] | None = None, unchanged: list[str] | None = None
) -> str:
    """REPORT.md text `text` with what follows from the stored tables re-rendered from `r` (`from_tables`):
    the "Generated by" line, the header's how-to-read paragraph, every claim table (sections 1, 2, 4, 5), the
    random-label headline verdict, section 4 and section 6 whole, and the list of full tables; every other line
    (per-seed tables, memorisation, anisotropy statistics, figures, compute) is kept as it was measured. A note
    after the "Generated by" line says which parts were re-rendered, on which date `on`, lists the verdicts
    that changed (`changes`, e.g. `verdict_changes`) and those checked and `unchanged`, and `r.notes`; an
    earlier note is replaced, so re-rendering twice gives one note."""
    effects = effects_of(r)
    tables = {"1.": "consistency", "2.": "labels", "4.": "controls", "5.": "anisotropy"}
    whole = {"4.": _controls, "6.": _sweep}
    out = []
    for heading, part in _split_sections(text):
        number = heading.split()[1] if heading else ""
        if number in whole:
            out.append("\n".join(whole[number](r)) + "\n")
            continue
        blocks = _blocks(part)
        new_blocks = []
        for block in blocks:
            first = block[0]
            if first.startswith(RERENDER_NOTE):
                continue
            if first.startswith("**How to read it.**"):
                block = _how_to_read(r.settings)
            elif first.startswith("Generated by") and not heading:
                block = [_generated_line(r)]
            elif first.startswith("Full tables:"):
                block = [FULL_TABLES]
            elif first.startswith("| claim | difference |") and number in tables:
                block = effect_rows(effects[tables[number]])
            elif first.startswith("**Verdict (headline") and number == "2.":
                block = [_headline_line(effects["labels"][0])]
            new_blocks.append(block)
            if not heading and first.startswith("Generated by"):
                new_blocks.append([_rerender_note(on, changes or [], unchanged or [], r.notes)])
        out.append("\n\n".join("\n".join(b) for b in new_blocks) + "\n\n")
    return "".join(out).rstrip("\n") + "\n"


def _rerender_note(on: str, changes: list[str], unchanged: list[str], notes: tuple[str, ...] = ()) -> str:
    verdicts = "; ".join([*changes, *(f"{v} (unchanged)" for v in unchanged)]) or "none"
    return (
        f"{RERENDER_NOTE} {on} from the stored tables** (`python entrypoints/report.py --rerender true`, "
        "`tc.report.rerender`): the how-to-read paragraph, every claim table, the random-label verdict, section 4, "
        "section 6 and the forest figure (report/effects.png) follow the current verdict rules (verdicts honour "
        "their margin; the sweep's pre-specified measure is tested on its own, every other one in its target's "
        "Holm family), read from report/effects.csv, report/trials.csv (correlations recomputed from it by the "
        "sweep's own code, checked equal to the stored ones), report/costs.csv and report/settings.json; "
        "report/effects.csv (verdicts) and report/correlations.csv (roles, Holm p-values, rank flags) were "
        "rewritten to match. No experiment was rerun: every measured number, and every other line of this page, "
        f"is from the run above. Verdicts: {verdicts}." + "".join(f" {n}" for n in notes)
    )


EXEMPT_COLUMNS = ("role", "kendall_p_holm", "same_ranks_as")  # what the multiplicity rules, not the data, set


def correlation_differences(stored: pd.DataFrame, recomputed: pd.DataFrame) -> list[str]:
    """Where the recomputed correlations differ from the stored ones, in words: rows (measure, target) on one
    side only, columns on one side only, and values that differ (floats beyond 1e-9 relative; NaN equals NaN),
    on every column but EXEMPT_COLUMNS. Empty: the same numbers."""
    if stored.empty or recomputed.empty:
        return [] if stored.empty and recomputed.empty else [f"stored {len(stored)} rows, recomputed {len(recomputed)}"]
    key = ["measure", "target"]
    a, b = (t.drop(columns=[c for c in EXEMPT_COLUMNS if c in t]).set_index(key) for t in (stored, recomputed))
    out = [
        f"row {k} only {side}"
        for side, x, y in (("stored", a, b), ("recomputed", b, a))
        for k in x.index.difference(y.index)
    ]
    out += [
        f"column {c} only {side}"
        for side, x, y in (("stored", a, b), ("recomputed", b, a))
        for c in x.columns.difference(y.columns)
    ]
    rows, cols = a.index.intersection(b.index), a.columns.intersection(b.columns)
    for c in cols:
        x, y = a.loc[rows, c], b.loc[rows, c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xf, yf = x.to_numpy(float), y.to_numpy(float)
            same = np.isclose(xf, yf, rtol=1e-9, atol=0.0, equal_nan=True)
        else:
            same = (x.fillna("").astype(str) == y.fillna("").astype(str)).to_numpy()
        out += [f"{k} {c}: stored {x[k]!r}, recomputed {y[k]!r}" for k, ok in zip(rows, same, strict=True) if not ok]
    return out


def write_rerendered(out: Path, on: str) -> list[str]:
    """Re-render `out`/REPORT.md in place from the tables in `out`/report (`from_tables`, `rerender`), and
    rewrite effects.csv (verdicts), effects.png and correlations.csv to match. The recomputed correlations
    must equal the stored ones on every column but EXEMPT_COLUMNS (ValueError naming the differences, and
    nothing is written). Returns every verdict that changed: the claims' (`verdict_changes`) and the sweep's
    confirmatory one (`confirmatory_verdict`)."""
    figs = out / "report"
    old_effects = pd.read_csv(figs / "effects.csv")
    old_corr = _read_table(figs / "correlations.csv")
    r = from_tables(figs)
    differences = correlation_differences(old_corr, r.corr)
    if differences:
        raise ValueError(
            f"the correlations recomputed from {figs / 'trials.csv'} differ from {figs / 'correlations.csv'} "
            f"({len(differences)}: {'; '.join(differences[:5])}): the stored settings or the sweep's code do not "
            "reproduce the published numbers; nothing was re-rendered"
        )
    effects = all_effects({}, r.effects)
    changes = verdict_changes(old_effects, effects)
    old_v, new_v = confirmatory_verdict(old_corr), confirmatory_verdict(r.corr)
    sweep_label = f"the sweep's confirmatory `{HEADLINE}` with test accuracy (section 6)"
    if old_v != new_v:
        changes.append(f"{sweep_label}: {old_v} → {new_v}")
    unchanged = [f"{sweep_label}: {new_v}"] if old_v == new_v else []
    (out / "REPORT.md").write_text(rerender((out / "REPORT.md").read_text(), r, on, changes, unchanged))
    plots.save_figures({"effects.png": plots.effects_forest(effects)}, figs)
    effects.to_csv(figs / "effects.csv", index=False)
    if len(r.corr):
        r.corr.to_csv(figs / "correlations.csv", index=False)
    return changes
