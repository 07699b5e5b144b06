"""Optuna sweep: every trial trains and is analyzed as a nested MLflow run; the sweep run gets the
correlation of each consistency measure with test accuracy and with the generalization gap.

    mlflow run . --env-manager local -e sweep -P n_trials=20 -P study_name=fmnist-tc -P storage=<url or path>

Several workers (processes or machines) that run the same command with the same study_name, storage and
MLFLOW_TRACKING_URI share one study; n_trials counts trials over all of them. Each worker's sweep run logs
the correlations over every trial finished so far.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python entrypoints/sweep.py` finds entrypoints/

import mlflow
import optuna
import pandas as pd

from entrypoints import analyze as analyze_ep
from entrypoints import train as train_ep
from tc import plots, runinfo, sweep, tracking
from tc.config import AnalyzeConfig, SweepConfig, TrainConfig, parse_args
from tc.train import DivergenceError


class Pruning:
    """Training callback: report test accuracy per epoch, stop the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_epoch_end(self, step: int, epoch: int, metrics: dict) -> None:
        self.trial.report(metrics["test_acc"], epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"test_acc {metrics['test_acc']:.4f} below the median at epoch {epoch}")


def default_storage() -> str:
    """optuna_journal.log next to the MLflow sqlite store, or in the working directory."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent / "optuna_journal.log")
    return "optuna_journal.log"


def objective(cfg: SweepConfig, space: dict, parent_id: str):
    def run_trial(trial: optuna.Trial) -> float:
        values = sweep.suggest(trial, space)
        fixed = {"dataset": cfg.dataset, "model": cfg.model, "depth": cfg.depth, "epochs": cfg.epochs, "seed": cfg.seed}
        train_cfg = TrainConfig(**{**fixed, **values})
        tags = {"tc.study": cfg.study_name, "tc.trial": str(trial.number), "tc.sweep_run_id": parent_id}
        with mlflow.start_run(nested=True, run_name=runinfo.trial_name(trial.number), tags=tags) as child:
            run_id = child.info.run_id
            trial.set_user_attr("mlflow_run_id", run_id)
            tracking.log_config(run_id, train_cfg)
            tracking.label_train_run(run_id, train_cfg)
            try:
                train_ep.run_training(run_id, train_cfg, callbacks=[Pruning(trial)] if cfg.pruner != "none" else [])
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
            result, last_step = analyze_ep.compute(acfg)
            analyze_ep.log_into_run(acfg, result, last_step, parent_id)
            cheap = cheap_scores(acfg, result.summary["window_steps"], result.summary["steps"][-1])
            tracking.log_metrics(run_id, cheap, last_step)
            tracking.label_analysis(run_id, None, acfg)
            for key, value in runinfo.trial_attrs(tracking.get_run(run_id).data.metrics).items():
                trial.set_user_attr(key, value)  # shown beside the objective in optuna-dashboard
            return float(tracking.get_run(run_id).data.metrics["test_acc"])

    return run_trial


def cheap_scores(acfg: AnalyzeConfig, window_steps: list[int], last_step: int, samples: int = 100) -> dict[str, float]:
    """Cheap surrogates of tc_test: the final deep part on k checkpoints subsampled from the analysis's
    ACTUAL window (k = 1, 2; evenly spaced: the window's middle for k = 1), and `samples` test examples.
    `tc_test_cheap_k<k>_n<samples>`; compare them with tc_test across trials. A k larger than the window is
    skipped (it would be the full window again, on fewer samples). The checkpoints come from the verified
    local cache that the full analysis filled."""
    out = {}
    for k in (1, 2):
        if len(window_steps) < k:
            continue
        chosen = [window_steps[int((j + 0.5) * len(window_steps) / k)] for j in range(k)]
        cheap = replace(
            acfg,
            splits="test",
            max_samples=samples,
            matrix="final",
            anisotropy=False,
            measures=False,
            checkpoints=",".join(str(s) for s in [*chosen, last_step]),
            window=1.0,  # every chosen checkpoint before the last is in the window
        )
        result, _ = analyze_ep.compute(cheap)
        out[f"tc_test_cheap_k{k}_n{samples}"] = result.metrics["tc_test"]
        out[f"tc_test_cheap_k{k}_n{samples}_seconds"] = result.metrics["analysis_seconds"]
    return out


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


def load_or_create(cfg: SweepConfig, storage, sampler, pruner) -> optuna.Study:
    # Workers starting together race to create the study (and an RDB's tables): retry briefly.
    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=cfg.study_name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                direction="maximize",
                load_if_exists=True,
            )
        except Exception:  # DuplicatedStudyError, or an IntegrityError from concurrent table creation
            if attempt == 4:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        cfg = parse_args(SweepConfig, argv, description=__doc__.splitlines()[0])
        space = sweep.load_space(cfg.search_space)
        storage = sweep.open_storage(cfg.storage or default_storage())
    except ValueError as e:
        print(f"tc sweep: {e}", file=sys.stderr)
        return 2
    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=cfg.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=cfg.seed),
        "grid": lambda: optuna.samplers.GridSampler(sweep.grid_of(space), seed=cfg.seed),
    }[cfg.sampler]()
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3) if cfg.pruner == "median" else optuna.pruners.NopPruner()
    tracking.use_default_experiment()
    with mlflow.start_run() as parent:
        study = load_or_create(cfg, storage, sampler, pruner)
        with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["test_acc"])  # optuna-dashboard shows "test_acc", not "Objective 0"
        tracking.name_run(parent.info.run_id, runinfo.sweep_name(cfg.study_name))
        mlflow.set_tags({"tc.study": cfg.study_name, "tc.storage": cfg.storage or default_storage()})
        mlflow.log_dict({**asdict(cfg), "search_space": space}, "sweep_config.json")
        # n_trials is a budget over all workers and all trial states. Each worker checks it after every trial,
        # so k workers that start their last trials together can overshoot it by up to k - 1 trials.
        done = optuna.study.MaxTrialsCallback(cfg.n_trials, states=None)
        already = len(study.trials)
        print(
            f"tc sweep: study {cfg.study_name!r} has {already} trial(s); this worker runs until {cfg.n_trials} in all",
            flush=True,
        )
        if already < cfg.n_trials:
            study.optimize(
                objective(cfg, space, parent.info.run_id),
                n_trials=cfg.n_trials - already,
                timeout=cfg.timeout or None,
                callbacks=[done],
                gc_after_trial=True,
            )
        with tempfile.TemporaryDirectory() as tmp:
            table = report(cfg, space, study, Path(tmp))
            mlflow.log_artifacts(tmp)
        tracking.describe_sweep_run(parent.info.run_id, cfg.study_name, study)
    if len(table):
        best = table[table["target"] == "test_acc"].assign(a=lambda d: d["kendall"].abs()).sort_values("a")
        print(best[["measure", "spearman", "kendall", "granulated_kendall", "n_trials"]].tail(8).to_string(index=False))
    print(f"tc sweep: done; sweep run {parent.info.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
