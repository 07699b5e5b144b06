"""Temporal-consistency analysis of a training run's checkpoints, logged back to that run.

    mlflow run . --env-manager local -e analyze -P run_id=<training run id>

Downloads the run's checkpoints through MLflow (cached under $TC_CACHE_DIR/checkpoints/<run id>/, every file
checked against the sha256 in checkpoints/index.json), computes every metric of `tc.analysis.run.analyze_run`
(`tc.analysis.registry.METRICS` lists them with their meanings) and logs them to the *training* run, with (under
analysis/v<N>/, a new version each time; the tag tc.analysis_version names the current one) the tidy CSV
tables, summary.json and figures. A tc window of fewer than 3 checkpoints tags the run tc.window_warning.
Refuses a run that is not FINISHED unless allow_unfinished=true. The analyze run itself is tagged
tc.source_run_id and links to the training run. The job is `tc.tracking.jobs.analyze_job` (the sweep's trials
and the report analyze through it too).

The run's data set is read where you say (-P data_dir=DIR, -P download=true, $TC_DATA_DIR, tc's cache), never
where the run says: a run trained with -P data_dir=/data/mine is analyzed with -P data_dir=/data/mine.

A refused analysis (a bad parameter, a run it cannot use) exits 2, leaves the training run untouched, and leaves
one FAILED run named `refused: <reason>`, the whole message in its tag `tc.error` (`tc.tracking.refusals`).
"""

from __future__ import annotations

import os
import sys

from tc.config import AnalyzeConfig, parse_args
from tc.tracking import refusals
from tc.tracking.access import exit_on_refusal
from tc.tracking.client import use_default_experiment
from tc.tracking.jobs import ANALYZE_REFUSALS, analyze_job


@exit_on_refusal("tc analyze")  # the server's 401/403: one line, exit 1 (tc.tracking.access)
def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        cfg = parse_args(AnalyzeConfig, argv, description=__doc__.splitlines()[0])
    except ValueError as e:  # one FAILED run named `refused: ...`, exit 2 (tc.tracking.refusals)
        return refusals.refuse("analyze", e)
    use_default_experiment()
    try:  # in the run `mlflow run` made (MLFLOW_RUN_ID), or a new one
        done = analyze_job(cfg)
    except ANALYZE_REFUSALS as e:  # the job named its own run `refused: ...`, tagged tc.error, ended it FAILED
        print(f"tc analyze: {refusals.error_text(e, ANALYZE_REFUSALS)}", file=sys.stderr)  # as its tag: masked
        return refusals.exit_code(e)
    for line in done.lines():
        print(f"tc analyze: {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
