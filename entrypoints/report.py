"""Reproduce the paper's claims and test consistency as a generalization predictor: docs/REPORT.md.

    mlflow run . --env-manager local --experiment-name tc -e report                # the full report (docs/REPORT.md)
    mlflow run . --env-manager local --experiment-name tc -e report -P quick=true  # a smoke version (minutes)
    python entrypoints/report.py --rerender true                  # re-render docs/REPORT.md from its tables

`tc.report.produce.produce` runs the report inside this run: the seeded experiments
(`tc.report.experiments.training_runs`, `.analyses`) as nested runs by the train and analyze entry points' own
path, in this process (`tc.tracking.jobs.train_job`, `.analyze_job`: ~60 runs pay no process start); the
correlations by the sweep entry point, rerun until its study holds the asked number of converged trials.
`tc.report.files.write` puts REPORT.md, figures and tables in `out_dir` (default docs/). A sweep that fails
(any exception: its type and message are stored with the tables), or ends with fewer than 3 converged trials,
still gives a report that says so.

`--rerender true` runs nothing: it re-renders the verdict tables and the sweep's section of `out_dir`/REPORT.md
from the stored tables in `out_dir`/report (`tc.report.files.write_rerendered`), with today's date in its
header. The settings come from the stored report/settings.json (so `--quick` and `--trials` do not apply:
other than their defaults, they are refused); without that file it refuses. A refused command exits 2 and leaves
one FAILED run named `refused: <reason>`, the whole message in its tag `tc.error` (`tc.tracking.refusals`).
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

import mlflow

from tc.config import ReportConfig, parse_args
from tc.report import experiments, files, produce
from tc.tracking import refusals
from tc.tracking.access import exit_on_refusal

ROOT = Path(__file__).resolve().parents[1]


def _launch(entry: str, params: dict[str, str]) -> str:
    """Entry point `entry` of this project as a child `mlflow run` of the active run: its run id."""
    experiment = mlflow.active_run().info.experiment_id
    return mlflow.projects.run(
        str(ROOT), entry, parameters=params, env_manager="local", experiment_id=experiment
    ).run_id


@exit_on_refusal("tc report")  # the server's 401/403: one line, exit 1 (tc.tracking.access)
def main(argv: list[str] | None = None) -> int:
    try:  # a re-render with quick or trials other than their defaults is refused here (ReportConfig)
        cfg = parse_args(ReportConfig, argv, description=__doc__.splitlines()[0])
    except ValueError as e:  # one FAILED run named `refused: ...`, exit 2 (tc.tracking.refusals)
        return refusals.refuse("report", e)
    out = Path(cfg.out_dir) if cfg.out_dir is not None else ROOT / "docs"
    if cfg.rerender:
        try:
            changes = files.write_rerendered(out, datetime.date.today().isoformat())
        except ValueError as e:
            return refusals.refuse("report", f"cannot re-render {out / 'REPORT.md'}: {e}")
        print(f"tc report: re-rendered {out / 'REPORT.md'}; verdicts changed: {changes or 'none'}")
        return 0
    s = experiments.settings(cfg.quick, cfg.trials, ROOT)
    t_start = time.time()
    with mlflow.start_run(run_name="tc-report") as run:
        produce.produce(s, out, run.info.run_id, _launch)
    print(f"tc report: wrote {out / 'REPORT.md'} in {(time.time() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
