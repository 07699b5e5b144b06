"""The report (docs/REPORT.md): its seeded experiments and their claims (verdicts from `tc.replicates`), the
sweep's verdict, and its text as a sequence of small section functions. No MLflow here: metrics and tables
in, markdown (`render`) and files (`write`) out; `entrypoints/report.py` runs the experiments as MLflow runs."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from scipy import stats

from tc import plots
from tc.replicates import Claim, Effect, paired_effect, t_interval
from tc.sweep import HEADLINE

MAX_COST_EPOCHS = 2.0  # the bar: a consistency measure must cost at most this many training epochs per trial
MIN_TAU = 0.5  # the bar: |Kendall τ| with test accuracy at least this


@dataclass(frozen=True)
class Settings:
    """The report's scale. `base`: the ResNet runs (consistency, controls, anisotropy, freezing, BatchNorm)
    at `seeds` seeds; `labels`: the random-label MLP runs at `label_seeds` seeds per arm; the sweep's
    `n_trials` converged trials (`sweep_extra` on top of the sweep's defaults); `samples` per split."""

    base: dict
    seeds: int
    labels: dict
    label_seeds: int
    n_trials: int
    sweep_extra: dict
    samples: int
    quick: bool


def settings(quick: bool, trials: int, root: Path) -> Settings:
    """Quick (the test): ResNet-8 and a small MLP on digits, 2 seeds, at most 6 trials. Full: ResNet-20 (width
    16) on 5,000 Fashion-MNIST images at 5 seeds; the random-label MLP (width 256) on 1,000 digits at 5 seeds
    per arm; the sweep's default proxy (digits MLP trained to cross-entropy 0.01) at `trials` converged trials."""
    # random labels: no augmentation, no weight decay, a constant learning rate, trained until the training
    # cross-entropy on the labels used is <= 0.02 (accuracy >= 0.99, checked); a checkpoint every 8 steps,
    # analyzed at 13 matched fractions of training (runs of different lengths compare at equal progress)
    labels = {"dataset": "digits", "model": "mlp", "width": 256, "lr": 0.05, "schedule": "constant"}
    labels |= {"weight_decay": 0.0, "augment": "false", "batch_size": 64, "checkpoint_every": 8}
    if quick:
        base = {"dataset": "digits", "model": "resnet20", "depth": 8, "width": 8, "epochs": 4}
        base |= {"train_size": 800, "batch_size": 64}
        labels |= {"width": 64, "train_size": 300, "epochs": 150, "target_loss": 0.05}
        sweep = {"search_space": str(root / "examples/digits_space.yaml"), "epochs": 150}
        return Settings(base, 2, labels, 2, min(trials, 6), sweep, 200, True)
    base = {"dataset": "fashion-mnist", "model": "resnet20", "width": 16, "epochs": 6, "train_size": 5000}
    labels |= {"train_size": 1000, "epochs": 400, "target_loss": 0.02}
    return Settings(base, 5, labels, 5, trials, {}, 500, False)


FREEZE_EPOCH = 2


def training_runs(s: Settings) -> dict[str, dict]:
    """`<arm>/s<seed>` -> training parameters: the base runs, the same runs with the shallow part frozen after
    epoch FREEZE_EPOCH, and the random-label MLP with clean (0%) and random (100%) labels."""
    freeze_cut = 2 if s.base.get("depth") == 8 else 4  # after the first stage
    runs: dict[str, dict] = {}
    for seed in range(s.seeds):
        runs[f"base/s{seed}"] = {**s.base, "seed": seed}
        runs[f"frozen/s{seed}"] = {**s.base, "seed": seed, "freeze_cut": freeze_cut, "freeze_epoch": FREEZE_EPOCH}
    for seed in range(s.label_seeds):
        runs[f"clean/s{seed}"] = {**s.labels, "seed": seed, "label_noise": 0.0}
        runs[f"random/s{seed}"] = {**s.labels, "seed": seed, "label_noise": 1.0}
    return runs


def analyses(s: Settings, runs: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(result name, training run key, analyze parameters), in order. The BatchNorm arms analyze the same
    run on the same samples and split, so that only bn_mode differs; each base run's full analysis comes
    last, so that the run keeps it (a later analysis replaces an earlier one). The cross-seed reference of
    base seed s is base seed s + 1."""
    light = {"anisotropy": "false", "measures": "false"}
    bn = {**light, "matrix": "final", "splits": "test", "max_samples": min(s.samples, 300)}
    out = []
    for seed in range(s.seeds):
        key = f"base/s{seed}"
        out.append((f"splice/s{seed}", key, {**bn, "bn_mode": "splice"}))
        out.append((f"recalibrate/s{seed}", key, {**bn, "bn_mode": "recalibrate"}))
        full = {"max_samples": s.samples, "measures": "false", "phases": "true"}
        out.append((key, key, {**full, "reference_run_id": runs.get(f"base/s{(seed + 1) % s.seeds}", "none")}))
        out.append((f"frozen/s{seed}", f"frozen/s{seed}", {**light, "matrix": "final", "max_samples": s.samples}))
    labels = {**light, "matrix": "final", "splits": "train,test", "checkpoints": "fractions:13", "phases": "true"}
    for seed in range(s.label_seeds):
        for arm in ("clean", "random"):
            out.append((f"{arm}/s{seed}", f"{arm}/s{seed}", {**labels, "max_samples": s.samples}))
    return out


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


BASE_FIGURES = {
    "heat": "consistency_heatmaps.png",
    "lag": "lag_curves.png",
    "kde": "per_sample_kde.png",
    "drift": "drift_vs_consistency.png",
    "spec": "anisotropy_spectra.png",
    "pert": "perturbation.png",
}

PHASES = ("early", "middle", "late")
MEMORISED = 0.99  # random labels: every seed's final training accuracy on its labels must reach this

# The claims, each read off a seed-level paired interval (`tc.replicates`). Arms: base, frozen, splice,
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


def epoch_costs(trials: list[tuple[dict[str, float], float | None]]) -> dict[str, float]:
    """Mean cost in training epochs of each timed step over the trials, given each trial's (metrics, seconds
    per training epoch): every `<name>_seconds` metric over that trial's seconds per epoch."""
    totals: dict[str, list[float]] = {}
    for metrics, per_epoch in trials:
        for k, v in metrics.items():
            if k.endswith("_seconds") and per_epoch:
                totals.setdefault(k.removesuffix("_seconds"), []).append(v / per_epoch)
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


@dataclass(frozen=True)
class Results:
    """What the report's text is made from (measured by `entrypoints/report.py`)."""

    settings: Settings
    metrics: dict[str, dict[str, float]]  # result name (`analyses`: `<arm>/s<seed>`) -> the run's metrics then
    figures: dict[str, str]  # figure key -> path relative to the report
    trials: pd.DataFrame  # the sweep's trials.csv (converged trials and those that hit the cap)
    corr: pd.DataFrame  # the sweep's correlations.csv (converged trials only)
    costs: dict[str, float] = field(default_factory=dict)  # `epoch_costs` of the sweep's trials
    timing: dict[str, float] = field(default_factory=dict)  # seconds per step of this report
    seconds: float = 0.0  # the whole report


def _mean_ci(values: dict[int, float], digits: int = 3) -> str:
    mean, lo, hi = t_interval(list(values.values()))
    return f"{fmt(mean, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def effect_rows(effects: list[Effect], verdicts: dict[int, str] | None = None) -> list[str]:
    """A table of claims: arms' means, the paired difference with its 95% CI over seeds, and the verdict
    (`verdicts` overrides the verdict of the row at that index, e.g. a precondition that failed)."""
    lines = [
        "| claim | difference | a | b | difference [95% CI] | seeds | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, e in enumerate(effects):
        v = (verdicts or {}).get(i, e.verdict)
        lines.append(
            f"| {e.claim.text} | `{e.claim.label()}` | {fmt(e.mean_a)} | {fmt(e.mean_b)} | "
            f"{fmt(e.diff)} [{fmt(e.low)}, {fmt(e.high)}] | {e.n} | **{v}** |"
        )
    return lines


def _header(r: Results) -> list[str]:
    s = r.settings
    return [
        "# Temporal consistency: what reproduces, and does it predict generalization?",
        "",
        f"Generated by `mlflow run . --env-manager local -e report{' -P quick=true' if s.quick else ''}` "
        f"in {r.seconds / 60:.0f} min on this machine (2 CPU cores, no GPU). Every number below was measured in "
        "that run by tc's own train, analyze and sweep code (nested MLflow runs of the report run; their ids are "
        "in its `report_runs.json`).",
        "",
        "**How to read it.** Every claim is tested on independent training seeds: the same configuration is "
        "trained at each seed in each arm, arms are paired by seed (same initialisation and data order), and the "
        "claim's difference gets a Student-t 95% confidence interval over the seeds (`tc.replicates`; sampling "
        "unit: the seed). The verdict follows from the interval alone: **reproduces** when it lies on the side the "
        "claim predicts, **does not reproduce** when it lies on the other side or inside a stated margin, "
        f"**inconclusive** otherwise. With {s.seeds} seeds the half-width is "
        f"{stats.t.ppf(0.975, max(s.seeds - 1, 1)):.1f} × sd(seed differences) / √{s.seeds}: small effects come "
        "out inconclusive, as they should.",
        "",
        f"![every claim: difference and 95% CI over seeds, coloured by verdict]({r.figures['forest']})",
        "",
        f"Runs: {s.base['model']} (depth {s.base.get('depth', 20)}, width {s.base['width']}) on "
        f"{s.base.get('train_size')} {s.base['dataset']} training images, {s.base['epochs']} epochs, SGD lr 0.1 "
        f"cosine, a checkpoint per epoch, at {s.seeds} seeds (sections 1, 3-5); analysis on {s.samples} samples per "
        "split, stage cuts, corruptions at severity 3. Random labels: section 2. The sweep: section 6.",
        "",
    ]


def _consistency(r: Results) -> list[str]:
    m = r.metrics
    rows = [
        f"| {sp} | {_mean_ci(seed_values(m, 'base', f'acc_{sp}'))} | {_mean_ci(seed_values(m, 'base', f'tc_{sp}'))} | "
        f"{_mean_ci(seed_values(m, 'base', f'tc_kappa_{sp}'))} | {_mean_ci(seed_values(m, 'base', f'tc_full_{sp}'))} |"
        for sp in ("train", "test", "corrupt")
    ]
    return [
        "## 1. Temporal consistency (train, test, corrupted)",
        "",
        f"Mean over {r.settings.seeds} seeds [95% CI]. tc: agreement of the final deep part on the shallow features "
        "of the window's checkpoints (last half of training) with its own final predictions; tc_kappa: the same, "
        "chance-corrected; tc_full: the whole network at those checkpoints against the final one (the baseline tc "
        "must beat); tc_excess = (tc − tc_full)/(1 − tc_full).",
        "",
        "| split | final accuracy | tc | tc_kappa | tc_full |",
        "|---|---|---|---|---|",
        *rows,
        "",
        *effect_rows([effect_of(c, m) for c in CONSISTENCY]),
        "",
        f"![relative consistency, seed 0]({r.figures['heat']})",
        "",
        "Rows: shallow checkpoint t1; columns: deep checkpoint t2 (relative consistency "
        "acc[t1,t2]/acc[t2,t2]), seed 0.",
        "",
    ]


def _random_labels(r: Results) -> list[str]:
    s, m = r.settings, r.metrics
    lab = s.labels
    fit = {arm: memorised(m, arm) for arm in ("clean", "random")}
    ok = all(v >= MEMORISED for v in fit.values())
    effects = [effect_of(c, m) for c in LABELS]
    override = {} if ok else {i: "not tested (a run did not memorise its labels)" for i in range(len(effects))}
    epochs = {arm: _mean_ci(seed_values(m, arm, "epochs_trained"), 0) for arm in ("clean", "random")}
    acc = {arm: _mean_ci(seed_values(m, arm, "test_acc")) for arm in ("clean", "random")}
    head = effects[0]
    return [
        "## 2. Random labels: the paper's central control",
        "",
        f"An MLP (3 hidden layers, width {lab['width']}) on {lab['train_size']} digits, no augmentation, no weight "
        f"decay, constant lr {lab['lr']}, batch {lab['batch_size']}, trained until its training cross-entropy on "
        f"the labels it sees is <= {lab['target_loss']} (cap {lab['epochs']} epochs), with 0% (clean) and 100% "
        f"(random) labels at {s.label_seeds} seeds per arm, paired by seed. A checkpoint every "
        f"{lab['checkpoint_every']} steps; the analysis uses the 13 checkpoints nearest the fractions 0, 1/12, ..., 1 "
        "of each run's training (`checkpoints=fractions:13`), so the runs, which stop at different steps, are "
        "compared at matched points; `phases=true` adds the early, middle and late thirds.",
        "",
        f"Memorisation (lowest final training accuracy on the labels used, over seeds): clean {fmt(fit['clean'])}, "
        f"random {fmt(fit['random'])} (required: >= {MEMORISED}). Epochs to the criterion: clean {epochs['clean']}, "
        f"random {epochs['random']}. Test accuracy: clean {acc['clean']}, random {acc['random']}.",
        "",
        *effect_rows(effects, override),
        "",
        (
            f"**Verdict (headline, `{head.claim.label()}`): {override.get(0, head.verdict)}** — difference "
            f"{fmt(head.diff)} [{fmt(head.low)}, {fmt(head.high)}] over {head.n} seeds."
        ),
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
    return [
        "## 4. Controls: initial shallow part, freezing, BatchNorm",
        "",
        f"Freezing: the same runs (same seeds, samples and splits) with the shallow part frozen after epoch "
        f"{FREEZE_EPOCH}; test accuracy is on the whole test set. BatchNorm: each base run analyzed twice on the "
        "same test samples, with each part's own BatchNorm statistics (splice) or statistics re-estimated on "
        "training batches (recalibrate). Margins: differences under 0.01 are treated as no effect.",
        "",
        *effect_rows([effect_of(c, r.metrics) for c in CONTROLS]),
        "",
    ]


def _pvalues(r: Results, kind: str) -> str:
    p = seed_values(r.metrics, "base", f"aniso_{kind}_min_pvalue")
    below = sum(v < 0.05 for v in p.values())
    return f"{below} of {len(p)} ({', '.join(fmt(v, 3) for _, v in sorted(p.items()))})"


def _anisotropy(r: Results) -> list[str]:
    m = r.metrics
    return [
        "## 5. Anisotropy of SGD noise",
        "",
        "| vectors (sampling unit) | top-3 explained variance [95% CI over seeds] "
        "| seeds with Holm p < 0.05 (p per seed) |",
        "|---|---|---|",
        f"| feature drift (disjoint sample pairs) | {_mean_ci(seed_values(m, 'base', 'aniso_drift_topk_var'))} | "
        f"{_pvalues(r, 'drift')} |",
        f"| gradient noise (minibatches) | {_mean_ci(seed_values(m, 'base', 'aniso_grad_topk_var'))} | "
        f"{_pvalues(r, 'grad')} |",
        "",
        "Each seed's p-value is the Monte-Carlo test against an isotropic Gaussian null, Holm-adjusted over the "
        "cuts (`aniso_*_min_pvalue`). Perturbation test (ε = 0.5, k-dimensional subspaces at equal norm, 5 draws "
        "per seed averaged, mean over cuts):",
        "",
        *effect_rows([effect_of(c, m) for c in ANISOTROPY]),
        "",
        f"![spectra, seed 0]({r.figures['spec']})",
        "",
        f"![perturbation, seed 0]({r.figures['pert']})",
        "",
    ]


def _sweep(r: Results) -> list[str]:
    s = r.settings
    conv = r.trials[r.trials["converged"] == 1] if "converged" in r.trials else r.trials
    lines = [
        f"## 6. Does consistency predict generalization? {len(conv)} converged trials",
        "",
        f"`sweep` with its defaults: Optuna's scrambled-Sobol QMC sampler over lr, batch size, weight decay, width, "
        f"label noise and train-set size (a space-filling design, not an optimiser), the digits MLP trained at two "
        f"seeds per configuration until its training cross-entropy is <= 0.01 (cap {s.sweep_extra.get('epochs', 300)} "
        f"epochs): every trial at equal fit. {len(r.trials)} trials ran; {len(r.trials) - len(conv)} hit the cap and "
        "are left out. Kendall τ-b of each measure with test accuracy and with the gap (clean training accuracy − "
        "test accuracy, whole test set) with a bootstrap 95% CI over trials; Ψ where groups exist; Holm-adjusted "
        f"p-values over the family of measures. The headline, `{HEADLINE}`, was fixed before the run (README, "
        "Sweep); every other measure is exploratory. Cost: seconds per trial over the trial's seconds per epoch.",
        "",
    ]
    if len(r.corr):
        lines += correlation_lines(r.corr, r.costs)
    return [
        *lines,
        "",
        f"![{HEADLINE} vs test accuracy](report/sweep_scatter.png)",
        "",
        "![|τ| per measure](report/sweep_bars.png)",
        "",
    ]


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
        f"{PAPER_SCALE}",
        "",
        "Full tables: `report/trials.csv`, `report/correlations.csv`, `report/effects.csv`.",
        "",
    ]


# An estimate, not a measurement: stated as such in the report. 50k images x 100 epochs of ResNet-20 on one
# modern GPU at ~10k img/s (fp32) is ~10 min per run; the analysis (full matrix, 101 checkpoints) is of the same
# order; 5 seeds x 2 arms x (train + analyze) is then ~4 GPU-hours, and a 48-trial sweep ~16 GPU-hours.
PAPER_SCALE = (
    "Estimated (not measured): about 10 GPU-minutes to train one run and as much to analyze it, so about 4 "
    "GPU-hours for the seeded experiments at 5 seeds per arm and about 16 GPU-hours for a 48-trial two-seed sweep."
)

SECTIONS = (_header, _consistency, _random_labels, _drift, _controls, _anisotropy, _sweep, _compute)


def all_effects(metrics: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Every claim of sections 1, 2, 4 and 5 as one table (report/effects.csv, the forest figure)."""
    rows = []
    for section, claims in (
        ("consistency", CONSISTENCY),
        ("labels", LABELS),
        ("controls", CONTROLS),
        ("anisotropy", ANISOTROPY),
    ):
        for c in claims:
            e = effect_of(c, metrics)
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
                    "verdict": e.verdict,
                }
            )
    return pd.DataFrame(rows)


def render(r: Results) -> str:
    """docs/REPORT.md: the sections in order."""
    return "\n".join(line for section in SECTIONS for line in section(r))


def _correlation_row(name: str, a, g, cost: float | None) -> str:
    gap = f"{fmt(g.kendall, 2)} [{fmt(g.kendall_ci_low, 2)}, {fmt(g.kendall_ci_high, 2)}]" if g is not None else "n/a"
    role = " (headline)" if name == HEADLINE else ""
    return (
        f"| `{name}`{role} | {fmt(a.kendall, 2)} [{fmt(a.kendall_ci_low, 2)}, {fmt(a.kendall_ci_high, 2)}] | "
        f"{fmt(a.get('kendall_p_holm', math.nan), 3)} | {fmt(a.spearman, 2)} | "
        f"{fmt(a.granulated_kendall, 2)} ({fmt(a.worst_psi, 2)}) | {fmt(a.partial_kendall, 2)} | {gap} | "
        f"{fmt(cost, 2) if cost is not None else 'n/a'} |"
    )


def correlation_lines(corr: pd.DataFrame, costs: dict[str, float]) -> list[str]:
    """The sweep's correlation table (sorted by |τ| with test accuracy) and the verdict paragraph."""
    acc = corr[corr["target"] == "test_acc"].set_index("measure")
    gap = corr[corr["target"] == "gen_gap"].set_index("measure")
    order = acc.assign(a=acc["kendall"].abs()).sort_values("a", ascending=False).index
    lines = [
        "| measure | τ with test acc [95% CI] | Holm p | ρ | Ψ (worst ψ_h) | partial τ | τ with gap [95% CI] "
        "| cost (epochs) |",
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


def sweep_verdict(acc: pd.DataFrame, costs: dict[str, float]) -> list[str]:
    """The one-paragraph answer, from intervals only: does the pre-specified headline predict test accuracy
    (its τ interval excludes 0 and its Holm p < 0.05), and does it beat the best baseline gm_* (its |τ|
    interval lies above the baseline's) at no greater cost?"""
    if HEADLINE not in acc.index:
        return ["", f"The headline `{HEADLINE}` was not measured on these trials: no verdict."]
    h = acc.loc[HEADLINE]
    h_lo, h_hi = abs_interval(h.kendall_ci_low, h.kendall_ci_high)
    predicts = (h.kendall_ci_low > 0 or h.kendall_ci_high < 0) and h.get("kendall_p_holm", 1.0) < 0.05
    gm = [n for n in acc.index if n.startswith("gm_")]
    lines = [
        "",
        f"**Verdict.** The headline `{HEADLINE}` has τ = {fmt(h.kendall, 2)} [{fmt(h.kendall_ci_low, 2)}, "
        f"{fmt(h.kendall_ci_high, 2)}] with test accuracy (Holm p {fmt(h.get('kendall_p_holm', math.nan), 3)}): "
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
            f"cost {fmt(cost_of(best, costs), 2)} epochs). Non-overlapping intervals are the criterion: conservative."
        )
        met = meets_the_bar(abs(h.kendall), abs(b.kendall), cost_of(HEADLINE, costs))
        lines += [
            "",
            f"SPEC's bar (|τ| ≥ {MIN_TAU}, above every baseline, at most {MAX_COST_EPOCHS:g} epochs), on point "
            f"estimates: {'met' if met else 'not met'}.",
        ]
    return lines


def sweep_tables(art: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, correlations) from a sweep run's downloaded artifacts `art`, whose figures move next to it
    (`art/..`, the report's figure directory) as sweep_scatter.png and sweep_bars.png; `art` is removed."""
    trials = pd.read_csv(art / "trials.csv")
    corr = pd.read_csv(art / "correlations.csv") if (art / "correlations.csv").exists() else pd.DataFrame()
    for src, dst in (("scatter.png", "sweep_scatter.png"), ("correlation_bars.png", "sweep_bars.png")):
        shutil.move(art / src, art.parent / dst)
    shutil.rmtree(art, ignore_errors=True)
    return trials, corr


def write(r: Results, out: Path) -> Path:
    """REPORT.md into `out`, and into `out/report/` the forest figure and effects.csv, trials.csv and
    correlations.csv: the path of REPORT.md."""
    figs = out / "report"
    effects = all_effects(r.metrics)
    plots.save_figures({"effects.png": plots.effects_forest(effects)}, figs)
    (out / "REPORT.md").write_text(render(replace(r, figures={**r.figures, "forest": "report/effects.png"})))
    for name, table in (("correlations", r.corr), ("trials", r.trials), ("effects", effects)):
        table.to_csv(figs / f"{name}.csv", index=False)
    return out / "REPORT.md"
