"""Optuna sweep: every trial trains and is analyzed as a nested MLflow run; the sweep run gets the
correlation of each consistency measure with test accuracy and with the generalization gap.

    mlflow run . --env-manager local -e sweep -P n_trials=20 -P study_name=fmnist-tc -P storage=<url or path>

Several workers (processes or machines) that run the same command with the same study_name, storage and
MLFLOW_TRACKING_URI share one study; n_trials counts trials over all of them. Each worker's sweep run logs
the correlations over every trial finished so far.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import mlflow
import optuna
import pandas as pd

from tc import plots, runs, studies, sweep, tracking
from tc.analysis import analyze_run
from tc.config import AnalyzeConfig, SweepConfig, TrainConfig, parse_args
from tc.surrogates import cheap_scores
from tc.train import DivergenceError


def objective(cfg: SweepConfig, space: dict, parent_id: str):
    def run_trial(trial: optuna.Trial) -> float:
        trial.set_user_attr(studies.WORKER_ATTR, json.dumps({**tracking.writer_identity(), "at": time.time()}))
        trial.set_user_attr("tc.sweep_run_id", parent_id)
        if studies.budget_used(trial.study, below=trial.number) >= cfg.n_trials:
            # Another worker took the last slot between this worker's budget check and this trial's creation.
            trial.set_user_attr("tc.surplus", "the study had n_trials trials when this one started")
            raise studies.SurplusTrial()
        values = sweep.suggest(trial, space)
        tags = {"tc.study": cfg.study_name, "tc.trial": str(trial.number), "tc.sweep_run_id": parent_id}
        with mlflow.start_run(nested=True, run_name=f"{cfg.study_name}-trial-{trial.number}", tags=tags) as child:
            run_id = child.info.run_id
            trial.set_user_attr("mlflow_run_id", run_id)
            try:
                train_cfg = TrainConfig(**{**fixed_settings(cfg), **values})
                tracking.log_config(run_id, train_cfg)
                runs.train_into_run(
                    run_id, train_cfg, callbacks=[studies.Pruning(trial)] if cfg.pruner != "none" else []
                )
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
            acfg = AnalyzeConfig(
                run_id=run_id,
                max_samples=cfg.max_samples,
                matrix=cfg.analyze_matrix,
                anisotropy=cfg.anisotropy,
                null_draws=200,
                seed=cfg.seed,
            )
            ckpts, data, run = tracking.load_analysis_inputs(acfg)  # once: the cheap scores reuse them
            result, last_step = analyze_run(ckpts, data, acfg, run), ckpts.steps[-1]
            tracking.log_analysis_result(acfg, result, last_step, parent_id)
            tracking.log_metrics(run_id, cheap_scores(ckpts, data, acfg, run), last_step)
            return float(tracking.get_run(run_id).data.metrics["test_acc"])

    return run_trial


def fixed_settings(cfg: SweepConfig) -> dict:
    return {"dataset": cfg.dataset, "model": cfg.model, "depth": cfg.depth, "epochs": cfg.epochs, "seed": cfg.seed}


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial: hyperparameters, accuracies, gap, every measure, run id."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id:
            continue
        m = tracking.get_run(run_id).data.metrics
        row = {
            "trial": t.number,
            **t.params,
            "test_acc": m.get("test_acc"),
            "train_acc": m.get("acc_train"),
            "run_id": run_id,
        }
        row["gen_gap"] = (
            (row["train_acc"] - m["acc_test"]) if "acc_test" in m and row["train_acc"] is not None else None
        )
        row.update({k: v for k, v in m.items() if k in sweep.measure_columns(list(m))})
        rows.append(row)
    return pd.DataFrame(rows)


def report(cfg: SweepConfig, space: dict, study: optuna.Study, out: Path) -> pd.DataFrame:
    trials = trials_table(study)
    trials.to_csv(out / "trials.csv", index=False)
    if len(trials) < 3:
        print(f"tc sweep: {len(trials)} finished trial(s): too few for correlations", flush=True)
        return pd.DataFrame()
    measures = sweep.measure_columns(list(trials.columns))
    table = sweep.correlation_table(trials, measures, space, draws=cfg.bootstrap, seed=cfg.seed)
    table.to_csv(out / "correlations.csv", index=False)
    acc = table[table["target"] == "test_acc"]
    metrics = {f"corr_spearman_{r.measure}": r.spearman for r in acc.itertuples()}
    metrics |= {f"corr_kendall_{r.measure}": r.kendall for r in acc.itertuples()}
    metrics["n_trials_finished"] = len(trials)
    mlflow.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)})
    headline = next((m for m in ("tc_kappa_test", "tc_test") if m in trials), measures[0])  # README: κ is the headline
    figs = {
        "scatter.png": plots.measure_scatter(trials, headline, "test_acc", list(space)),
        "correlation_bars.png": plots.correlation_bars(table),
    }
    for name, fig in figs.items():
        fig.savefig(out / name, dpi=110)
        plots.plt.close(fig)
    return table


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        cfg = parse_args(SweepConfig, argv, description=__doc__.splitlines()[0])
        space = sweep.load_space(cfg.search_space)
        sweep.check_space_values(space, fixed_settings(cfg), cfg.search_space or "the default search space")
        where = cfg.storage or studies.default_storage(mlflow.get_tracking_uri())
        storage = sweep.open_storage(where)
    except ValueError as e:
        print(f"tc sweep: {e}", file=sys.stderr)
        return 2
    sampler = studies.make_sampler(cfg.sampler, space, cfg.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3) if cfg.pruner == "median" else optuna.pruners.NopPruner()
    with mlflow.start_run() as parent:
        study = studies.load_or_create(cfg, storage, sampler, pruner)
        mlflow.set_tags({"tc.study": cfg.study_name, "tc.storage": where})
        mlflow.log_dict({**asdict(cfg), "search_space": space}, "sweep_config.json")
        if stale := studies.fail_dead_trials(study):
            print(f"tc sweep: trials {stale} of dead workers marked FAILED; they do not count", flush=True)
        already = studies.budget_used(study)
        print(
            f"tc sweep: study {cfg.study_name!r} has {already} trial(s) that count; this worker runs until "
            f"{cfg.n_trials} in all",
            flush=True,
        )
        budget = cfg.n_trials
        if cfg.sampler == "grid":  # a grid has only so many points
            budget = min(budget, math.prod(len(v) for v in sweep.grid_of(space).values()))
        studies.run_worker(study, objective(cfg, space, parent.info.run_id), budget, cfg.timeout)
        with tempfile.TemporaryDirectory() as tmp:
            table = report(cfg, space, study, Path(tmp))
            mlflow.log_artifacts(tmp)
    if len(table):
        best = table[table["target"] == "test_acc"].assign(a=lambda d: d["kendall"].abs()).sort_values("a")
        print(best[["measure", "spearman", "kendall", "granulated_kendall", "n_trials"]].tail(8).to_string(index=False))
    print(f"tc sweep: done; sweep run {parent.info.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
