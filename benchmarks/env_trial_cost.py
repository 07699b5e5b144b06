"""What one trial of each report environment costs, at corners of its space, through the sweep's own code path.

    python benchmarks/env_trial_cost.py                        # every corner of the conv environment
    python benchmarks/env_trial_cost.py --env digits-mlp --corners cheap,median
    python benchmarks/env_trial_cost.py --corners cheap --epochs 10    # a shorter cap: a quick look only

The environment is `tc.report.environments.environments(quick=False)`'s, its sweep config the report's
(`tc.report.experiments.sweep_parameters` at the full report's settings, then the environment's parameters).
Each corner's values are enqueued into a fresh Optuna study in a throwaway sqlite store and drawn by
`tc.sweep.space.suggest` (a conditional learning rate included), trained at both seeds by
`tc.sweep.trial.train_trial` to the environment's criterion and analyzed by `tc.sweep.trial.analyze_trial`, as a
sweep trial is. Printed per corner: the epochs each seed took, whether it converged, training and analysis wall
time (both seeds), the process's CPU time (less stretched than wall time when the machine is shared), and the
machine's load average before and after.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's tc
    sys.path.insert(0, str(ROOT))

# Corners of each environment's space by compute (train_size x depth x width, small batches costing more
# steps) and by how slowly they fit (a small learning rate; Adam at its low end fitted slowest when measured).
CORNERS = {
    "conv": {
        "cheap": {
            "optimizer": "sgd",
            "lr": 0.15,
            "batch_size": 64,
            "weight_decay": 1e-4,
            "width": 8,
            "depth": 8,
            "train_size": 500,
        },
        "median": {
            "optimizer": "adam",
            "lr": 4.5e-3,
            "batch_size": 64,
            "weight_decay": 5e-5,
            "width": 16,
            "depth": 8,
            "train_size": 500,
        },
        "expensive": {
            "optimizer": "adam",
            "lr": 2e-3,
            "batch_size": 32,
            "weight_decay": 1e-5,
            "width": 16,
            "depth": 14,
            "train_size": 1000,
        },
    },
    "digits-mlp": {
        "cheap": {"lr": 0.2, "batch_size": 128, "weight_decay": 1e-4, "width": 32, "train_size": 500},
        "median": {"lr": 0.06, "batch_size": 64, "weight_decay": 1e-5, "width": 64, "train_size": 1000},
        "expensive": {"lr": 0.02, "batch_size": 32, "weight_decay": 1e-6, "width": 128, "train_size": 0},
    },
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="conv", choices=sorted(CORNERS))
    p.add_argument("--corners", default="cheap,median,expensive")
    p.add_argument("--epochs", type=int, default=0, help="a shorter epoch cap than the environment's (0: its own)")
    args = p.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="tc-env-cost-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.environ["TC_CACHE_DIR"] = os.environ.get("TC_CACHE_DIR", str(Path.home() / ".cache/tc"))
    os.environ.setdefault("TC_PROGRESS", "0")
    import mlflow
    import optuna
    import torch

    from tc.config import SweepConfig, from_strings
    from tc.core.device import cpu_description
    from tc.report import experiments
    from tc.report.environments import environments
    from tc.sweep import trial as T
    from tc.sweep.space import checked_space, suggest
    from tc.tracking import client

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    env = {e.name: e for e in environments(False, ROOT)}[args.env]
    s = experiments.settings(quick=False, trials=env.n_trials or 50, root=ROOT)
    params = {**experiments.sweep_parameters(s, f"cost-{env.name}", 1), **env.sweep}
    if args.epochs:
        params["epochs"] = args.epochs
    cfg = from_strings(SweepConfig, experiments.as_strings(params))
    space = checked_space(cfg)
    print(
        f"# {env.name}: {cfg.dataset} {cfg.model}, target_loss {cfg.target_loss}, cap {cfg.epochs} epochs, seeds "
        f"{cfg.seeds}, max_samples {cfg.max_samples}, anisotropy {cfg.anisotropy}; {cpu_description()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    study = optuna.create_study(direction="maximize")
    mlflow.set_experiment("env-cost")
    rows = []
    with mlflow.start_run(run_name="sweep") as parent:
        for corner in args.corners.split(","):
            study.enqueue_trial(CORNERS[args.env][corner])
            trial = study.ask()
            values = suggest(trial, space)
            load = os.getloadavg()[0]
            with client.nested_run(T.trial_tags(cfg, trial.number, parent.info.run_id), corner) as rid:
                t0, c0 = time.perf_counter(), time.process_time()
                second = T.train_trial(cfg, trial, T.trial_config(cfg, values), rid, parent.info.run_id)
                train_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                T.analyze_trial(T.analysis_config(cfg, rid, second), parent.info.run_id, T.analyzed_seed(cfg, second))
                analysis_s = time.perf_counter() - t0
                cpu_s = time.process_time() - c0  # both threads' CPU time: what a loaded machine stretches less
                runs = [client.get_run(i).data.metrics for i in (rid, second) if i]
            epochs = "+".join(f"{m['epochs_trained']:.0f}" for m in runs)
            conv = "+".join("yes" if m.get("converged") else "no" for m in runs)
            acc = "/".join(f"{m['test_acc']:.3f}" for m in runs)
            row = (corner, epochs, conv, acc, train_s, analysis_s, cpu_s, load, os.getloadavg()[0])
            rows.append(row)
            print(
                f"{corner}: {values} | epochs {epochs} | converged {conv} | test_acc {acc} | train {train_s:.0f} s, "
                f"analysis {analysis_s:.0f} s, trial {train_s + analysis_s:.0f} s, CPU {cpu_s:.0f} s | "
                f"load {load:.1f} -> {row[-1]:.1f}",
                flush=True,
            )
            study.tell(trial, runs[0]["test_acc"])
    head = "| corner | epochs (seeds) | converged | test acc | train (s) | analysis (s) | trial (s) | CPU (s) | load |"
    print("\n" + head)
    print("|---|---|---|---|---|---|---|---|---|")
    for corner, epochs, conv, acc, train_s, analysis_s, cpu_s, l0, l1 in rows:
        print(
            f"| {corner} | {epochs} | {conv} | {acc} | {train_s:.0f} | {analysis_s:.0f} | {train_s + analysis_s:.0f} "
            f"| {cpu_s:.0f} | {l0:.1f}-{l1:.1f} |"
        )


if __name__ == "__main__":
    main()
