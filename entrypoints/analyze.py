"""Temporal-consistency analysis of a training run's checkpoints, logged back to that run.

    mlflow run . --env-manager local -e analyze -P run_id=<training run id>

Downloads the run's checkpoints through MLflow (cached under $TC_CACHE_DIR/checkpoints/<run id>/, every file
checked against the sha256 in checkpoints/index.json), computes the SPEC section 2-4 quantities and logs to
the *training* run: metrics tc_<split>, tc_<split>_d<cut>, tc_kappa_<split>, tc_full_<split>, tc_excess_<split>,
tc_window_checkpoints (and tag tc.window_warning when the window holds < 3 checkpoints), half_life_<split>,
drift_*, tc_corrupt_<name> (and tc_test_crossseed with reference_run_id), aniso_* (per cut, plus Holm-adjusted
aniso_*_min_pvalue across cuts; see `tc.analysis.anisotropy`), and under analysis/v<N>/ (a new version each
time; the tag tc.analysis_version names the current one) the tidy CSV tables, summary.json and figures.
Refuses a run that is not FINISHED unless allow_unfinished=true. The analyze run itself is tagged
tc.source_run_id and links to the training run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import mlflow

from tc import cache, measures, plots, tracking
from tc import checkpoints as ck
from tc.analysis import (
    AnalysisResult,
    Checkpoints,
    analyze,
    anisotropy,
    make_splits,
    mmd_measures,
    select_steps,
)
from tc.config import AnalyzeConfig, parse_args
from tc.data import DatasetNotFoundError, cache_dir, load_for
from tc.device import resolve_device, resolve_precision
from tc.models import ModelSpec, factory_for
from tc.models import build_model as _build_model
from tc.progress import Periodic

HEADLINE = (
    "tc_train",
    "tc_test",
    "tc_kappa_test",
    "tc_full_test",
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


def load_run_checkpoints(
    run_id: str, expected: ModelSpec, checkpoints: str, factory=None, keep: tuple[str, ...] = ()
) -> Checkpoints:
    """Download, verify and load a run's checkpoints; refuse any whose architecture differs from `expected`.
    With TC_CACHE_MAX_GB set, the cache is then pruned to that size (this run and `keep` stay)."""
    files = tracking.download_checkpoints(run_id, cache_dir() / "checkpoints")
    cache.apply_env_cap((run_id, *keep))
    chosen = set(select_steps(checkpoints, [e.step for e, _ in files]))
    steps, sds, spec = ck.load_series([(e, p) for e, p in files if e.step in chosen])
    if spec != expected.to_dict():
        raise ck.CheckpointError(
            f"run {run_id}: checkpoints are of architecture {spec}, its config says {expected.to_dict()}"
        )
    model = _build_model(expected, factory)
    for step, sd in zip(steps, sds, strict=True):
        try:
            model.load_state_dict(sd)
        except RuntimeError as e:
            raise ck.CheckpointError(
                f"run {run_id}: checkpoint at step {step} does not fit {expected.model}: {str(e)[:300]}"
            ) from e
    return Checkpoints(steps, sds)


def compute(cfg: AnalyzeConfig) -> tuple[AnalysisResult, int]:
    train_cfg = tracking.load_train_config(cfg.run_id)
    data = load_for(train_cfg)
    spec = ModelSpec.of(train_cfg, data)
    factory = factory_for(train_cfg.model, cfg.model)  # a user model's code: only from the command line

    def build_model(s):
        return _build_model(s, factory)

    ckpts = load_run_checkpoints(cfg.run_id, spec, cfg.checkpoints, factory)
    reference = None
    if cfg.reference_run_id:
        reference = load_run_checkpoints(cfg.reference_run_id, spec, "all", factory, keep=(cfg.run_id,))
    print(
        f"tc analyze: run {cfg.run_id}: {len(ckpts.steps)} checkpoints (steps {ckpts.steps[0]}..{ckpts.steps[-1]}), "
        f"splits {cfg.splits}, up to {cfg.max_samples or 'all'} samples each, matrix={cfg.matrix}, "
        f"bn_mode={cfg.bn_mode}, precision={cfg.precision}",
        flush=True,
    )
    from tqdm.auto import tqdm

    splits = make_splits(data, cfg)
    total = sum(len(s.y) for s in splits)
    lines = Periodic(total, "tc analyze", "samples")  # progress when stderr is not a terminal

    with tqdm(total=total, unit="sample", disable=None, leave=False) as bar:

        def progress(n: int) -> None:
            bar.update(n)
            lines.update(n)

        result = analyze(build_model(spec), ckpts, data, cfg, reference, progress=progress, splits=splits)
    if cfg.anisotropy:
        split = next((s for s in splits if s.name == "test"), splits[0])
        t0 = time.perf_counter()
        result.aniso = anisotropy(build_model(spec), ckpts, data, cfg, split, train_cfg.batch_size, train_cfg.seed)
        result.metrics.update(result.aniso.metrics)
        result.metrics["anisotropy_seconds"] = time.perf_counter() - t0
        if "aniso_grad_min_pvalue" not in result.metrics:
            print("tc analyze: gradient noise skipped: the training set has fewer than 3 full minibatches")
    if cfg.measures:
        result.metrics.update(baseline_measures(cfg, spec, ckpts, reference, data, splits, factory))
        named = {s.name: s for s in splits}
        if "train" in named and "test" in named:
            t0 = time.perf_counter()
            result.metrics.update(mmd_measures(build_model(spec), ckpts, cfg, data, named["train"], named["test"]))
            result.metrics["tc_mmd_seconds"] = time.perf_counter() - t0
    per_epoch = tracking.seconds_per_epoch(cfg.run_id)
    if per_epoch:  # what the consistency analysis cost, in the run's own training epochs
        result.metrics["tc_cost_epochs"] = result.metrics["analysis_seconds"] / per_epoch
    return result, ckpts.steps[-1]


def baseline_measures(cfg, spec, ckpts, reference, data, splits, factory=None) -> dict[str, float]:
    """gm_<name> of the final checkpoint on the analysis samples, each with its cost in seconds and in
    training-epoch equivalents (`gm_<name>_cost_epochs`, from this run's own time per epoch)."""

    def model_at(sd):
        m = _build_model(spec, factory)
        m.load_state_dict(sd)
        return m.eval()

    train = next((s for s in splits if s.name == "train"), None)
    test = next((s for s in splits if s.name == "test"), None)
    if train is None:
        print("tc analyze: baseline measures need the train split; skipped")
        return {}
    values, seconds = measures.compute_all(
        model_at(ckpts.state_dicts[-1]),
        model_at(ckpts.state_dicts[0]),
        data.normalize(train.x),
        train.y,
        other=model_at(reference.state_dicts[-1]) if reference is not None else None,
        x_test=data.normalize(test.x) if test is not None else None,
        seed=cfg.seed,
    )
    per_epoch = tracking.seconds_per_epoch(cfg.run_id)
    out = dict(values)
    for name, sec in seconds.items():
        out[f"{name}_seconds"] = sec
        if per_epoch:
            out[f"{name}_cost_epochs"] = sec / per_epoch
    return out


def write_outputs(result: AnalysisResult, cfg: AnalyzeConfig, out: Path) -> None:
    for name in ("matrices", "lags", "drift", "per_sample", "corrupt"):
        getattr(result, name).to_csv(out / f"{name}.csv", index=False)
    (out / "summary.json").write_text(json.dumps({**result.summary, "config": asdict(cfg)}, indent=1))
    figures = {
        "drift_vs_consistency.png": plots.drift_vs_consistency(result.drift),
        "per_sample_kde.png": plots.per_sample_kde(result.per_sample),
    }
    if result.aniso is not None:
        result.aniso.stats.to_csv(out / "anisotropy.csv", index=False)
        result.aniso.spectra.to_csv(out / "anisotropy_spectra.csv", index=False)
        result.aniso.perturb.to_csv(out / "perturbation.csv", index=False)
        figures["anisotropy_spectra.png"] = plots.spectra_vs_null(result.aniso.spectra)
        figures["perturbation.png"] = plots.perturbation_curves(result.aniso.perturb)
    if cfg.matrix == "full":
        figures["consistency_heatmaps.png"] = plots.consistency_heatmaps(result.matrices)
        figures["lag_curves.png"] = plots.lag_curves(result.lags)
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)
        plots.plt.close(fig)


def log_into_run(
    cfg: AnalyzeConfig, result: AnalysisResult, last_step: int, analyze_run_id: str, run_status: str | None = None
) -> int:
    """Write the tables and figures and log them, with the metrics, into the training run `cfg.run_id`, as a
    new analysis version (see `tracking.log_analysis`: any reader sees this analysis whole or the previous
    one). The tags record the run's status when analyzed, the last step seen and `allow_unfinished`."""
    with tempfile.TemporaryDirectory() as tmp:
        write_outputs(result, cfg, Path(tmp))
        config = {**asdict(cfg), "analyze_run_id": analyze_run_id}
        tags = {
            "tc.analysis_last_step": str(last_step),
            "tc.analysis_allow_unfinished": str(cfg.allow_unfinished).lower(),
            **result.summary.get("tags", {}),  # e.g. tc.window_warning: in the same batch as the metrics
        }
        if run_status is not None:
            tags["tc.analysis_run_status"] = run_status
        stale_warning = "tc.window_warning" in tracking.get_run(cfg.run_id).data.tags
        version = tracking.log_analysis(cfg.run_id, Path(tmp), result.metrics, last_step, config, tags)
    for warning in result.summary.get("warnings", []):
        print(f"tc analyze: warning: {warning}", flush=True)
    if stale_warning and "tc.window_warning" not in tags:  # an earlier analysis's warning no longer holds
        tracking.client().delete_tag(cfg.run_id, "tc.window_warning")
    return version


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        cfg = parse_args(AnalyzeConfig, argv, description=__doc__.splitlines()[0])
    except ValueError as e:
        print(f"tc analyze: {e}", file=sys.stderr)
        return 2
    tracking.use_default_experiment()
    with mlflow.start_run() as run:
        mlflow.set_tag("tc.source_run_id", cfg.run_id)
        precision, why = resolve_precision(cfg.precision, resolve_device(cfg.device))
        if why:  # bf16 only where it is native (issue 11): one line, and a tag saying what ran
            print(f"tc analyze: {why}", flush=True)
            mlflow.set_tag("tc.precision_fallback", f"{cfg.precision}->{precision}")
            cfg = replace(cfg, precision=precision)
        try:
            source = tracking.get_run(cfg.run_id)
            if source.info.status != "FINISHED" and not cfg.allow_unfinished:
                raise ValueError(
                    f"run {cfg.run_id} is {source.info.status}, not FINISHED: its checkpoints may stop early "
                    "(resume it first), or pass -P allow_unfinished=true to analyze what it has"
                )
            mlflow.set_tag(
                "mlflow.note.content",
                f"Analysis of training run [{cfg.run_id}]"
                f"(#/experiments/{source.info.experiment_id}/runs/{cfg.run_id}).",
            )
            result, last_step = compute(cfg)
        except (LookupError, ValueError, DatasetNotFoundError) as e:  # CheckpointError is a ValueError
            print(f"tc analyze: {e}", file=sys.stderr)
            mlflow.set_tag("tc.error", str(e)[:5000])
            mlflow.end_run("FAILED")
            return 1
        version = log_into_run(cfg, result, last_step, run.info.run_id, source.info.status)
        tracking.label_analysis(cfg.run_id, run.info.run_id, cfg)
        mlflow.log_dict(result.summary, "summary.json")
    m = result.metrics
    print(
        "tc analyze: " + "  ".join(f"{k} {m[k]:.4f}" for k in HEADLINE if k in m) + f"  [{m['analysis_seconds']:.0f}s]"
    )
    print(
        f"tc analyze: logged to run {cfg.run_id}; open `mlflow ui` and look under its Metrics and "
        f"Artifacts > {tracking.ANALYSIS_DIR}/v{version}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
