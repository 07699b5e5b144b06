"""Reproduce the paper's claims and test consistency as a generalization predictor: docs/REPORT.md.

    mlflow run . --env-manager local -e report                    # the full report (2 CPUs: see docs/REPORT.md)
    mlflow run . --env-manager local -e report -P quick=true      # a smoke version on digits (minutes)
    python entrypoints/report.py --rerender true                  # re-render docs/REPORT.md from its tables

Nested runs of this run: the seeded experiments (`tc.report.training_runs`, `.analyses`) by the train and
analyze entry points' own path, in this process (`tc.runs.train_nested`, `.analyze_nested`: ~60 runs pay no
process start); the correlations by the sweep entry point, rerun until its study holds the asked number of
converged trials. `tc.report.write` puts REPORT.md, figures and tables in `out_dir` (default docs/). A sweep
that fails, or ends with fewer than 3 converged trials, still gives a report that says so.

`--rerender true` runs nothing: it re-renders the verdict tables and the sweep's section of `out_dir`/REPORT.md
from the stored tables in `out_dir`/report (`tc.report.write_rerendered`), with today's date in its header.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

from tc import report, tracking
from tc import runs as tc_runs

ROOT = Path(__file__).resolve().parents[1]


def _run(entry: str, params: dict) -> str:
    experiment = mlflow.active_run().info.experiment_id
    return mlflow.projects.run(
        str(ROOT), entry, parameters=report.as_strings(params), env_manager="local", experiment_id=experiment
    ).run_id


def _figure(run_id: str, name: str, fig_dir: Path, as_name: str) -> str:
    """Download the run's current-analysis figure `name` into `fig_dir` as `as_name`; the download goes
    through a temporary directory, so no `analysis/v<N>/` folder stays behind."""
    with tempfile.TemporaryDirectory() as tmp:
        path = tracking.client().download_artifacts(run_id, f"{tracking.analysis_dir(run_id)}/{name}", tmp)
        shutil.move(path, fig_dir / as_name)
    return f"report/{as_name}"


def _timed(timing: dict, key: str, fn, *args):
    t0 = time.time()
    out = fn(*args)
    timing[key] = timing.get(key, 0.0) + time.time() - t0
    return out


def _sweep(s: report.Settings, study: str, timing: dict) -> str:
    """Run the sweep until its study holds `s.n_trials` converged trials (a rerun adds trials to the study;
    at most 3 rounds): the last sweep run's id, whose tables cover every trial of the study (fewer converged
    trials than asked when the rounds ran out)."""
    asked = s.n_trials
    for _ in range(3):
        sweep_id = _timed(timing, "sweep", _run, "sweep", report.sweep_parameters(s, study, asked))
        converged = int(tracking.get_run(sweep_id).data.metrics.get("n_trials_converged", 0))
        if converged >= s.n_trials:
            break
        asked += s.n_trials - converged + 2
        print(f"tc report: {converged} converged trials of {s.n_trials}; asking for {asked} in all", flush=True)
    return sweep_id


def sweep_results(sweep_id: str, fig_dir: Path):
    """(trials, correlations, costs) of a finished sweep run, its figures moved into `fig_dir`; the download
    goes through a temporary directory. Fewer than 3 converged trials: no correlations, no figures."""
    with tempfile.TemporaryDirectory() as tmp:
        art = Path(tracking.client().download_artifacts(sweep_id, "", tmp))
        trials, corr = report.sweep_tables(art, fig_dir)
    costs = {}
    if "run_id" in trials:
        costs = report.epoch_costs(
            [(tracking.get_run(r).data.metrics, tracking.seconds_per_epoch(r)) for r in trials["run_id"].dropna()]
        )
    return trials, corr, costs


def rerender(out: Path, on: str) -> list[str]:
    """Re-render `out`/REPORT.md from its stored tables (the full report's settings and the sweep's space)."""
    from tc import studies

    s = report.settings(False, 48, ROOT)
    space = studies.fitted_space(report.sweep_config(s))
    return report.write_rerendered(out, s, space, on)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", default="false")
    ap.add_argument("--trials", default="48")
    ap.add_argument("--out_dir", default=str(ROOT / "docs"))
    ap.add_argument("--rerender", default="false", help="true: re-render out_dir/REPORT.md from its stored tables")
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    if args.rerender.lower() in ("true", "1", "yes"):
        changes = rerender(out, datetime.date.today().isoformat())
        print(f"tc report: re-rendered {out / 'REPORT.md'}; verdicts changed: {changes or 'none'}")
        return 0
    s = report.settings(args.quick.lower() in ("true", "1", "yes"), int(args.trials), ROOT)
    t_start, timing, metrics = time.time(), {}, {}
    figs = out / "report"
    figs.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(run_name="tc-report"):
        runs = {}
        for key, params in report.training_runs(s).items():
            cfg = report.train_config(params)
            runs[key] = _timed(timing, f"train {key.split('/')[0]}", tc_runs.train_nested, cfg)
        for name, key, params in report.analyses(s, runs):
            cfg = report.analyze_config(params, runs[key])
            _timed(timing, f"analyze {name.split('/')[0]}", tc_runs.analyze_nested, cfg)
            metrics[name] = tracking.get_run(runs[key]).data.metrics
        fig = {k: _figure(runs["base/s0"], f, figs, f"base_{f}") for k, f in report.BASE_FIGURES.items()}
        for name in report.SWEEP_FIGURES.values():  # an earlier report's: this one links only what its sweep made
            (figs / name).unlink(missing_ok=True)
        sweep_id, error = None, ""
        try:
            sweep_id = _sweep(s, f"tc-report-{int(t_start)}", timing)
            trials, corr, costs = sweep_results(sweep_id, figs)
        except mlflow.exceptions.ExecutionException as e:  # the sweep run failed: the report says so
            trials, corr, costs, error = pd.DataFrame(), pd.DataFrame(), {}, str(e)[:500]
        fig |= report.sweep_figures(figs)
        machine = report.describe_machine(report.train_config(s.base).device)
        results = report.Results(
            s, metrics, fig, trials, corr, costs, timing, time.time() - t_start, machine, sweep_error=error
        )
        mlflow.log_artifact(str(report.write(results, out)))
        mlflow.log_dict({"runs": runs, "sweep_run_id": sweep_id, "timing_s": timing}, "report_runs.json")
    print(f"tc report: wrote {out / 'REPORT.md'} in {(time.time() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
