"""Composite-network evaluation: naive splicing against tc's fast path (fp32 and bf16), in one run.

    python benchmarks/analyze_speed.py                 # ResNet-20 w16, 12 checkpoints, 4 cuts, full matrix
    python benchmarks/analyze_speed.py --samples 128   # shorter

It first trains ResNet-20 briefly on a Fashion-MNIST subset with `checkpoint_every` set so that the run has
12 checkpoints (real weights matter for the bf16 agreement), then times, on the same test samples:
- naive: splice a composite state dict for every (cut, t1, t2) and run a full forward pass (fp32,
  contiguous, batch = all samples), i.e. `tc.core.compose.composite_outputs_naive`;
- fast fp32 / fast bf16: `tc.core.compose.composite_outputs` (shallow features once per checkpoint, deep parts
  batched over all shallow checkpoints, inference mode, channels_last; bf16 autocast).
It also reports the arithmetic floor: the FLOPs that any method must spend (each checkpoint's shallow part
once up to the deepest cut, and the deep part of every (cut, t1, t2) composite), divided by the FLOP rate of
one large full-model forward pass measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tc.config import TrainConfig
from tc.core.compose import ComposeOptions, composite_outputs, composite_outputs_naive
from tc.core.data import load_data
from tc.core.device import cpu_description
from tc.core.models import ModelSpec, build_model
from tc.core.train import train


class Collect:
    def __init__(self):
        self.sds = []

    def on_save(self, step, epoch, model, state, checkpoint):
        if checkpoint:
            self.sds.append({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()})


def flops(module_fn, x) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module_fn(x)
    return counter.get_total_flops()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch_size", type=int, default=128)
    args = p.parse_args(argv)

    cfg = TrainConfig(train_size=2048, epochs=2, checkpoint_every=3, width=args.width, batch_size=128)
    data = load_data(cfg.dataset, train_size=cfg.train_size, seed=0)
    spec = ModelSpec("resnet20", 20, cfg.width, data.in_channels, data.image_size, data.num_classes)
    torch.manual_seed(0)
    collect = Collect()
    train(build_model(spec), data, cfg, [collect])
    sds = collect.sds
    model = build_model(spec)
    cuts = model.stage_cuts
    x, y = data.normalize(data.test_x[: args.samples]), data.test_y[: args.samples]
    T, N = len(sds), len(y)

    timings, outs = {}, {}
    t0 = time.perf_counter()
    outs["naive"] = composite_outputs_naive(
        model, sds, sds, (x, y), cuts, ComposeOptions(batch_size=args.batch_size, channels_last=False)
    )
    timings["naive"] = time.perf_counter() - t0
    for name, precision in (("fast fp32", "fp32"), ("fast bf16", "bf16")):
        t0 = time.perf_counter()
        outs[name] = composite_outputs(
            model, sds, sds, (x, y), cuts, ComposeOptions(batch_size=args.batch_size, precision=precision)
        )
        timings[name] = time.perf_counter() - t0

    # arithmetic floor
    model.load_state_dict(sds[-1])
    model.eval()
    one = x[:1]
    per_sample_deep = {
        cut: flops(lambda z, c=cut: model.forward_blocks(z, c), model.forward_blocks(one, 0, cut)) for cut in cuts
    }
    shallow_once = flops(lambda z: model.forward_blocks(z, 0, max(cuts)), one)
    floor_flops = N * (T * shallow_once + T * T * sum(per_sample_deep.values()))
    # the best fp32 rate of one full forward pass over a few batch sizes (CPU caches favour small ones)
    m = model.to(memory_format=torch.channels_last)
    rate = 0.0
    per_sample = flops(m, one)
    for b in (64, 128, 256, 1024):
        big = x.repeat(-(-b // N), 1, 1, 1)[:b].contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            m(big)
            t0 = time.perf_counter()
            for _ in range(3):
                m(big)
            dt = (time.perf_counter() - t0) / 3
        if per_sample * b / dt > rate:
            rate, best_b = per_sample * b / dt, b
    floor_s = floor_flops / rate

    def same(a, b):
        return all(torch.equal(a[c].pred, b[c].pred) for c in cuts)

    def max_loss_diff(a, b):
        return max((a[c].nll - b[c].nll).abs().max().item() for c in cuts)

    agree_bf16 = sum((outs["fast bf16"][c].pred == outs["naive"][c].pred).double().mean().item() for c in cuts) / len(
        cuts
    )
    print(
        f"# analyze speed: ResNet-20 width {cfg.width}, {T} checkpoints, cuts {cuts}, full {T}x{T} matrix, "
        f"{N} test samples; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"# CPU: {cpu_description()}")  # bf16 only pays where the CPU has it natively (issue 11)
    print("\n| method | time (s) | speed-up vs naive | predictions vs naive |")
    print("|---|---|---|---|")
    print(f"| naive (splice + full forward, fp32) | {timings['naive']:.1f} | 1.0x | - |")
    print(
        f"| fast fp32 | {timings['fast fp32']:.1f} | {timings['naive'] / timings['fast fp32']:.2f}x | "
        f"identical: {same(outs['fast fp32'], outs['naive'])} (max loss diff "
        f"{max_loss_diff(outs['fast fp32'], outs['naive']):.1e}) |"
    )
    print(
        f"| fast bf16 | {timings['fast bf16']:.1f} | {timings['naive'] / timings['fast bf16']:.2f}x | "
        f"agreement {agree_bf16 * 100:.2f}% |"
    )
    print(
        f"| arithmetic floor | {floor_s:.1f} | {timings['naive'] / floor_s:.2f}x | "
        f"{floor_flops / 1e9:.1f} GFLOP at {rate / 1e9:.1f} GFLOP/s (best fp32 forward, batch {best_b}) |"
    )
    print(
        f"\nfast fp32 runs at {floor_s / timings['fast fp32'] * 100:.0f}% of the floor's rate; "
        f"fast bf16 at {floor_s / timings['fast bf16'] * 100:.0f}% of the fp32 floor's rate"
    )


if __name__ == "__main__":
    main()
