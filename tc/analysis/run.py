"""Analyze a run: checkpoints + data + config in, every metric, tidy tables and summary out (no MLflow, no files).

`analyze_run` is the one owner of an analysis. It runs each metric family's module in turn: the temporal-
consistency quantities of SPEC sections 2-4 (`tc.analysis.consistency`), the anisotropy statistics of
section 5 (`tc.analysis.anisotropy`), the baseline generalization measures gm_* (`tc.analysis.baselines`) and
the feature MMD (`tc.analysis.mmd`). `tc.analysis.registry.METRICS` names every metric it logs; the splits it
evaluates are described in `tc.analysis.splits`; `tc.analysis.files` writes its result into a directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from tc.analysis.anisotropy import anisotropy
from tc.analysis.baselines import LEARNING_SPEED, baseline_measures, learning_speed_asked, learning_speed_measures
from tc.analysis.composites import calibration_notes
from tc.analysis.consistency import consistency_analysis
from tc.analysis.controls import control_warnings
from tc.analysis.inputs import RunContext, unlogged_warnings
from tc.analysis.mmd import mmd_measures
from tc.analysis.registry import COSTLY_MEASURES, GM
from tc.analysis.result import AnalysisResult
from tc.analysis.splits import EvalSplit, checkpoint_notes, make_splits, parse_cuts, sample_notes, split_named
from tc.analysis.timing import timed
from tc.config import AnalyzeConfig
from tc.core.checkpoints import Checkpoints
from tc.core.data import DataBundle
from tc.core.device import exact_fp32, resolve_device
from tc.core.progress import progress_bar


def analyze_run(
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    run: RunContext,
    progress: Callable[[int], None] | None = None,
) -> AnalysisResult:
    """Every metric of an analysis of `ckpts` (see `tc.analysis.registry.METRICS`), with its tables and summary.
    `progress(n)` is called as the composite forwards finish n more samples. `cfg.controls=False` leaves out the
    controls of `consistency_analysis` (cross-seed, bf16 agreement): a cheap surrogate is timed alone.
    On CUDA the whole analysis runs with TF32 off (`tc.core.device.exact_fp32`), restored after.
    Where it uses less than asked (samples, checkpoints, BatchNorm calibration batches, gradient minibatches, cuts
    of a test, measures), a line in `result.summary["warnings"]` says so (`analyze_job` prints them) and an `n_*`
    metric counts what it used; fewer than 2 checkpoints, or bn_mode=recalibrate without one full batch, are
    refused (ValueError), and a test with too few units is not run (docs/analyze.md, "Less than asked").

    Example (checkpoints of a loop you ran yourself, analyzed in memory: no MLflow):

    >>> import torch, tc
    >>> from tc.core.data import iterate_batches
    >>> data = tc.load_data("digits", train_size=256)
    >>> _ = torch.manual_seed(0)
    >>> model = tc.build_model(tc.ModelSpec.of(tc.TrainConfig(dataset="digits", model="mlp", width=16), data))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> steps, states = [0], [{k: v.clone() for k, v in model.state_dict().items()}]
    >>> for epoch in range(4):
    ...     for x, y in iterate_batches(data, 32, seed=0, epoch=epoch, augment=False):
    ...         loss = torch.nn.functional.cross_entropy(model(data.normalize(x)), y)
    ...         opt.zero_grad(); loss.backward(); opt.step()
    ...     steps.append(8 * (epoch + 1)); states.append({k: v.clone() for k, v in model.state_dict().items()})
    >>> cfg = tc.AnalyzeConfig(run_id="in-memory", splits="test", max_samples=100, anisotropy=False, measures=False)
    >>> result = tc.analyze_run(tc.Checkpoints(steps, states), data, cfg, tc.RunContext(model, 32, 0))
    >>> 0.0 <= result.metrics["tc_test"] <= 1.5, sorted(result.tables())
    (True, ['corrupt', 'drift', 'lags', 'matrices', 'per_sample'])
    """
    # what the analysis uses where it may use less than asked: counts (n_*) and warnings, before any work
    counts, warnings = checkpoint_notes(ckpts.steps, cfg)  # fewer than 2 checkpoints: refused here
    for notes in (sample_notes, calibration_notes):
        used, said = notes(data, cfg)
        counts.update(used)
        warnings += said
    warnings += unlogged_warnings(run, cfg) + control_warnings(cfg, run)
    with exact_fp32(resolve_device(cfg.device)):  # TF32 off on CUDA: fp32 means fp32 (tc.core.device.exact_fp32)
        seconds: dict[str, float] = {}
        with timed(seconds, "splits_seconds"):  # the subsets and the corruptions
            splits = make_splits(data, cfg)
        result = consistency_analysis(ckpts, data, cfg, run, splits, progress)
        result.metrics.update({**seconds, **counts})
        result.summary["warnings"][:0] = warnings
        if cfg.anisotropy:
            add_anisotropy(result, ckpts, data, cfg, run, splits)
        if cfg.measures:
            with timed(result.metrics, "splits_seconds"):  # the measures' samples where `splits` has none
                samples = measure_samples(data, cfg, splits)
            add_measures(result, ckpts, data, cfg, run, samples)
        if run.seconds_per_epoch:  # what the consistency analysis cost, in the run's own training epochs
            result.metrics["tc_cost_epochs"] = result.metrics["analysis_seconds"] / run.seconds_per_epoch
    return result


def add_anisotropy(
    result: AnalysisResult,
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    run: RunContext,
    splits: list[EvalSplit],
) -> None:
    """Add the anisotropy statistics (`tc.analysis.anisotropy.anisotropy`, on the test split, else the first) to
    `result`: its tables as `result.aniso`, its metrics and `anisotropy_seconds`, and its warnings (a test that
    used less than asked, or that had too little data to run)."""
    split = split_named(splits, "test") or splits[0]
    steps = len(parse_cuts(cfg.cut_spec, run.model)) + 1  # gradient noise, then each cut
    with timed(result.metrics, "anisotropy_seconds"):
        with progress_bar(steps, "tc analyze: anisotropy", unit="step") as tick:
            result.aniso = anisotropy(ckpts, data, cfg, run, split, tick)
        result.metrics.update(result.aniso.metrics)
    result.summary["warnings"] += result.aniso.warnings


def measure_samples(data: DataBundle, cfg: AnalyzeConfig, splits: list[EvalSplit]) -> tuple[EvalSplit, EvalSplit]:
    """The (train, test) samples the measures read: the analysis' own splits where `cfg.splits` has them, else the
    same seeded subsets made here (`make_splits`), so a measure has one value whatever `splits` says. `splits`
    chooses where the consistency scores are computed; the measures of the final checkpoint never needed the train
    split's consistency scores, and a sweep's core analysis (splits=test) computes them without."""
    missing = [name for name in ("train", "test") if split_named(splits, name) is None]
    made = make_splits(data, replace(cfg, splits=",".join(missing))) if missing else []
    train, test = (split_named(splits, name) or split_named(made, name) for name in ("train", "test"))
    assert train is not None and test is not None  # make_splits made each one missing
    return train, test


def add_measures(
    result: AnalysisResult,
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    run: RunContext,
    samples: tuple[EvalSplit, EvalSplit],
) -> None:
    """Add the measures to `result`, on the (train, test) `samples` (`measure_samples`): the baseline measures gm_*
    (`tc.analysis.baselines`), the learning-speed measures gm_sum_train_loss and gm_steps_to_criterion (from the
    run's training curve, `run.history`: no forward pass) and the feature MMD tc_mmd with `tc_mmd_seconds`
    (`tc.analysis.mmd`). `cfg.costly_measures=False` leaves out `COSTLY_MEASURES` (gm_sharpness, tc_mmd): not
    asked, so not counted. `n_measures_skipped`: those asked for (gm_disagreement and gm_js_disagreement only with
    a reference run, the learning-speed ones only with a training curve, gm_steps_to_criterion only for a run with
    a target_loss) but not computed, each named in a warning with the reason."""
    warnings = result.summary["warnings"]
    leave_out = () if cfg.costly_measures else COSTLY_MEASURES
    before = set(result.metrics)
    # a measure its own code cannot compute is named in a warning there
    result.metrics.update(baseline_measures(ckpts, data, cfg, run, samples, warnings, leave_out))
    result.metrics.update(learning_speed_measures(run, warnings))  # from the training curve: no split needed
    if "tc_mmd" not in leave_out:
        with timed(result.metrics, "tc_mmd_seconds"):
            result.metrics.update(mmd_measures(ckpts, data, cfg, run, samples))
    pair = ("gm_disagreement", "gm_js_disagreement")  # they need a reference run (another seed)
    asked = [
        m
        for m in (*GM, "tc_mmd")
        if (m not in pair or run.reference is not None) and m not in LEARNING_SPEED and m not in leave_out
    ]
    missing = [m for m in asked if m not in set(result.metrics) - before]
    # the learning-speed measures: asked for with a training curve; not computed ones are named by their own code
    missing += [m for m in learning_speed_asked(run) if m not in result.metrics]
    result.metrics["n_measures_skipped"] = float(len(missing))
