"""Optuna sweep: every trial trains and is analyzed as a nested MLflow run; the sweep run gets the
correlation of each consistency measure with test accuracy and with the generalization gap.

    mlflow run . --env-manager local -e sweep -P n_trials=20 -P study_name=fmnist-tc -P storage=<url or path>

Several workers (processes or machines) that run the same command with the same study_name, storage and
MLFLOW_TRACKING_URI share one study; n_trials counts trials over all of them. Each worker's sweep run logs
the correlations over every trial finished so far. The trial logic is in `tc.sweep.study`, the statistics in
`tc.sweep`.

A trial that diverges, samples a combination that cannot be trained, or runs out of device memory (in
training or in its analysis) is FAILED with its `fail_reason` and counts; a trial that crashes on any other
error is FAILED with `tc.error`, does not count, and the worker goes on, unless 3 trials in a row crash: then
the worker stops, its sweep run ends FAILED, and the exit code is 1 (`tc.sweep.study` has the policy).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow
import optuna

from tc import sweep
from tc.config import SweepConfig, parse_args
from tc.core.data import DatasetNotFoundError
from tc.sweep import study as studies
from tc.tracking import client, ui
from tc.tracking import labels as runinfo


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
    client.use_default_experiment()
    with mlflow.start_run() as parent:
        study = studies.load_or_create(cfg, storage, sampler, pruner)
        ui.name_run(parent.info.run_id, runinfo.sweep_name(cfg.study_name))
        mlflow.set_tags({"tc.study": cfg.study_name, "tc.storage": where})
        mlflow.log_dict({**asdict(cfg), "search_space": space}, "sweep_config.json")
        if stale := studies.fail_dead_trials(study):
            print(f"tc sweep: trials {stale} of dead workers marked FAILED; they do not count", flush=True)
        print(
            f"tc sweep: study {cfg.study_name!r} has {studies.budget_used(study)} trial(s) that count; this worker "
            f"runs until {cfg.n_trials} in all",
            flush=True,
        )
        objective = studies.objective(cfg, space, parent.info.run_id)
        stopped = None
        try:
            studies.run_worker(study, objective, studies.trial_budget(cfg, space), cfg.timeout)
        except studies.SystematicFailure as e:  # the trials finished so far are still summarized below
            stopped = e
        summary = studies.summarize(cfg, space, studies.trials_table(study))
        with tempfile.TemporaryDirectory() as tmp:
            studies.write_summary(summary, Path(tmp))
            mlflow.log_artifacts(tmp)
        mlflow.log_metrics({k: v for k, v in summary.metrics.items() if not math.isnan(v)})
        studies.describe_sweep_run(parent.info.run_id, cfg.study_name, study)
        if stopped:
            client.end_active_run("FAILED", {"tc.error": str(stopped)[:5000]})
    studies.print_summary(summary)
    if stopped:
        print(f"tc sweep: stopped: {stopped}", file=sys.stderr)
        return 1
    print(f"tc sweep: done; sweep run {parent.info.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
