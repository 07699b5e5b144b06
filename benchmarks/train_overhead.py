"""Training throughput with full checkpoint logging versus the same loop with no tracking, in one process.

    python benchmarks/train_overhead.py            # quick-start settings
    python benchmarks/train_overhead.py --epochs 2 --repeats 1

Both variants run `tc.core.train.train` on the same data and seed; "tracked" adds the `CheckpointCallback` that the
train entry point uses (every checkpoint + index + resume state as artifacts, metrics per epoch) on a fresh
local sqlite store. Variants alternate and the best of `--repeats` times is kept, which damps the noise of a
shared 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from tc.config import TrainConfig
from tc.core.data import load_data, steps_per_epoch
from tc.core.models import ModelSpec, build_model
from tc.core.train import train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train_size", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    cfg = TrainConfig(dataset=args.dataset, train_size=args.train_size, epochs=args.epochs, width=args.width)
    data = load_data(cfg.dataset, train_size=cfg.train_size, seed=cfg.seed)
    spec = ModelSpec.of(cfg, data)

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the sqlite store and its artifacts live here
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        import mlflow

        from tc.tracking import checkpoints, client

        exp = mlflow.create_experiment("bench")

        def run(tracked: bool) -> float:
            torch.manual_seed(cfg.seed)
            model = build_model(spec)
            callbacks = []
            if tracked:
                run_id = client.client().create_run(exp).info.run_id
                callbacks = [checkpoints.CheckpointCallback(run_id, spec.to_dict())]
            t0 = time.perf_counter()
            train(model, data, cfg, callbacks)
            return time.perf_counter() - t0

        times = {"untracked": [], "tracked": []}
        run(False)  # warm-up: first-touch allocations and kernel selection
        for _ in range(args.repeats):
            for variant in ("untracked", "tracked"):
                times[variant].append(run(variant == "tracked"))

    steps = cfg.epochs * steps_per_epoch(len(data.train_y), cfg.batch_size)
    best = {k: min(v) for k, v in times.items()}
    overhead = best["tracked"] / best["untracked"] - 1
    print(
        f"# train overhead: {cfg.model} width {cfg.width} on {cfg.dataset}, {len(data.train_y)} examples, "
        f"{cfg.epochs} epochs = {steps} steps, {cfg.epochs + 1} checkpoints; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print("| variant | best time (s) | steps/s | all times (s) |")
    print("|---|---|---|---|")
    for k in ("untracked", "tracked"):
        print(f"| {k} | {best[k]:.2f} | {steps / best[k]:.2f} | {', '.join(f'{t:.2f}' for t in times[k])} |")
    print(f"\noverhead of full checkpoint logging: {overhead * 100:+.1f}% (target <= 5%)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
