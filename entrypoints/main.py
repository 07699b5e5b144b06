"""Quick start: train ResNet-20 on a Fashion-MNIST subset, analyze it, print the headline numbers.

    mlflow run . --env-manager local

Runs the `train` and `analyze` entry points as nested MLflow runs under this one (each with
env_manager="local", like every tc command), then prints the training run id, its test accuracy and
temporal-consistency scores, and how to open the MLflow UI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow

from tc import tracking
from tc.metrics import HEADLINE

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", default="5")
    p.add_argument("--train_size", default="5000")
    p.add_argument("--width", default="16")
    p.add_argument("--seed", default="0")
    p.add_argument("--max_samples", default="500")
    args = p.parse_args(argv)
    tracking.use_default_experiment()
    with mlflow.start_run() as parent:
        tracking.name_run(parent.info.run_id, "quick start")
        exp = parent.info.experiment_id
        train = mlflow.projects.run(
            str(ROOT),
            "train",
            env_manager="local",
            experiment_id=exp,
            parameters={
                "dataset": "fashion-mnist",
                "model": "resnet20",
                "epochs": args.epochs,
                "train_size": args.train_size,
                "width": args.width,
                "seed": args.seed,
            },
        )
        mlflow.set_tag("tc.train_run_id", train.run_id)
        mlflow.projects.run(
            str(ROOT),
            "analyze",
            env_manager="local",
            experiment_id=exp,
            parameters={"run_id": train.run_id, "max_samples": args.max_samples},
        )
        m = tracking.get_run(train.run_id).data.metrics
        headline = {k: m[k] for k in ("test_acc", *HEADLINE) if k in m}
        mlflow.log_metrics(headline)
    print("\n=== tc quick start ===")
    print(f"training run: {train.run_id}")
    for k, v in headline.items():
        print(f"  {k:29s} {v:.4f}")
    print("open the results: `mlflow ui` (in this directory), then http://127.0.0.1:5000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
