"""The report run: every experiment of `tc.report.experiments` trained and analyzed as a nested MLflow run of
the report run (the train and analyze entry points' own path, in this process: `tc.tracking.jobs`), the base
run's figures downloaded, one sweep per environment run until enough trials converged, and the report written
(`tc.report.files.write`) and logged. MLflow only through `tc.tracking`; the one thing it cannot do, starting
an entry point of this project as an `mlflow run` (the sweep), comes in as `launch` from the entry point."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tc.report import experiments
from tc.report.costs import run_costs
from tc.report.environments import Environment
from tc.report.experiments import BASE_FIGURES, Settings
from tc.report.files import clear_sweep_figures, report_dir, sweep_figures, sweep_tables, write
from tc.report.results import Results, SweepResult
from tc.tracking import analyses, client
from tc.tracking.jobs import analyze_job, train_job

# Starts entry point `entry` of this project as a child `mlflow run` of the active run, with these parameters
# (strings, as MLflow passes them): its run id.
Launch = Callable[[str, dict[str, str]], str]


def download_figure(run_id: str, name: str, fig_dir: Path, as_name: str) -> str:
    """Download the run's current-analysis figure `name` into `fig_dir` as `as_name`; the download goes
    through a temporary directory, so no `analysis/v<N>/` folder stays behind."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.client().download_artifacts(run_id, f"{analyses.analysis_dir(run_id)}/{name}", tmp)
        shutil.move(path, fig_dir / as_name)
    return f"report/{as_name}"


def timed(timing: dict, key: str, fn: Callable, *args: Any) -> Any:
    """`fn(*args)`, its seconds added to `timing[key]`."""
    t0 = time.time()
    out = fn(*args)
    timing[key] = timing.get(key, 0.0) + time.time() - t0
    return out


def sweep_until_converged(s: Settings, study: str, timing: dict, launch: Launch, env: Environment | None = None) -> str:
    """Run one environment's sweep (`env`; default the first) until its study holds `experiments.trials_for`
    converged trials (a rerun adds trials to the study; at most 3 rounds): the last sweep run's id, whose tables
    cover every trial of the study (fewer converged trials than asked when the rounds ran out)."""
    env = env if env is not None else s.environments[0]
    wanted = asked = experiments.trials_for(s, env)
    for _ in range(3):
        params = experiments.as_strings(experiments.sweep_parameters(s, study, asked, env))
        sweep_id = timed(timing, f"sweep {env.name}", launch, "sweep", params)
        converged = int(client.get_run(sweep_id).data.metrics.get("n_trials_converged", 0))
        if converged >= wanted:
            break
        asked += wanted - converged + 2
        print(f"tc report: {env.name}: {converged} converged trials of {wanted}; asking for {asked}", flush=True)
    return sweep_id


def sweep_results(sweep_id: str, fig_dir: Path, env: str = "") -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """(trials, correlations, costs in training runs: `run_costs`) of a finished sweep run, its figures moved into
    `fig_dir` (named after `env`: `tc.report.files.sweep_figure_names`); the download goes through a temporary
    directory. Fewer than 3 converged trials: no correlations, no figures."""
    with tempfile.TemporaryDirectory() as tmp:
        art = Path(client.client().download_artifacts(sweep_id, "", tmp))
        trials, corr = sweep_tables(art, fig_dir, env)
    costs = {}
    if "run_id" in trials:
        ids = list(trials["run_id"].dropna())
        # each trial's second seed (seeds=2) is one more training run: what gm_disagreement, gm_js_disagreement,
        # the cross-seed control and the seed spreads cost beyond their own computation
        seeds = 2 if any(client.seed_runs(r) for r in ids[:1]) else 1
        costs = run_costs([(client.get_run(r).data.metrics, client.seconds_per_epoch(r)) for r in ids], seeds)
    return trials, corr, costs


def run_sweep(s: Settings, study: str, timing: dict, figs: Path, launch: Launch, env: Environment | None = None):
    """One environment's sweep (`env`; default the first) and its tables, as a `SweepResult` (with the sweep run's
    id beside it). Any exception from fitting the space, the sweep runs or reading their results (an MLflow, Optuna
    or programming error alike) is that environment's failure, not the report's: its `type: message` is the
    result's error (the report then says "The sweep failed: ..."), with empty tables; the other environments still
    run and report."""
    from tc.sweep.space import fitted_space  # here: optuna loads only when the sweep runs

    env = env if env is not None else s.environments[0]
    cfg = experiments.sweep_config(s, env)
    sweep_id = None
    try:
        space = fitted_space(cfg)
        sweep_id = sweep_until_converged(s, study, timing, launch, env)
        trials, corr, costs = sweep_results(sweep_id, figs, env.name)
    except Exception as e:  # any failure of the sweep: an hour of experiments must still give a report
        return sweep_id, SweepResult(env, pd.DataFrame(), pd.DataFrame(), {}, {}, cfg, f"{type(e).__name__}: {e}"[:500])
    return sweep_id, SweepResult(env, trials, corr, costs, space, cfg, "", sweep_figures(figs, env.name))


def produce(s: Settings, out: Path, report_run_id: str, launch: Launch) -> Path:
    """The report at scale `s`, measured inside the active report run `report_run_id` and written into `out`
    (REPORT.md, and figures and tables in `out`/report): its path. The run gets REPORT.md and
    `report_runs.json` (every run id, each environment's sweep run id, and the seconds of each step)."""
    t_start, timing, metrics = time.time(), {}, {}
    figs = report_dir(out)
    runs = {}
    for key, params in experiments.training_runs(s).items():
        cfg = experiments.train_config(params)
        runs[key] = timed(timing, f"train {key.split('/')[0]}", train_job, cfg)
    for name, key, params in experiments.analyses(s, runs):
        cfg = experiments.analyze_config(params, runs[key])
        timed(timing, f"analyze {name.split('/')[0]}", analyze_job, cfg)
        metrics[name] = client.get_run(runs[key]).data.metrics
    fig = {k: download_figure(runs["base/s0"], f, figs, f"base_{f}") for k, f in BASE_FIGURES.items()}
    clear_sweep_figures(figs)
    sweep_ids, sweeps = {}, []
    for env in s.environments:  # one sweep, one study per environment
        sweep_ids[env.name], done = run_sweep(s, f"tc-report-{int(t_start)}-{env.name}", timing, figs, launch, env)
        sweeps.append(done)
    machine = experiments.describe_machine(experiments.train_config(s.base).device)
    empty = pd.DataFrame()
    results = Results(s, metrics, fig, empty, empty, {}, timing, time.time() - t_start, machine, sweeps=tuple(sweeps))
    path = write(results, out)
    client.client().log_artifact(report_run_id, str(path))
    record = {"runs": runs, "sweep_run_ids": sweep_ids, "timing_s": timing}
    client.client().log_dict(report_run_id, record, "report_runs.json")
    return path
