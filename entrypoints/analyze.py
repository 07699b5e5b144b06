"""Temporal-consistency analysis of a training run's checkpoints, logged back to that run.

    mlflow run . --env-manager local -e analyze -P run_id=<training run id>

Downloads the run's checkpoints through MLflow (cached under $TC_CACHE_DIR/checkpoints/<run id>/, every file
checked against the sha256 in checkpoints/index.json), computes every metric of `tc.analysis.run.analyze_run`
(`tc.analysis.registry.METRICS` lists them with their meanings) and logs them to the *training* run, with (under
analysis/v<N>/, a new version each time; the tag tc.analysis_version names the current one) the tidy CSV
tables, summary.json and figures. A tc window of fewer than 3 checkpoints tags the run tc.window_warning.
Refuses a run that is not FINISHED unless allow_unfinished=true. The analyze run itself is tagged
tc.source_run_id and links to the training run.

The run's data set is read where you say (-P data_dir=DIR, -P download=true, $TC_DATA_DIR, tc's cache), never
where the run says: a run trained with -P data_dir=/data/mine is analyzed with -P data_dir=/data/mine.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import mlflow

from tc import tracking
from tc.analysis.registry import HEADLINE
from tc.config import AnalyzeConfig, parse_args
from tc.core.data import DatasetNotFoundError
from tc.core.device import resolve_device, resolve_precision
from tc.tracking.jobs import analyze_logged_run


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
            result, last_step = analyze_logged_run(cfg)
            # the write-back refuses too (a marker or pointer that is not tc's): the same one line and tc.error
            version = tracking.log_analysis_result(cfg, result, last_step, run.info.run_id)
        except (LookupError, ValueError, DatasetNotFoundError) as e:  # CheckpointError is a ValueError
            print(f"tc analyze: {e}", file=sys.stderr)
            mlflow.set_tag("tc.error", str(e)[:5000])
            mlflow.end_run("FAILED")
            return 1
        tracking.label_analysis(cfg.run_id, run.info.run_id, cfg)
        mlflow.log_dict(result.summary, "summary.json")
    for warning in result.summary.get("warnings", []):
        print(f"tc analyze: warning: {warning}", flush=True)
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
