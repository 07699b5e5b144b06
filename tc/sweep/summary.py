"""The sweep's results: the trials table, the trials that enter the correlations, the correlation table and the
sweep run's metrics, figures, files, description and closing lines.

`trials_table` reads every finished trial of the study (its parameters from Optuna, its metrics from its
MLflow run); `summarize` scores every measure against test accuracy and the gap over the converged trials
(`tc.stats.rankcorr.correlation_table`), with the confirmatory test of `tc.stats.multiplicity`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
from matplotlib.figure import Figure
from optuna.trial import TrialState

from tc.analysis import plots
from tc.analysis.files import save_figures
from tc.config import SweepConfig
from tc.stats.multiplicity import CONFIRMATORY_MEASURE
from tc.stats.rankcorr import MIN_TRIALS, CorrelationOptions, correlation_table
from tc.tracking import client, labels, ui
from tc.tracking.labels import gen_gap


def measure_columns(columns: list[str]) -> list[str]:
    """The generalization measures among a trials table's columns: tc_*, drift_*, aniso_* and gm_* summaries
    (per-cut `_d<cut>` variants, the `_seconds` / `_cost_epochs` costs, the `_evals` counts of a search's work, such as
    `gm_sharpness_evals`, and the `_seed_sd` spreads left out)."""
    return [
        c
        for c in columns
        if c.startswith(("tc_", "drift_", "aniso_", "gm_"))
        and not re.search(r"(_d\d+|_seconds|_cost_epochs|_evals|_seed_sd)$", c)
    ]


def split_converged(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials that enter the correlations, trials that never reached the stopping criterion). A trial with
    `converged` = 0 is left out: comparing it with converged ones would compare models at unequal fit. A
    trial without the column (no stopping criterion) enters."""
    if "converged" not in trials:
        return trials, trials.iloc[0:0]
    out = trials["converged"].astype(float) == 0
    return trials[~out].reset_index(drop=True), trials[out].reset_index(drop=True)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial: hyperparameters, accuracies, gap, every measure, run id."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id:
            continue
        m = client.get_run(run_id).data.metrics
        row = {
            "trial": t.number,
            **t.params,
            "converged": t.user_attrs.get("converged", math.nan),
            "epochs_trained": m.get("epochs_trained"),
            "train_eval_loss": m.get("train_eval_loss"),
            "test_acc": m.get("test_acc"),
            "train_acc_clean": m.get("train_acc_clean"),
            "gen_gap": gen_gap(m),  # clean labels, the whole test set of test_acc
            "run_id": run_id,
        }
        row.update({k: v for k, v in m.items() if k in measure_columns(list(m)) or k.endswith("_seed_sd")})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SweepSummary:
    """The sweep run's results: trials.csv (converged trials first, then those that hit the epoch cap, which
    the correlations leave out), correlations.csv, metrics and figures."""

    trials: pd.DataFrame  # converged (or all, without target_loss)
    capped: pd.DataFrame  # reached the epoch cap before target_loss
    table: pd.DataFrame  # `correlation_table`; empty with fewer than MIN_TRIALS trials
    metrics: dict[str, float]
    figures: dict[str, Figure]


def summarize(cfg: SweepConfig, space: dict, every: pd.DataFrame) -> SweepSummary:
    """Correlations of every measure with test accuracy and the gap over the converged trials of `every`
    (`trials_table`), the sweep run's metrics, and its figures (the scatter: the confirmatory measure)."""
    trials, capped = split_converged(every)
    metrics = {"n_trials_converged": len(trials), "n_trials_not_converged": len(capped)}
    if len(trials) < MIN_TRIALS:
        return SweepSummary(trials, capped, pd.DataFrame(), metrics, {})
    measures = measure_columns(list(trials.columns))
    table = correlation_table(trials, measures, space, CorrelationOptions(draws=cfg.bootstrap, seed=cfg.seed))
    acc = table[table["target"] == "test_acc"]
    metrics |= {f"corr_spearman_{r.measure}": r.spearman for r in acc.itertuples()}
    metrics |= {f"corr_kendall_{r.measure}": r.kendall for r in acc.itertuples()}
    # the confirmatory measure (docs/sweep.md), or tc_test where it was not measured
    shown = next((m for m in (CONFIRMATORY_MEASURE, "tc_test") if m in trials), measures[0])
    figures = {
        "scatter.png": plots.measure_scatter(trials, shown, "test_acc", list(space)),
        "correlation_bars.png": plots.correlation_bars(table),
    }
    return SweepSummary(trials, capped, table, metrics, figures)


def write_summary(summary: SweepSummary, out: Path) -> None:
    """trials.csv, correlations.csv (with MIN_TRIALS trials or more) and the figures, into directory `out`."""
    pd.concat([summary.trials, summary.capped]).to_csv(out / "trials.csv", index=False)
    if len(summary.table):
        summary.table.to_csv(out / "correlations.csv", index=False)
    save_figures(summary.figures, out)


def print_summary(summary: SweepSummary) -> None:
    """The sweep's closing lines: trials set apart, and the measures most correlated with test accuracy."""
    if len(summary.capped):
        print(f"tc sweep: {len(summary.capped)} trial(s) never reached target_loss: left out of the correlations")
    if len(summary.trials) < MIN_TRIALS:
        print(f"tc sweep: {len(summary.trials)} converged trial(s): too few for correlations", flush=True)
        return
    t = summary.table
    best = t[t["target"] == "test_acc"].assign(a=lambda d: d["kendall"].abs()).sort_values("a")
    print(best[["measure", "spearman", "kendall", "granulated_kendall", "n_trials"]].tail(8).to_string(index=False))


def describe_sweep_run(run_id: str, study_name: str, study: optuna.Study) -> None:
    """The sweep run's description: trials finished, and the best trial's headline measures."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(done, key=lambda t: t.value, default=None) if done else None
    summary = None
    if best is not None:
        summary = {"trial": best.number, **{k: v for k, v in best.user_attrs.items() if k in labels.SWEEP_HEADLINE}}
        summary.update({k: v for k, v in best.params.items()})
    ui.describe_run(run_id, labels.describe_sweep(study_name, len(done), summary))
