"""Optuna sweep: every trial trains and is analyzed as a nested MLflow run; the sweep run gets the
correlation of each consistency measure with test accuracy and with the generalization gap.

    mlflow run . --env-manager local -e sweep -P n_trials=20 -P study_name=fmnist-tc -P storage=<url or path>

Several workers (processes or machines) that run the same command with the same study_name, storage and
MLFLOW_TRACKING_URI share one study; n_trials counts trials over all of them. Each worker's sweep run logs
the correlations over every trial finished so far. The worker is `tc.sweep.job`, the trial logic
`tc.sweep.trial`, the statistics `tc.stats.rankcorr` and `tc.stats.multiplicity`.

A trial that diverges, samples a combination that cannot be trained, or runs out of device memory (in
training or in its analysis) is FAILED with its `fail_reason` and counts; a trial that crashes on any other
error is FAILED with `tc.error`, does not count, and the worker goes on, unless 3 trials in a row crash: then
the worker stops, its sweep run ends FAILED, and the exit code is 1 (`tc.sweep.trial` has the policy).

A refused sweep (a bad parameter, storage or search space, e.g. a train_size above the data set's size) exits 2
before any study or trial exists, and leaves one FAILED run named `refused: <reason>`, the whole message in its
tag `tc.error` (`tc.tracking.refusals`).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow

from tc.config import SweepConfig, parse_args
from tc.core.data import DatasetNotFoundError
from tc.sweep import job
from tc.sweep.summary import print_summary, write_summary
from tc.tracking import client, refusals
from tc.tracking.access import exit_on_refusal
from tc.tracking.secrets import has_secret, mask_config, mask_url


@exit_on_refusal("tc sweep")  # the server's 401/403: one line, exit 1 (tc.tracking.access)
def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        cfg = parse_args(SweepConfig, argv, description=__doc__.splitlines()[0])
        setup = job.prepare(cfg, mlflow.get_tracking_uri())
    except (ValueError, DatasetNotFoundError) as e:  # no study, no trial; one run named `refused: ...`, exit 2
        return refusals.refuse("sweep", e)
    if has_secret(setup.where):  # masked wherever tc logs it, but a command line is seen by ps and kept in history
        print(
            "tc sweep: storage carries a password: set PGPASSWORD or ~/.pgpass instead (docs/scaling.md)",
            file=sys.stderr,
        )
    client.use_default_experiment()
    with mlflow.start_run() as parent:
        mlflow.set_tags({"tc.study": cfg.study_name, "tc.storage": mask_url(setup.where)})  # tc.tracking.secrets
        mlflow.log_dict(mask_config({**asdict(cfg), "search_space": setup.space}), "sweep_config.json")
        outcome = job.run_sweep(setup, parent.info.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            write_summary(outcome.summary, Path(tmp))
            mlflow.log_artifacts(tmp)
        mlflow.log_metrics({k: v for k, v in outcome.summary.metrics.items() if not math.isnan(v)})
        if outcome.stopped:
            client.end_active_run("FAILED", {"tc.error": str(outcome.stopped)[:5000]})
    print_summary(outcome.summary)
    if outcome.stopped:
        print(f"tc sweep: stopped: {outcome.stopped}", file=sys.stderr)
        return 1
    print(f"tc sweep: done; sweep run {parent.info.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
