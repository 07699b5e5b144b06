"""Optuna sweep: every trial trains and is analyzed as a nested MLflow run; the sweep run gets the
correlation of each consistency measure with test accuracy and with the generalization gap.

    mlflow run . --env-manager local -e sweep -P n_trials=20 -P study_name=fmnist-tc -P storage=<url or path>

Several workers (processes or machines) that run the same command with the same study_name, storage and
MLFLOW_TRACKING_URI share one study; n_trials counts trials over all of them. Each worker's sweep run logs
the correlations over every trial finished so far. The trial logic is in `tc.studies`, the statistics in
`tc.sweep`.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import mlflow
import optuna

from tc import runinfo, runs, studies, sweep, tracking
from tc.config import SweepConfig, TrainConfig, parse_args
from tc.data import DatasetNotFoundError
from tc.train import DivergenceError


def train_trial(cfg: SweepConfig, trial: optuna.Trial, train_cfg: TrainConfig, run_id: str) -> str | None:
    """Train the trial's run (and, with seeds=2, the same configuration at seed + 1 as a child run: its id)."""
    tracking.log_config(run_id, train_cfg)
    tracking.label_train_run(run_id, train_cfg)
    runs.train_into_run(run_id, train_cfg, callbacks=[studies.Pruning(trial)] if cfg.pruner != "none" else [])
    if cfg.seeds != 2:
        return None
    second = replace(train_cfg, seed=train_cfg.seed + 1)
    tags = {"tc.study": cfg.study_name, "tc.seed_of": run_id}
    with mlflow.start_run(nested=True, run_name=f"seed-{second.seed}", tags=tags) as run:
        tracking.log_config(run.info.run_id, second)
        runs.train_into_run(run.info.run_id, second)
    return run.info.run_id


def objective(cfg: SweepConfig, space: dict, parent_id: str):
    def run_trial(trial: optuna.Trial) -> float:
        studies.start_trial(trial, cfg.n_trials, parent_id)
        values = sweep.suggest(trial, space)
        tags = {"tc.study": cfg.study_name, "tc.trial": str(trial.number), "tc.sweep_run_id": parent_id}
        with mlflow.start_run(nested=True, run_name=runinfo.trial_name(trial.number), tags=tags) as child:
            run_id = child.info.run_id
            trial.set_user_attr("mlflow_run_id", run_id)
            try:
                second_id = train_trial(cfg, trial, TrainConfig(**{**studies.fixed_settings(cfg), **values}), run_id)
            except (DivergenceError, ValueError) as e:  # a failed trial with its reason; the study goes on
                # (ValueError: a sampled combination the data cannot satisfy, e.g. train_size > data set)
                trial.set_user_attr("fail_reason", str(e))
                mlflow.set_tag("tc.error", str(e))
                mlflow.end_run("FAILED")
                print(f"tc sweep: trial {trial.number} failed: {e}", flush=True)
                return math.nan
            except optuna.TrialPruned as e:
                mlflow.set_tag("tc.pruned", str(e))
                mlflow.end_run("KILLED")
                raise
            if cfg.target_loss > 0:  # converged only when every seed reached the criterion (equal fit)
                converged = studies.converged([i for i in (run_id, second_id) if i])
                trial.set_user_attr("converged", converged)
                mlflow.set_tag("tc.converged", str(converged))
                if not converged:
                    print(f"tc sweep: trial {trial.number} reached the epoch cap before target_loss", flush=True)
            acfg = studies.analysis_config(cfg, run_id, second_id)
            studies.analyze_trial(acfg, parent_id, second_id)
            tracking.label_analysis(run_id, None, acfg)
            for key, value in runinfo.trial_attrs(tracking.get_run(run_id).data.metrics).items():
                trial.set_user_attr(key, value)  # shown beside the objective in optuna-dashboard
            return float(tracking.get_run(run_id).data.metrics["test_acc"])

    return run_trial


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        cfg = parse_args(SweepConfig, argv, description=__doc__.splitlines()[0])
        space = studies.fitted_space(cfg)
        sweep.check_space_values(space, studies.fixed_settings(cfg), cfg.search_space or "the default search space")
        where = cfg.storage or studies.default_storage(mlflow.get_tracking_uri())
        storage = sweep.open_storage(where)
    except (ValueError, DatasetNotFoundError) as e:
        print(f"tc sweep: {e}", file=sys.stderr)
        return 2
    sampler = studies.make_sampler(cfg.sampler, space, cfg.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3) if cfg.pruner == "median" else optuna.pruners.NopPruner()
    tracking.use_default_experiment()
    with mlflow.start_run() as parent:
        study = studies.load_or_create(cfg, storage, sampler, pruner)
        tracking.name_run(parent.info.run_id, runinfo.sweep_name(cfg.study_name))
        mlflow.set_tags({"tc.study": cfg.study_name, "tc.storage": where})
        mlflow.log_dict({**asdict(cfg), "search_space": space}, "sweep_config.json")
        if stale := studies.fail_dead_trials(study):
            print(f"tc sweep: trials {stale} of dead workers marked FAILED; they do not count", flush=True)
        print(
            f"tc sweep: study {cfg.study_name!r} has {studies.budget_used(study)} trial(s) that count; this worker "
            f"runs until {cfg.n_trials} in all",
            flush=True,
        )
        budget = cfg.n_trials
        if cfg.sampler == "grid":  # a grid has only so many points
            budget = min(budget, math.prod(len(v) for v in sweep.grid_of(space).values()))
        studies.run_worker(study, objective(cfg, space, parent.info.run_id), budget, cfg.timeout)
        summary = studies.summarize(cfg, space, studies.trials_table(study))
        with tempfile.TemporaryDirectory() as tmp:
            studies.write_summary(summary, Path(tmp))
            mlflow.log_artifacts(tmp)
        mlflow.log_metrics({k: v for k, v in summary.metrics.items() if not math.isnan(v)})
        tracking.describe_sweep_run(parent.info.run_id, cfg.study_name, study)
    if len(summary.capped):
        print(f"tc sweep: {len(summary.capped)} trial(s) never reached target_loss: left out of the correlations")
    if len(summary.trials) < 3:
        print(f"tc sweep: {len(summary.trials)} finished trial(s): too few for correlations", flush=True)
    else:
        t = summary.table
        best = t[t["target"] == "test_acc"].assign(a=lambda d: d["kendall"].abs()).sort_values("a")
        print(best[["measure", "spearman", "kendall", "granulated_kendall", "n_trials"]].tail(8).to_string(index=False))
    print(f"tc sweep: done; sweep run {parent.info.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
