"""The sweep's results: the trials table, the trials that enter the correlations, the correlation table and the
sweep run's metrics, figures, files, description and closing lines.

`trials_table` reads every finished trial of the study (its parameters from Optuna, its metrics from its
MLflow run); `summarize` scores every measure against test accuracy and the gap over the converged trials
(`tc.stats.rankcorr.correlation_table`), with the confirmatory test of `tc.stats.multiplicity`, and accounts for
every trial (`tc.sweep.outcomes`: finished, converged, failed, crashed, pruned, and why). The sweep explains itself
in the same words in its closing lines (`tc.sweep.console`), its run description and its `summary.json`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
from matplotlib.figure import Figure
from optuna.trial import TrialState

from tc.analysis.files import save_figures
from tc.analysis.registry import HEADLINE
from tc.config import SweepConfig
from tc.stats.multiplicity import CONFIRMATORY_MEASURE
from tc.stats.rankcorr import CorrelationOptions, correlation_table
from tc.sweep.console import closing_lines
from tc.sweep.figures import correlation_bars, measure_scatter
from tc.sweep.outcomes import MIN_INTERPRETABLE_TRIALS, CorrelationStatus, TrialAccount, account, correlation_status
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


#: Columns of trials.csv beside the measures, which no correlation ranks but the report reads: each cut's variant of
#: the consistency scores (which depth carries the signal: `tc.stats.robust.per_cut_table`) and the single-run error
#: estimates (their calibration beside GDE's: `tc.stats.calibration`).
EXTRA_COLUMN = re.compile(r"tc_(kappa_|js_)?(train|test|corrupt)_d\d+|err_hat_(tc|full)_(train|test|corrupt)")


def trial_columns(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics of a trial's run that its row of trials.csv holds: every measure (`measure_columns`), every
    `<measure>_seed_sd` spread, and the `EXTRA_COLUMN`s."""
    measures = set(measure_columns(list(metrics)))
    return {k: v for k, v in metrics.items() if k in measures or k.endswith("_seed_sd") or EXTRA_COLUMN.fullmatch(k)}


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
        row.update(trial_columns(m))
        rows.append(row)
    return pd.DataFrame(rows)


def headline_measure(columns: list[str]) -> str:
    """The sweep's headline measure, shown first in its closing lines and marked in its figures: the
    pre-specified confirmatory measure (`CONFIRMATORY_MEASURE`, tc_kappa_test), or, where it was not measured,
    the first of `tc.analysis.registry.HEADLINE` that was."""
    return next((m for m in (CONFIRMATORY_MEASURE, *HEADLINE) if m in columns), CONFIRMATORY_MEASURE)


@dataclass(frozen=True)
class SweepSummary:
    """The sweep run's results: trials.csv (converged trials first, then those that hit the epoch cap, which
    the correlations leave out), correlations.csv, summary.json, metrics and figures."""

    trials: pd.DataFrame  # converged (or all, without target_loss)
    capped: pd.DataFrame  # reached the epoch cap before target_loss
    table: pd.DataFrame  # `correlation_table`; empty with fewer than MIN_TRIALS trials
    metrics: dict[str, float]
    figures: dict[str, Figure]
    account: TrialAccount  # every trial of the study, by how it ended
    status: CorrelationStatus  # what the correlations may say (too few, not interpretable, computed)
    headline: str  # `headline_measure`

    def to_json(self) -> dict:
        """summary.json: the account, the correlations' status and the headline's τ (None without it)."""
        row = None
        if len(self.table):
            sub = self.table[(self.table["target"] == "test_acc") & (self.table["measure"] == self.headline)]
            if len(sub):
                r = sub.iloc[0]
                row = {k: _json_num(r[k]) for k in ("kendall", "kendall_ci_low", "kendall_ci_high", "kendall_p_holm")}
        return {
            "trials": self.account.as_dict(),
            "explanation": self.account.line(),
            "correlations": self.status.as_dict(),
            "headline": {"measure": self.headline, "target": "test_acc", **(row or {})},
        }


def _json_num(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def summarize(cfg: SweepConfig, space: dict, every: pd.DataFrame, outcomes: pd.DataFrame | None = None) -> SweepSummary:
    """Correlations of every measure with test accuracy and the gap over the converged trials of `every`
    (`trials_table`), the sweep run's metrics, its figures (the scatter: the headline measure), and the account
    of every trial (`outcomes`: `tc.sweep.outcomes.trial_outcomes`; None: the finished trials only)."""
    trials, capped = split_converged(every)
    metrics = {"n_trials_converged": len(trials), "n_trials_not_converged": len(capped)}
    acc = account(cfg, len(every), len(trials), outcomes)
    status = correlation_status(acc)
    headline = headline_measure(list(every.columns))
    if status.kind == "too_few":
        return SweepSummary(trials, capped, pd.DataFrame(), metrics, {}, acc, status, headline)
    measures = measure_columns(list(trials.columns))
    table = correlation_table(trials, measures, space, CorrelationOptions(draws=cfg.bootstrap, seed=cfg.seed))
    by_acc = table[table["target"] == "test_acc"]
    metrics |= {f"corr_spearman_{r.measure}": r.spearman for r in by_acc.itertuples()}
    metrics |= {f"corr_kendall_{r.measure}": r.kendall for r in by_acc.itertuples()}
    note = "" if status.kind == "computed" else f"not interpretable: n = {status.n} < {MIN_INTERPRETABLE_TRIALS}"
    figures = {"correlation_bars.png": correlation_bars(table, headline=headline, note=note)}
    shown = headline if headline in trials else next(iter(measures), None)
    if shown is not None:
        row = by_acc[by_acc["measure"] == shown]
        stats = row.iloc[0] if len(row) else None
        figures["scatter.png"] = measure_scatter(
            trials, shown, "test_acc", list(space), stats=stats, headline=shown == headline
        )
    return SweepSummary(trials, capped, table, metrics, figures, acc, status, headline)


def write_summary(summary: SweepSummary, out: Path) -> None:
    """trials.csv (always, every finished trial), summary.json (always), correlations.csv (with MIN_TRIALS
    trials or more) and the figures, into directory `out`."""
    pd.concat([summary.trials, summary.capped]).to_csv(out / "trials.csv", index=False)
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2, ensure_ascii=False))
    if len(summary.table):
        summary.table.to_csv(out / "correlations.csv", index=False)
    save_figures(summary.figures, out)


def print_summary(summary: SweepSummary) -> None:
    """The sweep's closing lines (`tc.sweep.console.closing_lines`)."""
    print("\n".join(closing_lines(summary)), flush=True)


def describe_sweep_run(run_id: str, study_name: str, study: optuna.Study, summary: SweepSummary | None = None) -> None:
    """The sweep run's description: trials finished, how every trial ended and what the correlations may say
    (`summary`'s account and status), and the best trial's headline measures."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(done, key=lambda t: t.value, default=None) if done else None
    best_attrs = None
    if best is not None:
        best_attrs = {"trial": best.number, **{k: v for k, v in best.user_attrs.items() if k in labels.SWEEP_HEADLINE}}
        best_attrs.update({k: v for k, v in best.params.items()})
    notes = [summary.account.line() + ".", summary.status.line + "."] if summary is not None else []
    ui.describe_run(run_id, labels.describe_sweep(study_name, len(done), best_attrs, notes))
