"""Reproduce the paper's claims and test consistency as a generalization predictor: docs/REPORT.md.

    mlflow run . --env-manager local -e report                    # the full report (2 CPUs: see docs/REPORT.md)
    mlflow run . --env-manager local -e report -P quick=true      # a smoke version on digits (minutes)

Nested runs of this run: the seeded experiments (`tc.report.training_runs`, `.analyses`) by the train and
analyze entry points' own path, in this process (`tc.runs.train_nested`, `.analyze_nested`: ~60 runs pay no
process start); the correlations by the sweep entry point, rerun until its study holds the asked number of
converged trials. `tc.report.write` puts REPORT.md, figures and tables in `out_dir` (default docs/).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import mlflow

from tc import report, tracking
from tc import runs as tc_runs
from tc.config import AnalyzeConfig, TrainConfig, from_strings

ROOT = Path(__file__).resolve().parents[1]


def _run(entry: str, params: dict) -> str:
    experiment = mlflow.active_run().info.experiment_id
    return mlflow.projects.run(
        str(ROOT), entry, parameters=_strings(params), env_manager="local", experiment_id=experiment
    ).run_id


def _figure(run_id: str, name: str, fig_dir: Path, as_name: str) -> str:
    path = tracking.client().download_artifacts(
        run_id, f"{tracking.analysis_dir(run_id)}/{name}", str(fig_dir / ".tmp")
    )
    shutil.move(path, fig_dir / as_name)
    return f"report/{as_name}"


def _timed(timing: dict, key: str, fn, *args):
    t0 = time.time()
    out = fn(*args)
    timing[key] = timing.get(key, 0.0) + time.time() - t0
    return out


def _strings(params: dict) -> dict[str, str]:
    return {k: str(v) for k, v in params.items()}


def _sweep(s: report.Settings, study: str, timing: dict) -> str:
    """Run the sweep until its study holds `s.n_trials` converged trials (a rerun adds trials to the study;
    at most 3 rounds): the last sweep run's id, whose tables cover every trial of the study."""
    asked = s.n_trials
    for _ in range(3):
        sweep_id = _timed(timing, "sweep", _run, "sweep", report.sweep_parameters(s, study, asked))
        converged = int(tracking.get_run(sweep_id).data.metrics.get("n_trials_converged", 0))
        if converged >= s.n_trials:
            break
        asked += s.n_trials - converged + 2
        print(f"tc report: {converged} converged trials of {s.n_trials}; asking for {asked} in all", flush=True)
    return sweep_id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", default="false")
    ap.add_argument("--trials", default="48")
    ap.add_argument("--out_dir", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    s = report.settings(args.quick.lower() in ("true", "1", "yes"), int(args.trials), ROOT)
    out, t_start, timing, metrics = Path(args.out_dir), time.time(), {}, {}
    figs = out / "report"
    figs.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(run_name="tc-report"):
        runs = {}
        for key, params in report.training_runs(s).items():
            cfg = from_strings(TrainConfig, _strings(params))
            runs[key] = _timed(timing, f"train {key.split('/')[0]}", tc_runs.train_nested, cfg)
        for name, key, params in report.analyses(s, runs):
            cfg = from_strings(AnalyzeConfig, _strings({"run_id": runs[key], **params}))
            _timed(timing, f"analyze {name.split('/')[0]}", tc_runs.analyze_nested, cfg)
            metrics[name] = tracking.get_run(runs[key]).data.metrics
        fig = {k: _figure(runs["base/s0"], f, figs, f"base_{f}") for k, f in report.BASE_FIGURES.items()}
        sweep_id = _sweep(s, f"tc-report-{int(t_start)}", timing)
        trials, corr = report.sweep_tables(Path(tracking.client().download_artifacts(sweep_id, "", str(figs / ".t"))))
        costs = report.epoch_costs(
            [(tracking.get_run(r).data.metrics, tracking.seconds_per_epoch(r)) for r in trials["run_id"]]
        )
        results = report.Results(s, metrics, fig, trials, corr, costs, timing, time.time() - t_start)
        mlflow.log_artifact(str(report.write(results, out)))
        mlflow.log_dict({"runs": runs, "sweep_run_id": sweep_id, "timing_s": timing}, "report_runs.json")
    print(f"tc report: wrote {out / 'REPORT.md'} in {(time.time() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
