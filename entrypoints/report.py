"""Reproduce the paper's claims and test consistency as a generalization predictor: docs/REPORT.md.

    mlflow run . --env-manager local -e report                    # the full report (about 40 min, 2 CPUs)
    mlflow run . --env-manager local -e report -P quick=true      # a 3-minute smoke version on digits

Every number comes from tc's own entry points, run here as nested MLflow runs (env_manager="local"):
train and analyze for the single-run experiments (`tc.report.training_runs`, `tc.report.analyses`), sweep for
the correlations. The report (`tc.report.render`) and its figures are written to `out_dir` (default docs/) and
also logged to this run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd

from tc import report, tracking

ROOT = Path(__file__).resolve().parents[1]


def _run(entry: str, params: dict) -> str:
    p = mlflow.projects.run(
        str(ROOT),
        entry,
        parameters={k: str(v) for k, v in params.items()},
        env_manager="local",
        experiment_id=mlflow.active_run().info.experiment_id,
    )
    return p.run_id


def _figure(run_id: str, name: str, fig_dir: Path, as_name: str) -> str:
    path = tracking.client().download_artifacts(
        run_id, f"{tracking.analysis_dir(run_id)}/{name}", str(fig_dir / ".tmp")
    )
    shutil.move(path, fig_dir / as_name)
    return f"report/{as_name}"


def _timed(timing: dict, key: str, entry: str, params: dict) -> str:
    t0 = time.time()
    run_id = _run(entry, params)
    timing[key] = time.time() - t0
    return run_id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", default="false")
    ap.add_argument("--trials", default="24")
    ap.add_argument("--out_dir", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    s = report.settings(args.quick.lower() in ("true", "1", "yes"), int(args.trials), ROOT)
    out, t_start, timing, metrics = Path(args.out_dir), time.time(), {}, {}
    figs = out / "report"
    figs.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(run_name="tc-report"):
        runs = {name: _timed(timing, f"train {name}", "train", p) for name, p in report.training_runs(s).items()}
        for name, run, params in report.analyses(s, runs):
            _timed(
                timing, f"analyze {run} {params.get('bn_mode', '')}".strip(), "analyze", {"run_id": runs[run], **params}
            )
            metrics[name] = tracking.get_run(runs[run]).data.metrics
        fig = {k: _figure(runs["base"], f, figs, f"base_{f}") for k, f in report.BASE_FIGURES.items()}
        fig["heat_random"] = _figure(runs["random"], "consistency_heatmaps.png", figs, "random_heatmaps.png")
        sweep_id = _timed(timing, "sweep", "sweep", report.sweep_parameters(s, f"tc-report-{int(t_start)}"))
        art = Path(tracking.client().download_artifacts(sweep_id, "", str(figs / ".tmp")))
        trials = pd.read_csv(art / "trials.csv")
        corr = pd.read_csv(art / "correlations.csv") if (art / "correlations.csv").exists() else pd.DataFrame()
        shutil.move(art / "scatter.png", figs / "sweep_scatter.png")
        shutil.move(art / "correlation_bars.png", figs / "sweep_bars.png")
        shutil.rmtree(figs / ".tmp", ignore_errors=True)
        costs = report.epoch_costs(
            [(tracking.get_run(r).data.metrics, tracking.seconds_per_epoch(r)) for r in trials["run_id"]]
        )
        results = report.Results(s, metrics, fig, trials, corr, costs, timing, time.time() - t_start)
        (out / "REPORT.md").write_text(report.render(results))
        corr.to_csv(figs / "correlations.csv", index=False)
        trials.to_csv(figs / "trials.csv", index=False)
        mlflow.log_artifact(str(out / "REPORT.md"))
        mlflow.log_dict({"runs": runs, "sweep_run_id": sweep_id, "timing_s": timing}, "report_runs.json")
    print(f"tc report: wrote {out / 'REPORT.md'} in {(time.time() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
