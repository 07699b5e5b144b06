"""Reproduce the paper's claims and test consistency as a generalization predictor: docs/REPORT.md.

    mlflow run . --env-manager local --experiment-name tc -e report                # the full report (docs/REPORT.md)
    mlflow run . --env-manager local --experiment-name tc -e report -P quick=true  # a smoke version (minutes)
    python entrypoints/report.py --rerender true                  # re-render docs/REPORT.md from its tables

Nested runs of this run: the seeded experiments (`tc.report.training_runs`, `.analyses`) by the train and
analyze entry points' own path, in this process (`tc.tracking.jobs.train_nested`, `.analyze_nested`: ~60 runs pay no
process start); the correlations by the sweep entry point, rerun until its study holds the asked number of
converged trials. `tc.report.write` puts REPORT.md, figures and tables in `out_dir` (default docs/). A sweep
that fails (any exception: its type and message are stored with the tables), or ends with fewer than 3
converged trials, still gives a report that says so.

`--rerender true` runs nothing: it re-renders the verdict tables and the sweep's section of `out_dir`/REPORT.md
from the stored tables in `out_dir`/report (`tc.report.write_rerendered`), with today's date in its header. The
settings come from the stored report/settings.json (so `--quick` and `--trials` do not apply); without that
file it refuses (exit 2).
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

from tc import report
from tc.tracking import analyses, client
from tc.tracking import jobs as tc_runs

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
        path = client.client().download_artifacts(run_id, f"{analyses.analysis_dir(run_id)}/{name}", tmp)
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
        converged = int(client.get_run(sweep_id).data.metrics.get("n_trials_converged", 0))
        if converged >= s.n_trials:
            break
        asked += s.n_trials - converged + 2
        print(f"tc report: {converged} converged trials of {s.n_trials}; asking for {asked} in all", flush=True)
    return sweep_id


def sweep_results(sweep_id: str, fig_dir: Path):
    """(trials, correlations, costs) of a finished sweep run, its figures moved into `fig_dir`; the download
    goes through a temporary directory. Fewer than 3 converged trials: no correlations, no figures."""
    with tempfile.TemporaryDirectory() as tmp:
        art = Path(client.client().download_artifacts(sweep_id, "", tmp))
        trials, corr = report.sweep_tables(art, fig_dir)
    costs = {}
    if "run_id" in trials:
        costs = report.epoch_costs(
            [(client.get_run(r).data.metrics, client.seconds_per_epoch(r)) for r in trials["run_id"].dropna()]
        )
    return trials, corr, costs


def run_sweep(s: report.Settings, study: str, timing: dict, figs: Path) -> tuple:
    """(sweep run id or None, trials, correlations, costs, fitted space, error): the report's sweep and its
    tables. Any exception from fitting the space, the sweep runs or reading their results (an MLflow, Optuna
    or programming error alike) is the sweep's failure, not the report's: its `type: message` is returned as
    the error (the report then says "The sweep failed: ..."), with empty tables."""
    from tc.sweep import study as studies

    sweep_id = None
    try:
        space = studies.fitted_space(report.sweep_config(s))
        sweep_id = _sweep(s, study, timing)
        trials, corr, costs = sweep_results(sweep_id, figs)
    except Exception as e:  # any failure of the sweep: an hour of experiments must still give a report
        return sweep_id, pd.DataFrame(), pd.DataFrame(), {}, {}, f"{type(e).__name__}: {e}"[:500]
    return sweep_id, trials, corr, costs, space, ""


def _yes(text: str) -> bool:
    return text.lower() in ("true", "1", "yes")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", default=None, help="true: the smoke version (default false)")
    ap.add_argument("--trials", default=None, help="converged sweep trials (default 48)")
    ap.add_argument("--out_dir", default=str(ROOT / "docs"))
    ap.add_argument("--rerender", default="false", help="true: re-render out_dir/REPORT.md from its stored tables")
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    if _yes(args.rerender):
        if args.quick is not None or args.trials is not None:
            print("tc report: --rerender reads the settings from report/settings.json; drop --quick/--trials")
            return 2
        try:
            changes = report.write_rerendered(out, datetime.date.today().isoformat())
        except ValueError as e:
            print(f"tc report: cannot re-render {out / 'REPORT.md'}: {e}", file=sys.stderr)
            return 2
        print(f"tc report: re-rendered {out / 'REPORT.md'}; verdicts changed: {changes or 'none'}")
        return 0
    s = report.settings(_yes(args.quick or "false"), int(args.trials or 48), ROOT)
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
            metrics[name] = client.get_run(runs[key]).data.metrics
        fig = {k: _figure(runs["base/s0"], f, figs, f"base_{f}") for k, f in report.BASE_FIGURES.items()}
        for name in report.SWEEP_FIGURES.values():  # an earlier report's: this one links only what its sweep made
            (figs / name).unlink(missing_ok=True)
        sweep_id, trials, corr, costs, space, error = run_sweep(s, f"tc-report-{int(t_start)}", timing, figs)
        fig |= report.sweep_figures(figs)
        machine = report.describe_machine(report.train_config(s.base).device)
        results = report.Results(
            s, metrics, fig, trials, corr, costs, timing, time.time() - t_start, machine, sweep_error=error, space=space
        )
        mlflow.log_artifact(str(report.write(results, out)))
        mlflow.log_dict({"runs": runs, "sweep_run_id": sweep_id, "timing_s": timing}, "report_runs.json")
    print(f"tc report: wrote {out / 'REPORT.md'} in {(time.time() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
