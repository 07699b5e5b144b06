"""What the per-epoch test evaluation costs a sweep trial: one trial-like training with `test_every=1` (the test set
evaluated at every epoch end) against `test_every=0` (at the last epoch only), in one process, same seed.

    python benchmarks/eval_every.py              # the report's conv trial: resnet20 depth 8, width 8, 500 images
    python benchmarks/eval_every.py --dataset digits --model mlp --depth 0 --width 64 --train_size 600

Both runs call `tc.core.train.train` with the same config but `test_every`, so they train the same weights (the
evaluations draw no random numbers); the script checks that both end at the same epoch with the same final
`test_acc`, `train_eval_loss` and `train_acc_clean` (what a sweep reads), and prints wall time, epochs, the
seconds per epoch a trial's `*_cost_epochs` divide by, and `uptime`'s load before and after (the machine is
shared: a load above its core count slows both runs). A trial trains two seeds: its saving is twice this one's.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import time

import torch

from tc.config import TrainConfig
from tc.core.data import load_data
from tc.core.models import ModelSpec, build_model
from tc.core.train import train

FINAL = ("test_acc", "test_loss", "train_eval_loss", "train_acc_clean", "epochs_trained", "converged")


class _Epochs:
    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []

    def on_epoch_end(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self.metrics.append(dict(metrics))


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--train_size", type=int, default=500)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--target_loss", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=60, help="the cap")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    base = TrainConfig(
        dataset=args.dataset, model=args.model, depth=args.depth, width=args.width, train_size=args.train_size,
        batch_size=args.batch_size, target_loss=args.target_loss, epochs=args.epochs, seed=args.seed, device="cpu",
    )  # fmt: skip
    data = load_data(base.dataset, train_size=base.train_size, seed=base.seed)
    print(f"{base.model} depth {base.depth} width {base.width} on {base.dataset}: {len(data.train_y)} train / "
          f"{len(data.test_y)} test images, batch {base.batch_size}, target_loss {base.target_loss}, "
          f"cap {base.epochs}, seed {base.seed}, {torch.get_num_threads()} threads")  # fmt: skip
    warm = dataclasses.replace(base, epochs=1, target_loss=0.0)  # first-call costs (kernel set-up) out of the timing
    train(build_model(ModelSpec.of(warm, data)), data, warm)
    print(f"load before: {_uptime()}")
    runs = {}
    for every in (1, 0):
        cfg = dataclasses.replace(base, test_every=every)
        torch.manual_seed(cfg.seed)
        model = build_model(ModelSpec.of(cfg, data))
        rec = _Epochs()
        t0 = time.perf_counter()
        train(model, data, cfg, [rec])
        runs[every] = (time.perf_counter() - t0, rec.metrics)
    print(f"load after:  {_uptime()}")

    print(f"{'test_every':>10} {'wall s':>8} {'epochs':>6} {'s/epoch':>8} {'test evals':>10} {'test_acc':>8}")
    for every, (wall, epochs) in runs.items():
        evals = sum("test_acc" in m for m in epochs)
        print(f"{every:>10} {wall:8.1f} {len(epochs):6d} {wall / len(epochs):8.2f} {evals:10d} "
              f"{epochs[-1]['test_acc']:8.4f}")  # fmt: skip
    (w1, e1), (w0, e0) = runs[1], runs[0]
    same = len(e1) == len(e0) and all(e1[-1].get(k) == e0[-1].get(k) for k in FINAL)
    same_train = [m["train_loss"] for m in e1] == [m["train_loss"] for m in e0]
    print(f"speed-up {w1 / w0:.2f}x; final {', '.join(FINAL)} identical: {same}; train_loss curve identical: "
          f"{same_train}")  # fmt: skip
    if not (same and same_train):
        raise SystemExit("test_every changed the training: it must change nothing but the time")


if __name__ == "__main__":
    main()
