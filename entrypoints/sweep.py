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
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python entrypoints/sweep.py` finds entrypoints/

import mlflow
import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from entrypoints import analyze as analyze_ep
from entrypoints import train as train_ep
from tc import plots, sweep, tracking
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


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler re-seeded at every trial from (seed, trial number).

    Trial numbers are unique in a study (the storage assigns them), so a restarted worker and several
    workers started with the same seed never draw from the same random stream, while one worker on a fresh
    study stays reproducible (its trial numbers are 0, 1, 2, ...). A plain `TPESampler(seed)` in each
    process repeats the same draws."""

    def __init__(self, make, seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    @staticmethod
    def trial_seed(seed: int, number: int) -> int:
        return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])

    def before_trial(self, study, trial):
        self._inner = self._make(self.trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_sampler(name: str, space: dict, seed: int) -> optuna.samplers.BaseSampler:
    makers = {
        # constant_liar: running trials of other workers count as bad results, so workers spread out
        "tpe": lambda s: optuna.samplers.TPESampler(seed=s, constant_liar=True),
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
        "grid": lambda s: _grid_sampler(sweep.grid_of(space), seed, s),
    }
    return TrialSeededSampler(makers[name], seed)


def _grid_sampler(grid: dict, seed: int, trial_seed: int) -> optuna.samplers.GridSampler:
    """GridSampler shuffles its grid with `seed` (grid ids must mean the same points in every worker), then
    picks among the unvisited ids with its rng, which gets the per-trial seed so that workers differ."""
    sampler = optuna.samplers.GridSampler(grid, seed=seed)
    sampler._rng.rng.seed(trial_seed % 2**32)
    return sampler


WORKER_ATTR = "tc.worker"  # {"host", "pid", "start"} of the process running the trial


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAILED every RUNNING trial whose worker (recorded in its user attrs) was on this host and is
    dead, with its MLflow run and its worker's sweep run. Journal files have no heartbeat, so without this a
    killed worker's trial stays RUNNING forever. Trials of other hosts are left to RDB heartbeats. When the
    storage has a stale-trial callback (RDB: retry), it runs for these too. Returns their numbers."""
    failed = []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = json.loads(t.user_attrs.get(WORKER_ATTR) or "{}")
        if not worker or tracking.writer_alive(worker) is not False:
            continue
        if t.datetime_start and t.datetime_start.timestamp() > worker.get("at", math.inf):
            continue  # a re-queued trial (RetryFailedTrialCallback) that still carries its dead predecessor's attrs
        reason = f"its worker (pid {worker['pid']}) died; marked FAILED by a later sweep"
        try:
            storage.set_trial_user_attr(t._trial_id, "tc.stale", reason)
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(t.number)
        for key in ("mlflow_run_id", "tc.sweep_run_id"):
            run_id = t.user_attrs.get(key)
            try:
                if run_id and tracking.get_run(run_id).info.status == "RUNNING":
                    tracking.client().set_tag(run_id, "tc.error", reason)
                    tracking.client().set_terminated(run_id, "FAILED")
            except LookupError:  # a run on another tracking server: the trial is failed all the same
                print(f"tc sweep: run {run_id} of dead trial {t.number} is not on this tracking server", flush=True)
        callback = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
        if callback is not None:
            callback(study, storage.get_trial(t._trial_id))
    return failed


def budget_used(study: optuna.Study, below: int | None = None) -> int:
    """Trials that count toward n_trials (`sweep.counts_toward_budget`), among those numbered < `below`."""
    return sum(
        sweep.counts_toward_budget(t.state.name, t.user_attrs)
        for t in study.get_trials(deepcopy=False)
        if below is None or t.number < below
    )


def default_storage() -> str:
    """optuna_journal.log next to the MLflow sqlite store, or in the working directory."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent / "optuna_journal.log")
    return "optuna_journal.log"


def objective(cfg: SweepConfig, space: dict, parent_id: str):
    def run_trial(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, json.dumps({**tracking.writer_identity(), "at": time.time()}))
        trial.set_user_attr("tc.sweep_run_id", parent_id)
        if budget_used(trial.study, below=trial.number) >= cfg.n_trials:
            # Another worker took the last slot between this worker's budget check and this trial's creation.
            trial.set_user_attr("tc.surplus", "the study had n_trials trials when this one started")
            raise SurplusTrial()
        values = sweep.suggest(trial, space)
        tags = {"tc.study": cfg.study_name, "tc.trial": str(trial.number), "tc.sweep_run_id": parent_id}
        with mlflow.start_run(nested=True, run_name=f"{cfg.study_name}-trial-{trial.number}", tags=tags) as child:
            run_id = child.info.run_id
            trial.set_user_attr("mlflow_run_id", run_id)
            try:
                train_cfg = TrainConfig(**{**fixed_settings(cfg), **values})
                tracking.log_config(run_id, train_cfg)
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
            tracking.log_analysis_result(acfg, result, last_step, parent_id)
            cheap = cheap_scores(acfg, result.summary["window_steps"], result.summary["steps"][-1])
            tracking.log_metrics(run_id, cheap, last_step)
            return float(tracking.get_run(run_id).data.metrics["test_acc"])

    return run_trial


class SurplusTrial(Exception):
    """A trial created after the study reached n_trials; it is FAILED with user attr `tc.surplus`."""


def fixed_settings(cfg: SweepConfig) -> dict:
    return {"dataset": cfg.dataset, "model": cfg.model, "depth": cfg.depth, "epochs": cfg.epochs, "seed": cfg.seed}


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


def run_worker(study: optuna.Study, func, n_trials: int, timeout: float = 0.0) -> None:
    """Run trials one at a time until the study holds n_trials that count (over all workers; see
    `budget_used`). The budget is checked before each trial and again inside it against the trials numbered
    before it, so workers that start their last trials together do not overshoot: the surplus one is
    FAILED at once and does not count."""
    start = time.monotonic()
    surplus: list[str] = []

    def note_surplus(_study, trial) -> None:
        if "tc.surplus" in trial.user_attrs:
            surplus.append(trial.user_attrs["tc.surplus"])

    while not surplus and budget_used(study) < n_trials:
        left = timeout - (time.monotonic() - start) if timeout else None
        if left is not None and left <= 0:
            break
        study.optimize(
            func, n_trials=1, timeout=left, catch=(SurplusTrial,), callbacks=[note_surplus], gc_after_trial=True
        )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        cfg = parse_args(SweepConfig, argv, description=__doc__.splitlines()[0])
        space = sweep.load_space(cfg.search_space)
        sweep.check_space_values(space, fixed_settings(cfg), cfg.search_space or "the default search space")
        storage = sweep.open_storage(cfg.storage or default_storage())
    except ValueError as e:
        print(f"tc sweep: {e}", file=sys.stderr)
        return 2
    sampler = make_sampler(cfg.sampler, space, cfg.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3) if cfg.pruner == "median" else optuna.pruners.NopPruner()
    with mlflow.start_run() as parent:
        study = load_or_create(cfg, storage, sampler, pruner)
        mlflow.set_tags({"tc.study": cfg.study_name, "tc.storage": cfg.storage or default_storage()})
        mlflow.log_dict({**asdict(cfg), "search_space": space}, "sweep_config.json")
        if stale := fail_dead_trials(study):
            print(f"tc sweep: trials {stale} of dead workers marked FAILED; they do not count", flush=True)
        already = budget_used(study)
        print(
            f"tc sweep: study {cfg.study_name!r} has {already} trial(s) that count; this worker runs until "
            f"{cfg.n_trials} in all",
            flush=True,
        )
        budget = cfg.n_trials
        if cfg.sampler == "grid":  # a grid has only so many points
            budget = min(budget, math.prod(len(v) for v in sweep.grid_of(space).values()))
        run_worker(study, objective(cfg, space, parent.info.run_id), budget, cfg.timeout)
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
