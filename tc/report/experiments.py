"""The report's experiment design: its scale (`Settings`), the training runs and analyses it makes, the claims
each section tests, and the sweep it runs. Pure: parameters in, parameters and configs out; `produce` runs them.

The claims are read off seed-level paired intervals (`tc.report.verdicts`, `tc.stats.replicates`); every setting
the text states is read from here, the config dataclasses and `tc.core.device`, never typed into the text."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tc.config import AnalyzeConfig, SweepConfig, TrainConfig, from_strings
from tc.core.models import ModelSpec, build_model, default_depth
from tc.report.environments import Environment, environments
from tc.stats.rankcorr import MIN_TRIALS
from tc.stats.replicates import Claim


@dataclass(frozen=True)
class Settings:
    """The report's scale. `base`: the ResNet runs (consistency, controls, anisotropy, freezing, BatchNorm)
    at `seeds` seeds; `labels`: the random-label MLP runs at `label_seeds` seeds per arm; one sweep per
    environment of `environments` (`tc.report.environments`: each its sweep parameters on top of the report's,
    `sweep_parameters`) at `trials_for(s, env)` converged trials (`n_trials`: 0, or all alike); `samples` per split;
    `analysis`: analyze parameters of every ResNet analysis (AnalyzeConfig's defaults for the rest; the report's
    own choices per analysis, e.g. `splits`, win)."""

    base: dict
    seeds: int
    labels: dict
    label_seeds: int
    n_trials: int
    environments: tuple[Environment, ...]
    samples: int
    quick: bool
    analysis: dict = field(default_factory=dict)


def settings(quick: bool, trials: int, root: Path) -> Settings:
    """Quick (the test): ResNet-8 and a small MLP on digits, 2 seeds, at most 6 trials. Full: ResNet-20 (width
    16) on 5,000 Fashion-MNIST images at 5 seeds; the random-label MLP (width 256) on 1,000 digits at 5 seeds
    per arm; one sweep per environment (`tc.report.environments.environments`) at `trials` converged trials each
    (0: each environment's own size, `trials_for`)."""
    # random labels: no augmentation, no weight decay, a constant learning rate, trained until the training
    # cross-entropy on the labels used is <= 0.02 (accuracy >= 0.99, checked); a checkpoint every 8 steps,
    # analyzed at LABEL_FRACTIONS matched fractions of training (runs of different lengths compare at equal
    # progress)
    labels = {"dataset": "digits", "model": "mlp", "width": 256, "lr": 0.05, "schedule": "constant"}
    labels |= {"weight_decay": 0.0, "augment": "false", "batch_size": 64, "checkpoint_every": 8}
    if quick:
        base = {"dataset": "digits", "model": "resnet20", "depth": 8, "width": 8, "epochs": 4}
        base |= {"train_size": 800, "batch_size": 64, "test_every": 0}
        labels |= {"width": 64, "train_size": 300, "epochs": 150, "target_loss": 0.05}
        return Settings(base, 2, labels, 2, (min(trials, 6) if trials else 0), environments(True, root), 200, True)
    base = {"dataset": "fashion-mnist", "model": "resnet20", "width": 16, "epochs": 6, "train_size": 5000}
    # the claims read final test accuracy only: evaluating at every epoch would add a forward pass over 10,000 test
    # images to each epoch's forward and backward pass over 5,000 training images, and change no number read here
    base["test_every"] = 0
    labels |= {"train_size": 1000, "epochs": 400, "target_loss": 0.02}
    return Settings(base, 5, labels, 5, trials, environments(False, root), 500, False)


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


NOISE_RATE = 0.1  # the label-noise experiment (section 2b): the fraction of training labels replaced at random
LABEL_ARMS = {"clean": 0.0, "random": 1.0, "noisy": NOISE_RATE}  # the random-label MLP's arms: their label_noise


def training_runs(s: Settings) -> dict[str, dict]:
    """`<arm>/s<seed>` -> training parameters: the base runs, the same runs with the shallow part frozen after
    epoch FREEZE_EPOCH, and the random-label MLP with clean (0%), random (100%) and noisy (NOISE_RATE) labels
    (LABEL_ARMS), every arm at the same seeds and trained to the same criterion."""
    cut = freeze_cut(s.base)
    runs: dict[str, dict] = {}
    for seed in range(s.seeds):
        runs[f"base/s{seed}"] = {**s.base, "seed": seed}
        runs[f"frozen/s{seed}"] = {**s.base, "seed": seed, "freeze_cut": cut, "freeze_epoch": FREEZE_EPOCH}
    for seed in range(s.label_seeds):
        for arm, noise in LABEL_ARMS.items():
            runs[f"{arm}/s{seed}"] = {**s.labels, "seed": seed, "label_noise": noise}
    return runs


def analyses(s: Settings, runs: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(result name, training run key, analyze parameters), in order. The BatchNorm arms analyze the same
    run on the same samples and split, so that only bn_mode differs; each base run's full analysis comes
    last, so that the run keeps it (a later analysis replaces an earlier one). The cross-seed reference of
    base seed s is base seed s + 1. The label arms (LABEL_ARMS) are analyzed alike, at matched fractions of
    training; the clean and noisy arms with the measures too."""
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
        for arm in LABEL_ARMS:
            # the clean and noisy arms (section 2b) also get the measures: the single-run anchors gm_sum_train_loss
            # and gm_steps_to_criterion come with them (`tc.analysis.run.add_measures`)
            measures = {"measures": "true"} if arm in NOISE_ARMS else {}
            out.append((f"{arm}/s{seed}", f"{arm}/s{seed}", {**labels, "max_samples": s.samples, **measures}))
    return out


def base_analysis(s: Settings) -> dict:
    """The parameters of each base run's full analysis (sections 1, 3 and 5; the cross-seed reference aside)."""
    return {**s.analysis, "max_samples": s.samples, "measures": "false", "phases": "true"}


def sweep_parameters(s: Settings, study_name: str, n_trials: int, env: Environment | None = None) -> dict:
    """One environment's correlation sweep (`env`; default the first of `s.environments`): the sweep's defaults
    (QMC, two seeds per configuration) with every measure the report ranks (`analysis=measures`: the sweep's
    default, core, leaves out the train and corrupt splits, the cross-seed control, gm_sharpness and tc_mmd) and
    no anisotropy (it is not a candidate predictor here), and the environment's own parameters on top (its data
    set, model, space, epochs). The study name and the number of trials are the report's: an environment cannot
    set them."""
    env = env if env is not None else s.environments[0]
    own = {k: v for k, v in env.sweep.items() if k not in ("n_trials", "study_name")}
    return {
        "max_samples": min(s.samples, 500),
        "analysis": "measures",
        "anisotropy": "false",
        "bootstrap": 1000,
        **own,
        "n_trials": n_trials,
        "study_name": study_name,
    }


def trials_for(s: Settings, env: Environment | None = None) -> int:
    """The converged trials the report collects in one environment (default the first): the report's `trials`
    when given (> 0, for every environment alike), else the environment's own size (`Environment.n_trials`,
    docs/report.md "Environments and their size"); at least the 3 a rank correlation needs."""
    env = env if env is not None else s.environments[0]
    return s.n_trials if s.n_trials > 0 else max(env.n_trials or MIN_TRIALS, MIN_TRIALS)


def sweep_config(s: Settings, env: Environment | None = None) -> SweepConfig:
    """The resolved config of one environment's sweep (default the first; SweepConfig's defaults for what
    `sweep_parameters` leaves)."""
    return from_strings(SweepConfig, as_strings(sweep_parameters(s, "tc-report", trials_for(s, env), env)))


def legacy_settings(stored: dict) -> Settings:
    """`Settings` from a settings.json record: the current form (`environments`: a list of {name, title, sweep}),
    or the form stored before issue 23 (one sweep, `sweep_extra`: its parameters on top of the report's), read
    as one environment, the digits MLP of the sweep's defaults."""
    stored = dict(stored)
    if "sweep_extra" in stored:
        extra = stored.pop("sweep_extra")
        stored["environments"] = [{"name": "digits-mlp", "title": "MLP on 8x8 digits", "sweep": extra}]
    stored["environments"] = tuple(Environment(**e) for e in stored["environments"])
    return Settings(**stored)


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


# The claims, each read off a seed-level paired interval (`tc.stats.replicates`). Arms: base, frozen, splice,
# recalibrate (the BatchNorm modes on the same base runs and samples), clean, random and noisy (labels).
# Section 1's convergence-adjusted claims are on tc_gain = tc - tc_full (`tc.core.consistency.tc_gain`), whose
# interval covers as tc_full -> 1 (tests/test_gain_coverage.py); reports stored before read them as tc_excess
# (CONSISTENCY_V1, LEGACY_CLAIMS).
def _consistency(score: str) -> tuple[Claim, ...]:
    """Section 1's claims with `score` (tc_gain, or tc_excess in reports stored before it) as the
    convergence-adjusted score, and the cross-seed claim."""
    return (
        Claim(
            f"{score}_test",
            "base",
            text="test: the final deep part agrees on earlier features beyond whole-network convergence",
        ),
        Claim(f"{score}_corrupt", "base", text="corrupted test data: the same"),
        Claim(f"{score}_train", "base", text="training data: the same"),
        Claim("tc_test", "base", "base", metric_b="tc_test_crossseed", text="above another seed's deep part"),
    )


CONSISTENCY = _consistency("tc_gain")
CONSISTENCY_V1 = _consistency("tc_excess")  # section 1 of the reports stored before tc_gain: the ratio tc_excess
LABELS = (
    # the section's headline claim (shown first, pre-specified): its verdict is the section's. Its metric is spelled
    # out, not tied to the sweep's confirmatory measure: stored effects.csv tables name it
    Claim(
        "tc_kappa_test", "clean", "random", text="headline (pre-specified): consistency collapses under random labels"
    ),
    Claim("tc_test", "clean", "random", text="raw agreement, same window"),
    Claim("tc_full_test", "clean", "random", text="whole-network convergence baseline"),
    Claim("tc_kappa_train", "clean", "random", text="on the training samples (labels used)"),
    *(Claim(f"tc_kappa_test_{p}", "clean", "random", text=f"{p} third of training") for p in PHASES),
)
# Section 2b: label noise alone, stated apart from the sweep (whose space no longer varies it). Clean minus noisy at
# the same seeds: the directions are those a detector of noisy labels shows; tc_gain's is not predicted.
NOISE_ARMS = ("clean", "noisy")
NOISE = (
    Claim("test_acc", "clean", "noisy", text="noisy labels lower test accuracy (the effect a noise detector tracks)"),
    Claim("tc_kappa_test", "clean", "noisy", text="the sweep's confirmatory measure falls under label noise"),
    Claim("tc_full_test", "clean", "noisy", text="whole-network convergence baseline"),
    Claim("tc_gain_test", "clean", "noisy", expected=0, text="convergence-adjusted score (no direction predicted)"),
    Claim(
        "gm_sum_train_loss",
        "clean",
        "noisy",
        expected=-1,
        text="learning speed: the mean training loss is higher with noisy labels",
    ),
    Claim("gm_steps_to_criterion", "clean", "noisy", expected=-1, text="more steps to the training criterion"),
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
SECTION_CLAIMS = {
    "consistency": CONSISTENCY,
    "labels": LABELS,
    "noise": NOISE,
    "controls": CONTROLS,
    "anisotropy": ANISOTROPY,
}
# What a stored effects table may hold instead (`tc.report.verdicts.effects_from_table`): a section's claims as an
# earlier report made them, tried in order when the current ones have no rows; and the sections an earlier report
# did not run at all (no row: the section says it was not run).
LEGACY_CLAIMS = {"consistency": (CONSISTENCY_V1,)}
OPTIONAL_SECTIONS = ("noise",)
