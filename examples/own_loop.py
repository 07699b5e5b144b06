"""Analyze a model trained by YOUR OWN PyTorch loop: a torchvision ResNet-18 on the 8x8 digits, plain loop.

    python examples/own_loop.py                       # trains 24 steps, logs, analyzes; prints the run id

Three tc calls make a plain loop analyzable: `tc.log_run_info` (which model and data set, by name),
`tc.CheckpointLogger(model, every=N)` before the loop (it logs the initialisation as step 0) with
`.step(step, epoch)` in the loop, and `.close(step, epoch)` after it. Then
`analyze` runs on the run like on one of tc's own, here through `mlflow.projects.run` (the same as
`mlflow run . --env-manager local -e analyze -P run_id=<run id>`). Runs go to the experiment `tc` unless
MLFLOW_EXPERIMENT_NAME says otherwise; MLFLOW_TRACKING_URI picks the store (default ./mlruns).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import mlflow
import torch
import torchvision

import tc
from tc.core.data import load_data

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=24, help="optimizer steps")
    p.add_argument("--every", type=int, default=4, help="log a checkpoint every N steps")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_samples", type=int, default=100, help="analysis: examples per split")
    p.add_argument("--analyze", default="true", help="false: only train and log")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    data = load_data("digits")  # tc's loader, used here only for the tensors; any loader of the same data works
    model = torchvision.models.resnet18(weights=None, num_classes=data.num_classes)  # your model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def inputs(x: torch.Tensor) -> torch.Tensor:
        # tc feeds the analysis the same way: standardised, grey repeated to the 3 channels torchvision expects
        return data.normalize(x).repeat(1, 3, 1, 1)

    if not os.environ.get("MLFLOW_EXPERIMENT_NAME") and not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        mlflow.set_experiment("tc")
    n = len(data.train_y)
    per_epoch = n // args.batch_size
    with mlflow.start_run() as run:
        tc.log_run_info(
            model="torchvision:resnet18",
            dataset="digits",
            data=data,
            epochs=max(1, -(-args.steps // per_epoch)),
            batch_size=args.batch_size,
            optimizer="adam",
            lr=1e-3,
            momentum=0.9,  # Adam's beta1
            schedule="constant",
            seed=0,
        )
        ckpt = tc.CheckpointLogger(model, every=args.every)  # logs the initialisation (step 0) right away
        g = torch.Generator().manual_seed(0)
        order, step = torch.randperm(n, generator=g), 0
        model.train()
        while step < args.steps:
            i = (step % per_epoch) * args.batch_size
            if i == 0 and step:
                order = torch.randperm(n, generator=g)
            idx = order[i : i + args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(inputs(data.train_x[idx])), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            ckpt.step(step, step / per_epoch)
        model.eval()
        with torch.no_grad():
            test_acc = (model(inputs(data.test_x)).argmax(1) == data.test_y).float().mean().item()
            train_acc = (model(inputs(data.train_x)).argmax(1) == data.train_y).float().mean().item()
        mlflow.log_metrics({"test_acc": test_acc, "train_acc": train_acc, "train_loss": loss.item()}, step=step)
        ckpt.close(step, step / per_epoch)  # logs the final step if `every` missed it; refreshes the description
        run_id, experiment_id = run.info.run_id, run.info.experiment_id
    print(f"own loop: trained {step} steps, test_acc {test_acc:.4f}; run {run_id}", flush=True)

    if args.analyze.lower() == "true":
        mlflow.projects.run(
            str(ROOT),
            entry_point="analyze",
            env_manager="local",
            experiment_id=experiment_id,
            parameters={
                "run_id": run_id,
                "max_samples": args.max_samples,
                "splits": "train,test",
                "anisotropy": "false",  # a short demo: the SGD-noise statistics and baseline measures are
                "measures": "false",  # slow on an 11M-parameter model (and the latter need tc's own models)
            },
        )
        m = mlflow.tracking.MlflowClient().get_run(run_id).data.metrics
        print("own loop: " + "  ".join(f"{k} {m[k]:.4f}" for k in ("tc_kappa_test", "tc_test", "test_acc") if k in m))
    return run_id


if __name__ == "__main__":
    main()
    sys.exit(0)
