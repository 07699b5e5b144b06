"""Training speed with and without tc's guard against oneDNN's faulty AVX2 kernel (issue 11), in one run.

    python benchmarks/cpu_guard.py              # ResNet-20 width 4 on digits, batch 128
    python benchmarks/cpu_guard.py --width 16   # a width the guard does not touch (ratio ~1 expected)

For each CPU setting (as this CPU is; capped at AVX2 with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)
and each variant (guard off = torch's kernels as they come; guard on = tc's default; mkldnn off = the blunt
alternative), a fresh process trains the model with `tc.core.train.train` and reports training images/s over the
steps after the first epoch (warm-up). A process that dies (the faulty kernel can corrupt the heap) is
reported as such. Ratios are guard on / guard off within the same setting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

VARIANTS = ("guard off", "guard on", "mkldnn off")
SETTINGS = {"native": {}, "AVX2-capped": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import tc.core.train
    from tc.config import TrainConfig
    from tc.core.data import load_data
    from tc.core.device import cpu_description
    from tc.core.models import ModelSpec, build_model

    if args.variant == "guard off":
        tc.core.train.guard_cpu_kernels = lambda model, device: 0
    if args.variant == "mkldnn off":
        torch.backends.mkldnn.enabled = False
    data = load_data("digits", train_size=args.train_size)
    cfg = TrainConfig(
        dataset="digits", model="resnet20", depth=args.depth, width=args.width, epochs=args.epochs,
        batch_size=args.batch_size,
    )  # fmt: skip
    times = []

    class Clock:
        def on_step(self, step, loss):
            times.append(time.perf_counter())

    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet20", args.depth, args.width, 1, 8, 10))
    tc.core.train.train(model, data, cfg, [Clock()])
    spe = len(times) // args.epochs
    steps = times[spe:]  # after the first epoch; epoch ends include a test-set evaluation, excluded below
    per_step = [b - a for a, b in itertools.pairwise(steps)]
    per_step.sort()
    median = per_step[len(per_step) // 2]
    print(json.dumps({"images_per_s": args.batch_size / median, "cpu": cpu_description()}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--train_size", type=int, default=1280)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        child(args)
        return 0
    print(
        f"ResNet-20 depth {args.depth} width {args.width}, digits 8x8, batch {args.batch_size}, "
        f"{args.threads} threads; median training images/s after the first epoch"
    )
    for setting, extra in SETTINGS.items():
        rates = {}
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, *(argv or sys.argv[1:]), "--variant", variant]
            env = {**os.environ, **extra, "OMP_NUM_THREADS": str(args.threads)}
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode:
                print(f"  {setting:12s} {variant:10s}: process died ({r.returncode}): {r.stderr.strip()[-80:]}")
                continue
            out = json.loads(r.stdout.strip().splitlines()[-1])
            rates[variant] = out["images_per_s"]
            print(f"  {setting:12s} {variant:10s}: {rates[variant]:8.0f} images/s   [{out['cpu']}]", flush=True)
        if "guard on" in rates and "guard off" in rates:
            print(f"  {setting:12s} guard on / guard off = {rates['guard on'] / rates['guard off']:.3f}")
        if "guard on" in rates and "mkldnn off" in rates:
            print(f"  {setting:12s} mkldnn off / guard on = {rates['mkldnn off'] / rates['guard on']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
