"""The text of docs/REPORT.md, section by section: the header, sections 1 to 5 (the seeded experiments, with
2b, label noise, after section 2) and the compute section, each a function of `Results` returning its lines.
Pure (section 6: `sweep_section`)."""

from __future__ import annotations

from scipy import stats

from tc.analysis import anisotropy as anisotropy_metrics
from tc.analysis.anisotropy import PERTURB_HEADLINE_EPS
from tc.analysis.plots import RC_CAP
from tc.analysis.registry import metric_range
from tc.core.models import default_depth
from tc.report.costs import paper_scale
from tc.report.experiments import (
    CONTROLS,
    FREEZE_EPOCH,
    LABEL_FRACTIONS,
    NOISE_ARMS,
    NOISE_RATE,
    Settings,
    analyze_config,
    base_analysis,
    freeze_cut,
    train_config,
)
from tc.report.markdown import effect_rows, fmt, margins, mean_ci, model_name
from tc.report.results import STORED_TABLES, Results, effects_of, sweep_config_of, sweeps_of
from tc.report.verdicts import MEMORISED, memorised, seed_values
from tc.stats.multiplicity import ALPHA
from tc.stats.replicates import Effect


def _ci(m: dict[str, dict[str, float]], arm: str, metric: str, digits: int = 3) -> str:
    """`metric`'s mean over the arm's seeds with its 95% interval, inside the metric's range
    (`tc.analysis.registry.metric_range`)."""
    return mean_ci(seed_values(m, arm, metric), digits, metric_range(metric))


FULL_TABLES = "Full tables: " + ", ".join(f"`report/{name}`" for name in STORED_TABLES) + "."


def ranged(effects: dict[str, list[Effect]]) -> bool:
    """Whether the effects' intervals were made inside their quantities' ranges: False for effects read back from
    a table stored before (no `interval` column), whose intervals are plain t intervals."""
    return any(e.method for items in effects.values() for e in items)


def how_to_read(s: Settings, in_range: bool = True) -> list[str]:
    """The header's how-to-read paragraph: the seed-level design and how a verdict is read off its interval;
    `in_range`: the intervals stay inside their quantities' ranges (False: the plain t intervals of a report
    stored before they did, `ranged`)."""
    interval = (
        "claim's difference gets a Student-t 95% confidence interval over the seeds (`tc.stats.replicates`; sampling "
        "unit: the seed). "
    )
    scale = ""
    if in_range:
        interval = (
            "claim's difference gets a Student-t 95% confidence interval over the seeds (`tc.stats.replicates`; "
            "sampling unit: the seed) that stays inside the quantity's range: it is computed on the logit of the "
            "value's place in its range ([0, 1] for accuracy and agreement, [−1, 1] for κ and for the difference of "
            "two [0, 1] quantities, [−2, 2] for that of two κ; a log where the range is open on one side) and mapped "
            "back; where a seed's value lies on an end of the range (an accuracy of 1.0), it is the plain t interval "
            "clipped to the range. Every other mean [95% CI] below is made the same way. "
        )
        scale = " (on that scale)"
    return [
        "**How to read it.** Every claim is tested on independent training seeds: the same configuration is "
        "trained at each seed in each arm, arms are paired by seed (same initialisation and data order), and the "
        + interval
        + "The verdict follows from the interval alone, against the claim's *margin*, the smallest "
        "difference that would matter (the `predicted` column: the side and the margin; 0 where any difference "
        "counts): **reproduces** when "
        "the whole interval lies beyond the margin on the side the claim predicts; **does not reproduce** when it "
        "lies entirely short of it (inside ±margin, or on the other side); **inconclusive** when it contains the "
        "margin. A claim without a direction reads **differs** (entirely beyond ±margin), **no difference larger "
        "than the margin** (entirely inside ±margin) or **inconclusive**. The full table is in `tc.stats.replicates`. "
        f"With {s.seeds} seeds the half-width is "
        f"{stats.t.ppf(0.975, max(s.seeds - 1, 1)):.1f} × sd(seed differences) / √{s.seeds}{scale}: small effects come "
        "out inconclusive, as they should.",
    ]


def _runs_line(s: Settings) -> str:
    """The base runs' schedule and analysis, in one line."""
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


def generated_line(r: Results) -> str:
    """The first line: the command, its minutes and the machine."""
    machine = f" ({r.machine})" if r.machine else ""
    quick = " -P quick=true" if r.settings.quick else ""
    return (
        f"Generated by `mlflow run . --env-manager local --experiment-name tc -e report{quick}` "
        f"in {r.seconds / 60:.0f} min on this machine{machine}. Every number below was measured in "
        "that run by tc's own train, analyze and sweep code (nested MLflow runs of the report run; their ids are "
        "in its `report_runs.json`)."
    )


def header(r: Results) -> list[str]:
    """The title, the generated line, how to read it, the forest figure and the runs."""
    s = r.settings
    return [
        "# Temporal consistency: what reproduces, and does it predict generalization?",
        "",
        generated_line(r),
        "",
        *how_to_read(s, ranged(effects_of(r))),
        "",
        f"![every claim: difference and 95% CI over seeds, coloured by verdict]({r.figures['forest']})",
        "",
        _runs_line(s),
        "",
    ]


def consistency_section(r: Results) -> list[str]:
    """Section 1: consistency on train, test and corrupted data, per split and as claims."""
    m, a = r.metrics, analyze_config(base_analysis(r.settings))
    rows = [
        f"| {sp} | {_ci(m, 'base', f'acc_{sp}')} | {_ci(m, 'base', f'tc_{sp}')} | "
        f"{_ci(m, 'base', f'tc_kappa_{sp}')} | {_ci(m, 'base', f'tc_full_{sp}')} | {_ci(m, 'base', f'tc_gain_{sp}')} |"
        for sp in ("train", "test", "corrupt")
    ]
    return [
        "## 1. Temporal consistency (train, test, corrupted)",
        "",
        f"Mean over {r.settings.seeds} seeds [95% CI]. tc: agreement of the final deep part on the shallow features "
        f"of the window's checkpoints (the last {a.window:.0%} of training) with its own final predictions; "
        "tc_kappa: the same, chance-corrected; tc_full: the whole network at those checkpoints against the final "
        "one (the baseline tc must beat); tc_gain = tc − tc_full, the share of samples on which the composite "
        "agrees with the final network where the earlier whole network does not, net (0: no better than "
        "convergence). The claims below are on tc_gain, not on the ratio tc_excess = (tc − tc_full)/(1 − tc_full) "
        "of earlier reports: that ratio divides by a disagreement that vanishes as the network converges, and its "
        "seed-level interval then misses its true value, often by more than half of it (simulated in "
        "tests/test_gain_coverage.py: at tc_full 0.999 on 200 or 500 samples and 2-5 seeds it covers in 24-84% of "
        "experiments and misses by more than half in 15-76%). tc_gain's interval covers at 95% wherever a run sees "
        "at least 5 disagreeing samples; nearer 1 no seed-level interval does, but tc_gain's stays within one sample "
        "(1/n) of its true value in at least 98%: it reads about 0 there, and claims no effect it cannot see.",
        "",
        "| split | final accuracy | tc | tc_kappa | tc_full | tc_gain |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        *effect_rows(effects_of(r)["consistency"]),
        "",
        f"![agreement and relative consistency, seed 0]({r.figures['heat']})",
        "",
        "Rows: shallow checkpoint t1; columns: deep checkpoint t2; seed 0. Top: agreement of the composite with the "
        "deep checkpoint's own network, in [0, 1]. Bottom: relative consistency acc[t1,t2]/acc[t2,t2], unbounded, "
        f"on a scale centred at 1 (white) up to {RC_CAP:g}; darker cells lie above it and carry their value.",
        "",
    ]


def labels_verdict_line(head: Effect) -> str:
    """Section 2's verdict line: that of its first claim, the section's headline claim (the first, pre-specified)."""
    return (
        f"**Verdict (headline, `{head.claim.label()}`): {head.verdict}** — difference "
        f"{fmt(head.diff)} [{fmt(head.low)}, {fmt(head.high)}] over {head.n} seeds."
    )


def labels_section(r: Results) -> list[str]:
    """Section 2: the random-label control, its memorisation check and its claims."""
    s, m = r.settings, r.metrics
    lab = train_config(s.labels)
    fit = {arm: memorised(m, arm) for arm in ("clean", "random")}
    effects = effects_of(r)["labels"]
    epochs = {arm: _ci(m, arm, "epochs_trained", 0) for arm in ("clean", "random")}
    acc = {arm: _ci(m, arm, "test_acc") for arm in ("clean", "random")}
    depth = lab.depth or default_depth(lab.model)
    return [
        "## 2. Random labels: the paper's central control",
        "",
        f"An {model_name(lab.model)} ({depth} hidden layers, width {lab.width}) on {lab.train_size} {lab.dataset}, "
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
        labels_verdict_line(effects[0]),
        "",
    ]


# Kendall τ of label_noise with test accuracy over the 50 converged trials of the sweep of the report made before
# issue 23 (its docs/report/trials.csv; tests/test_report_noise.py recomputes it while that table is the stored one)
LABEL_NOISE_TAU_V1 = -0.72


def noise_section(r: Results) -> list[str]:
    """Section 2b: label noise alone, the random-label MLP at NOISE_RATE against its clean arm; a report that did
    not run it (no effects: one stored before it existed) says so."""
    effects = effects_of(r)["noise"]
    lab = train_config(r.settings.labels)
    tau = (
        f"label noise alone had Kendall τ = {LABEL_NOISE_TAU_V1:.2f} with test accuracy over the 50 converged trials "
        "of the sweep that varied label_noise over {0, 0.1}: any measure that detects noisy labels then looked "
        "predictive of generalization"
    )
    if not effects:
        return [
            "## 2b. Label noise: a separate, stated experiment",
            "",
            f"**Not run in this report**: the experiment was added after it was made. Why it exists: {tau} (this "
            "report's sweep, section 6). Later reports' sweeps do not vary label noise; this section states its "
            f"effect on its own ({NOISE_RATE:.0%} of the section 2 MLP's training labels replaced, against its clean "
            "arm, paired by seed).",
            "",
        ]
    m = r.metrics
    # every environment's trials (`sweeps_of`: `produce` and a re-render fill `sweeps`, not the one-sweep `trials`)
    sweeps = sweeps_of(r)
    trials = [sw.trials for sw in sweeps if not sw.trials.empty]
    varies = [sw.env.name for sw in sweeps if "label_noise" in sw.trials and sw.trials["label_noise"].nunique() > 1]
    where = f" in `{'`, `'.join(varies)}`" if len(sweeps) > 1 else ""
    sweep = (
        f"This report's sweep still varies it{where} (section 6): its τ there includes the effect measured here."
        if varies
        else (f"This report's sweep{'s do' if len(sweeps) > 1 else ' does'} not vary it." if trials else "")
    )
    epochs = {arm: _ci(m, arm, "epochs_trained", 0) for arm in NOISE_ARMS}
    acc = {arm: _ci(m, arm, "test_acc") for arm in NOISE_ARMS}
    runs = {arm: seed_values(m, arm, "converged") for arm in NOISE_ARMS}
    done = {arm: f"{sum(v == 1.0 for v in runs[arm].values())} of {len(runs[arm])}" for arm in NOISE_ARMS}
    return [
        "## 2b. Label noise: a separate, stated experiment",
        "",
        f"Why apart: in the report before this one, {tau}. {sweep + ' ' if sweep else ''}Here label noise "
        "is the only difference between two arms: the MLP of section 2 (same data, optimizer, criterion, "
        f"checkpoints and analysis) with {NOISE_RATE:.0%} of its training labels replaced by random ones (noisy) "
        f"against its clean arm, at the same {r.settings.label_seeds} seeds, paired by seed, both trained until "
        f"their training cross-entropy on the labels they see is <= {lab.target_loss:g}. What it tests: how far test "
        "accuracy, tc_kappa, the convergence baseline tc_full, tc_gain and the single-run anchors (gm_sum_train_loss, "
        "the mean training loss over the run; gm_steps_to_criterion) move under that noise, i.e. how much of a "
        "sweep's τ label noise alone could make. A measure that moves here would track noise in a sweep that "
        "varies it; that says nothing about how it ranks models that differ in anything else (section 6).",
        "",
        f"Runs that reached the criterion: clean {done['clean']}, noisy {done['noisy']} (required: all; otherwise "
        f"the claims are not tested). Final training accuracy on the labels used (lowest over seeds): clean "
        f"{fmt(memorised(m, 'clean'))}, noisy {fmt(memorised(m, 'noisy'))}. Epochs to the criterion: clean "
        f"{epochs['clean']}, noisy {epochs['noisy']}. Test accuracy: clean {acc['clean']}, noisy {acc['noisy']}.",
        "",
        *effect_rows(effects),
        "",
    ]


def drift_section(r: Results) -> list[str]:
    """Section 3: feature drift beside consistency."""
    m = r.metrics
    return [
        "## 3. Feature drift versus consistency",
        "",
        f"Mean relative drift ||z_T - z_t|| / ||z_T|| over the window (test): "
        f"{_ci(m, 'base', 'drift_test')} over seeds; the final deep part still agrees with itself "
        f"on those features for {_ci(m, 'base', 'tc_test')} of test images.",
        "",
        f"![drift vs consistency, seed 0]({r.figures['drift']})",
        "",
    ]


def controls_section(r: Results) -> list[str]:
    """Section 4: the initial-shallow, freezing and BatchNorm controls."""
    cut = freeze_cut(r.settings.base)
    return [
        "## 4. Controls: initial shallow part, freezing, BatchNorm",
        "",
        f"Freezing: the same runs (same seeds, samples and splits) with the shallow part (the blocks before cut "
        f"{cut}, the end of the first stage) frozen after epoch {FREEZE_EPOCH}; test accuracy is on the whole test "
        "set. BatchNorm: each base run analyzed twice on the same test samples, with each part's own BatchNorm "
        "statistics (splice) or statistics re-estimated on training batches (recalibrate). Margins: differences "
        f"under {margins(CONTROLS)} (the `predicted` column) are treated as no effect.",
        "",
        *effect_rows(effects_of(r)["controls"]),
        "",
    ]


def _pvalues(r: Results, kind: str) -> str:
    """How many seeds' Holm p-values fall below ALPHA, with each seed's."""
    p = seed_values(r.metrics, "base", f"aniso_{kind}_min_pvalue")
    below = sum(v < ALPHA for v in p.values())
    return f"{below} of {len(p)} ({', '.join(fmt(v, 3) for _, v in sorted(p.items()))})"


def anisotropy_section(r: Results) -> list[str]:
    """Section 5: anisotropy of drift and gradient noise, and the perturbation claims."""
    m, a = r.metrics, analyze_config(base_analysis(r.settings))
    draws = anisotropy_metrics.perturb_options(a).draws
    return [
        "## 5. Anisotropy of SGD noise",
        "",
        f"| vectors (sampling unit) | top-{a.aniso_k} explained variance [95% CI over seeds] "
        f"| seeds with Holm p < {ALPHA:g} (p per seed) |",
        "|---|---|---|",
        f"| feature drift (disjoint sample pairs) | {_ci(m, 'base', 'aniso_drift_topk_var')} | "
        f"{_pvalues(r, 'drift')} |",
        f"| gradient noise (minibatches) | {_ci(m, 'base', 'aniso_grad_topk_var')} | {_pvalues(r, 'grad')} |",
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


def compute_section(r: Results) -> list[str]:
    """The compute used, the paper-scale estimate and the list of stored tables."""
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
