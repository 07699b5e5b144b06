"""The one list of every metric an analysis logs (`tc.analysis.run.analyze_run`), with its meaning.

It also names what a sweep logs beside them (meanings that start with "sweep"); the training metrics
(train_loss, test_acc, ...) are described in `entrypoints/train.py`. Keys are patterns: `{split}` is an
analysis split (train, test, corrupt), `{cut}` a cut index (the metric at one cut; the key without `_d{cut}`
is the mean over the cuts, `mean_over_cuts`), `{kind}` drift or grad, `{test}` an anisotropy test (drift, grad
or perturb), `{direction}` top, random or bottom, `{phase}` early, middle or late, `{corruption}` a corruption
name, `{gm}` a baseline measure gm_*, `{measure}` any measure the sweep correlates. The counts `n_*` say how
much an analysis actually used where it may use less than asked (they are no measures: the sweep correlates
none). `tests/test_metrics.py` checks that every key a real analysis logs matches exactly one pattern;
docs/analyze.md's table is generated from this list (scripts/gen_docs.py, checked by tests/test_docs.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from tc.core.consistency import EXCESS_FLOOR
from tc.core.corruptions import CORRUPTIONS

HEADLINE = (
    "tc_train",
    "tc_test",
    "tc_kappa_test",
    "tc_full_test",
    "tc_gain_test",
    "tc_excess_test",
    "tc_window_checkpoints",
    "tc_corrupt",
    "half_life_test",
    "tc_test_crossseed",
    "drift_test",
    "aniso_drift_topk_var",
    "aniso_drift_min_pvalue",
    "aniso_grad_topk_var",
    "aniso_grad_min_pvalue",
    "aniso_perturb_top_acc",
    "aniso_perturb_random_acc",
    "aniso_perturb_bottom_acc",
)

GM = (
    "gm_param_norm",
    "gm_dist_init",
    "gm_log_spectral_product",
    "gm_margin",
    "gm_train_loss",
    "gm_sharpness",
    "gm_disagreement",
    "gm_js_disagreement",
    "gm_sum_train_loss",
    "gm_steps_to_criterion",
)

#: The measures that cost many passes, which `AnalyzeConfig.costly_measures=false` leaves out (a sweep's core
#: analysis): gm_sharpness's σ search (about 16 forwards per training sample) and tc_mmd (the features of every
#: window checkpoint on two splits). Together they cost about as much as one split's consistency scores.
COSTLY_MEASURES = ("gm_sharpness", "tc_mmd")

# pattern -> one-line meaning. W = the tc window (checkpoints in the last `window` of training, before the
# final one T); agree_d, g_d, rc, r(Δ), c(x): `tc.core.consistency`; the function that computes each is named,
# relative to `tc.core` (`consistency.tc_score` is `tc.core.consistency.tc_score`) or to `tc` (`analysis.*`).
METRICS: dict[str, str] = {
    "tc_{split}_d{cut}": "mean_{t in W} agree_d[t, T]: the final deep part predicts on earlier features what it "
    "predicts on its own (`consistency.tc_score`)",
    "tc_{split}": "mean over cuts of tc_{split}_d{cut} (`analysis.registry.mean_over_cuts`)",
    "tc_{split}_random_shallow_d{cut}": "agree_d[0, T]: the initialisation's shallow part under the final deep "
    "part (only when step 0 is analyzed); near chance only where training moved the shallow part far from its "
    "initialisation, far above it in an MLP's first layers",
    "tc_{split}_random_shallow": "mean over cuts of tc_{split}_random_shallow_d{cut}",
    "tc_{split}_{phase}": "with phases=true: tc_{split} over the checkpoints of one third of training (s/T in "
    "(0, 1/3], (1/3, 2/3], (2/3, 1), T excluded; `consistency.phase_windows`), mean over cuts",
    "tc_kappa_{split}_{phase}": "with phases=true: tc_kappa_{split} over that third of training, mean over cuts",
    "tc_full_{split}_{phase}": "with phases=true: tc_full_{split} over that third of training",
    "tc_kappa_{split}_d{cut}": "mean_{t in W} Cohen's κ(g_d[t, T](x), f(x; θ_T)) (`consistency.tc_kappa`)",
    "tc_kappa_{split}": "mean over cuts of tc_kappa_{split}_d{cut}",
    "tc_js_{split}_d{cut}": "soft temporal consistency: mean_{t in W} mean_x JS(g_d[t, T](x), f(x; θ_T)), the "
    "Jensen-Shannon divergence in bits (in [0, 1]; 0 = the same predictive distributions) between the softmax "
    "outputs of the composite and of the final network, over tc's window (`divergence.tc_js`)",
    "tc_js_{split}": "mean over cuts of tc_js_{split}_d{cut}",
    "err_hat_tc_{split}": "1 - tc_{split}: a single-run estimate of the final network's error on the split, from "
    "no label (`analysis.consistency.error_estimates`; its calibration: `tc.stats.calibration`)",
    "err_hat_full_{split}": "1 - tc_full_{split}: the same estimate from the whole networks of the window",
    "tc_full_{split}": "mean_{t in W} mean_x 1[f(x; θ_t) = f(x; θ_T)]: whole networks, the convergence baseline "
    "(`consistency.tc_full`)",
    "tc_gain_{split}": "tc_{split} - tc_full_{split}, in [-1, 1]: the convergence-adjusted score, how much more "
    "often the final deep part agrees on earlier features than the earlier whole networks do; stable as tc_full -> 1 "
    "(`consistency.tc_gain`; the report's claims use it)",
    "tc_excess_{split}": "(tc - tc_full) / max(1 - tc_full, EXCESS_FLOOR): the fraction of the whole networks' "
    "disagreement that the composite removes, its denominator floored at "
    f"`consistency.EXCESS_FLOOR` = {EXCESS_FLOOR:g} "
    f"(below it: tc_gain / {EXCESS_FLOOR:g}), since the plain ratio's denominator vanishes, and its sampling error "
    "grows without bound, as tc_full -> 1 (`consistency.tc_excess`)",
    "tc_window_checkpoints": "|W|: checkpoints in the tc window (< 3: tag tc.window_warning)",
    "n_checkpoints": "checkpoints analyzed (fewer than N with checkpoints=fractions:N when the run has too few to "
    "tell apart: a warning says so)",
    "n_samples_{split}": "examples analyzed in the split: max_samples, or the whole split when it has fewer (a "
    "warning says so; `analysis.splits.sample_notes`)",
    "n_calibration_batches": "bn_mode=recalibrate: full training batches of batch_size that re-estimate BatchNorm: "
    "calibration_batches, or all the training set holds when fewer (a warning says so; none: refused; "
    "`analysis.composites.calibration_notes`)",
    "n_grad_batches": "full training minibatches for the gradient noise: grad_batches, or all the training set "
    "holds when fewer (a warning says so); under aniso_k + 2 the test is not run (n_cuts_grad = 0; "
    "`config.analyze.min_spectrum_units`)",
    "n_drift_pairs_d{cut}": "pairs of test samples with distinct drift: the drift test's units at that cut (under "
    "aniso_k + 2 it is not run there)",
    "n_cuts_{test}": "cuts at which that anisotropy test ran, of those analyzed (a warning names the others and "
    "why); its means and min p-values are over these",
    "n_measures_skipped": "measures=true: gm_* and tc_mmd asked for but not computed (gm_log_spectral_product on "
    "a model whose layers it cannot bound; the learning-speed ones without a logged curve); the warnings name them",
    "acc_{split}": "accuracy of the final network f(·; θ_T)",
    "drift_{split}_d{cut}": "mean_{t in W} mean_x ||z_t(x) - z_T(x)|| / ||z_T(x)|| (`consistency.drift_score`)",
    "drift_{split}": "mean over cuts of drift_{split}_d{cut}",
    "half_life_{split}": "first lag Δ with r(Δ) < 0.9, r averaged over cuts; if never, the lags observed "
    "(`consistency.half_life_metric`)",
    "tc_corrupt_{corruption}": "mean over cuts and severities of mean_{t in W} agreement of g_d[t, T] with "
    "f(θ_T) on the samples of that corruption (`consistency.corruption_scores`)",
    "tc_test_crossseed_d{cut}": "mean_{t in W} agreement of this run's shallow part at t under the reference "
    "run's final deep part with the reference network (`analysis.controls.cross_seed`)",
    "tc_test_crossseed": "mean over cuts of tc_test_crossseed_d{cut}",
    "bf16_agreement": "fraction of (checkpoint, cut, sample) whose bf16 composite prediction equals fp32's",
    "analysis_seconds": "wall time of the consistency analysis: the tc_{split}_seconds and controls_seconds, and "
    "their set-up",
    "tc_{split}_seconds": "wall time of one split's consistency phase: its composites, its whole networks' "
    "predictions (read from the composites' diagonal) and its scores (`analysis.consistency.split_scores`)",
    "controls_seconds": "wall time of the controls: the cross-seed composite and the bf16 agreement check "
    "(`analysis.controls.control_metrics`)",
    "splits_seconds": "wall time of drawing the analysis splits, the corruptions included "
    "(`analysis.splits.make_splits`)",
    "tc_cost_epochs": "analysis_seconds / the run's seconds per training epoch",
    "anisotropy_seconds": "wall time of the anisotropy statistics: the aniso_*_seconds and their set-up",
    "aniso_grad_seconds": "wall time of the gradient noise: the minibatch gradients and their projection "
    "(`sgd_noise.gradient_noise`)",
    "aniso_features_seconds": "wall time of the anisotropy phase's feature passes "
    "(`sgd_noise.features_at_cuts`: one pass per checkpoint for every cut)",
    "aniso_stats_seconds": "wall time of the anisotropy statistics on drift and gradient noise: spectra, "
    "principal directions and null spectra (`anisotropy.analyze_samples`)",
    "aniso_perturb_seconds": "wall time of the perturbation test (`sgd_noise.perturbation_test`)",
    "aniso_{kind}_topk_var_d{cut}": "explained variance of the top aniso_k principal components "
    "(`anisotropy.analyze_samples`)",
    "aniso_{kind}_topk_var": "mean over cuts of aniso_{kind}_topk_var_d{cut}",
    "aniso_{kind}_eff_rank_d{cut}": "effective rank (Σλ)² / Σλ² of the covariance",
    "aniso_{kind}_eff_rank": "mean over cuts of aniso_{kind}_eff_rank_d{cut}",
    "aniso_{kind}_pvalue_d{cut}": "Monte-Carlo p-value of topk_var against the isotropic null",
    "aniso_{kind}_lw_pvalue_d{cut}": "Ledoit-Wolf sphericity test p-value",
    "aniso_{kind}_min_pvalue": "smallest Holm-adjusted pvalue over the cuts where the test ran (n_cuts_{kind}; "
    "`analysis.anisotropy.min_holm`)",
    "aniso_{kind}_lw_min_pvalue": "smallest Holm-adjusted lw_pvalue over the cuts",
    "aniso_perturb_clean_acc_d{cut}": "accuracy of the final network with unperturbed features",
    "aniso_perturb_clean_acc": "mean over cuts of aniso_perturb_clean_acc_d{cut}",
    "aniso_perturb_{direction}_acc_d{cut}": "accuracy with features perturbed at ε = 0.5 in the {direction}-k "
    "drift subspace (`sgd_noise.perturbation_test`)",
    "aniso_perturb_{direction}_acc_lo_d{cut}": "lower end of its 95% interval over draws (t, logit scale: in [0, 1])",
    "aniso_perturb_{direction}_acc_hi_d{cut}": "upper end of its 95% interval over draws (t, logit scale: in [0, 1])",
    "aniso_perturb_{direction}_acc": "mean over cuts of aniso_perturb_{direction}_acc_d{cut}",
    "gm_param_norm": "||θ_T|| (`baselines.param_norm`)",
    "gm_dist_init": (
        "||θ_T - θ_0|| (`baselines.dist_from_init`); θ_0 is the step-0 checkpoint whatever `checkpoints` selects, "
        "NaN (with a warning) when the run logged none"
    ),
    "gm_log_spectral_product": "log Π_l ||A_l||_2, exact operator norms (`baselines.log_spectral_product`)",
    "gm_margin": "10th percentile of the output margin on training samples (`baselines.margin`)",
    "gm_train_loss": "mean training cross-entropy (`baselines.loss`)",
    "gm_sharpness": "1/σ², σ the largest magnitude-aware noise raising the loss by ≤ 0.1 (`baselines.sharpness`)",
    "gm_disagreement": "fraction of test inputs where two seeds' networks disagree (`baselines.disagreement`)",
    "gm_js_disagreement": "mean over test inputs of the Jensen-Shannon divergence in bits between two seeds' "
    "softmax outputs (`divergence.mean_js`): the soft gm_disagreement (equal to it for one-hot outputs)",
    "gm_sum_train_loss": "learning speed: the MEAN over the run's epochs of its per-epoch train_loss (a mean, not "
    "Ru et al.'s sum over a fixed budget, so that runs stopped at target_loss after different epochs compare; "
    "`learning_speed.mean_train_loss`); needs the run's logged training curve",
    "gm_steps_to_criterion": "optimizer steps until train_eval_loss first reached target_loss "
    "(`learning_speed.steps_to_criterion`; only for runs with a target_loss; NaN, with a warning, when never)",
    "{gm}_seconds": "wall time of {gm}",
    "gm_sharpness_evals": "σ values the gm_sharpness search tried (each: `draws` forwards over the train samples)",
    "{gm}_cost_epochs": "{gm}_seconds / the run's seconds per training epoch",
    "tc_mmd_d{cut}": "MMD² between window features of the train samples and final features of the test samples "
    "(`analysis.mmd.mmd_measures`)",
    "tc_mmd": "mean over cuts of tc_mmd_d{cut}",
    "tc_mmd_seconds": "wall time of tc_mmd",
    "tc_test_cheap_k{k}_n{n}": "sweep only: tc_test from k window checkpoints and n test samples "
    "(`analysis.surrogates.cheap_scores`)",
    "tc_test_cheap_k{k}_n{n}_seconds": "sweep only: wall time of tc_test_cheap_k{k}_n{n}",
    "{measure}_seed_sd": "sweep with seeds=2 and analysis=measures or full: |a - b| / sqrt(2) of a measure over "
    "the two seeds (`tc.sweep.trial.seed_spread`)",
    "corr_spearman_{measure}": "sweep run: Spearman ρ of the measure with test accuracy over the trials",
    "corr_kendall_{measure}": "sweep run: Kendall τ-b of the measure with test accuracy over the trials",
    "n_trials_converged": "sweep run: trials in the correlations: those whose seeds all reached target_loss (all "
    "completed trials, without target_loss)",
    "n_trials_not_converged": "sweep run: trials that hit the epoch cap first (left out of the correlations)",
}

# The range of each metric's values, pattern -> (low, high) with ±inf for an open end: one entry per METRICS
# pattern (tests/test_metrics.py checks both, and that every logged value lies in its range). Intervals over
# seeds stay inside it (`tc.stats.replicates.t_interval`); the report reads it with `metric_range`.
UNIT, SIGNED, NONNEGATIVE, UNBOUNDED = (0.0, 1.0), (-1.0, 1.0), (0.0, math.inf), (-math.inf, math.inf)
RANGES: dict[str, tuple[float, float]] = {
    "tc_{split}_d{cut}": UNIT,
    "tc_{split}": UNIT,
    "tc_{split}_random_shallow_d{cut}": UNIT,
    "tc_{split}_random_shallow": UNIT,
    "tc_{split}_{phase}": UNIT,
    "tc_kappa_{split}_{phase}": SIGNED,  # Cohen's κ lies in [-1, 1]
    "tc_full_{split}_{phase}": UNIT,
    "tc_kappa_{split}_d{cut}": SIGNED,
    "tc_kappa_{split}": SIGNED,
    "tc_js_{split}_d{cut}": UNIT,  # JS in bits lies in [0, 1]
    "tc_js_{split}": UNIT,
    "err_hat_tc_{split}": UNIT,
    "err_hat_full_{split}": UNIT,
    "tc_full_{split}": UNIT,
    "tc_gain_{split}": SIGNED,  # a difference of two agreement rates in [0, 1]
    # 1 at most; the floor bounds it below by -1 / EXCESS_FLOOR, but the range stays open below as it was stated
    # before the floor, so that intervals over stored values keep their published scale
    "tc_excess_{split}": (-math.inf, 1.0),
    "tc_window_checkpoints": NONNEGATIVE,
    "acc_{split}": UNIT,
    "drift_{split}_d{cut}": NONNEGATIVE,
    "drift_{split}": NONNEGATIVE,
    "half_life_{split}": NONNEGATIVE,
    "tc_corrupt_{corruption}": UNIT,
    "tc_test_crossseed_d{cut}": UNIT,
    "tc_test_crossseed": UNIT,
    "bf16_agreement": UNIT,
    "analysis_seconds": NONNEGATIVE,
    "tc_{split}_seconds": NONNEGATIVE,
    "controls_seconds": NONNEGATIVE,
    "splits_seconds": NONNEGATIVE,
    "tc_cost_epochs": NONNEGATIVE,
    "anisotropy_seconds": NONNEGATIVE,
    "aniso_grad_seconds": NONNEGATIVE,
    "aniso_features_seconds": NONNEGATIVE,
    "aniso_stats_seconds": NONNEGATIVE,
    "aniso_perturb_seconds": NONNEGATIVE,
    "aniso_{kind}_topk_var_d{cut}": UNIT,
    "aniso_{kind}_topk_var": UNIT,
    "aniso_{kind}_eff_rank_d{cut}": (1.0, math.inf),  # (Σλ)² / Σλ² >= 1 for λ >= 0
    "aniso_{kind}_eff_rank": (1.0, math.inf),
    "aniso_{kind}_pvalue_d{cut}": UNIT,
    "aniso_{kind}_lw_pvalue_d{cut}": UNIT,
    "aniso_{kind}_min_pvalue": UNIT,
    "aniso_{kind}_lw_min_pvalue": UNIT,
    "aniso_perturb_clean_acc_d{cut}": UNIT,
    "aniso_perturb_clean_acc": UNIT,
    "aniso_perturb_{direction}_acc_d{cut}": UNIT,
    # the ends of an interval over draws kept in [0, 1] (`tc.analysis.anisotropy.perturbation_summary`)
    "aniso_perturb_{direction}_acc_lo_d{cut}": UNIT,
    "aniso_perturb_{direction}_acc_hi_d{cut}": UNIT,
    "aniso_perturb_{direction}_acc": UNIT,
    "gm_param_norm": NONNEGATIVE,
    "gm_dist_init": NONNEGATIVE,
    "gm_log_spectral_product": UNBOUNDED,
    "gm_margin": UNBOUNDED,  # a margin is negative on a misclassified sample
    "gm_train_loss": NONNEGATIVE,
    "gm_sharpness": NONNEGATIVE,
    "gm_disagreement": UNIT,
    "gm_js_disagreement": UNIT,
    "gm_sum_train_loss": NONNEGATIVE,
    "gm_steps_to_criterion": NONNEGATIVE,
    "{gm}_seconds": NONNEGATIVE,
    "gm_sharpness_evals": NONNEGATIVE,
    "{gm}_cost_epochs": NONNEGATIVE,
    "tc_mmd_d{cut}": UNBOUNDED,  # the unbiased MMD² estimate can be negative
    "tc_mmd": UNBOUNDED,
    "tc_mmd_seconds": NONNEGATIVE,
    "tc_test_cheap_k{k}_n{n}": UNIT,
    "tc_test_cheap_k{k}_n{n}_seconds": NONNEGATIVE,
    "{measure}_seed_sd": NONNEGATIVE,
    "corr_spearman_{measure}": SIGNED,
    "corr_kendall_{measure}": SIGNED,
    "n_trials_converged": NONNEGATIVE,
    "n_trials_not_converged": NONNEGATIVE,
    # what an analysis actually used (counts): see the reductions in docs/analyze.md
    "n_samples_{split}": NONNEGATIVE,
    "n_checkpoints": NONNEGATIVE,
    "n_grad_batches": NONNEGATIVE,
    "n_drift_pairs_d{cut}": NONNEGATIVE,
    "n_cuts_{test}": NONNEGATIVE,
    "n_measures_skipped": NONNEGATIVE,
    "n_calibration_batches": NONNEGATIVE,
}
# The training metrics the report reads (entrypoints/train.py describes them), by exact name.
TRAINING_RANGES: dict[str, tuple[float, float]] = {
    "test_acc": UNIT,
    "train_acc": UNIT,
    "train_eval_acc": UNIT,
    "train_acc_clean": UNIT,
    "test_loss": NONNEGATIVE,
    "train_loss": NONNEGATIVE,
    "train_eval_loss": NONNEGATIVE,
    "epochs_trained": NONNEGATIVE,
}


PLACEHOLDERS = {
    "split": "train|test|corrupt",
    "cut": r"\d+",
    "k": r"\d+",
    "n": r"\d+",
    "kind": "drift|grad",
    "test": "drift|grad|perturb",
    "direction": "top|random|bottom",
    "phase": "early|middle|late",
    "corruption": "|".join(sorted(CORRUPTIONS)),
    "gm": "|".join(GM),
    "measure": r"(?:tc|drift|half_life|aniso|gm)_\w+",
}


def _regex(pattern: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", pattern)  # literal, name, literal, name, ...
    body = "".join(re.escape(p) if i % 2 == 0 else f"(?:{PLACEHOLDERS[p]})" for i, p in enumerate(parts))
    return re.compile(f"^{body}$")


def patterns_of(key: str) -> list[str]:
    """The METRICS patterns that `key` matches (exactly one for every metric tc logs)."""
    return [p for p in METRICS if _regex(p).match(key)]


def markdown_table() -> str:
    """METRICS as a Markdown table: docs/analyze.md's (`scripts/gen_docs.py` writes it there)."""
    rows = [f"| `{p}` | {m.replace('|', chr(92) + '|')} |" for p, m in METRICS.items()]
    return "\n".join(["| metric | meaning |", "|---|---|", *rows])


def mean_over_cuts(metrics: dict[str, float], prefix: str, cuts: Sequence[int]) -> float | None:
    """{prefix} = mean_{cut} metrics[{prefix}_d{cut}] over the cuts where it was computed (a cut may lack the
    units or the drift a statistic needs); None when no cut has it. The one aggregation over cuts."""
    values = [metrics[f"{prefix}_d{c}"] for c in cuts if f"{prefix}_d{c}" in metrics]
    return float(np.mean(values)) if values else None


def add_means_over_cuts(metrics: dict[str, float], prefixes: Sequence[str], cuts: Sequence[int]) -> None:
    """metrics[prefix] = `mean_over_cuts(metrics, prefix, cuts)` for each prefix some cut has."""
    for prefix in prefixes:
        mean = mean_over_cuts(metrics, prefix, cuts)
        if mean is not None:
            metrics[prefix] = mean


def metric_range(name: str) -> tuple[float, float]:
    """The range (low, high) of metric `name`'s values: `TRAINING_RANGES` by name, else the `RANGES` entry of
    the one METRICS pattern it matches. ValueError for a name that is neither: a range is never guessed."""
    if name in TRAINING_RANGES:
        return TRAINING_RANGES[name]
    patterns = patterns_of(name)
    if len(patterns) != 1:
        raise ValueError(f"metric {name!r} matches {len(patterns)} patterns of METRICS ({patterns}): no range")
    return RANGES[patterns[0]]
