"""Every phase of one analysis against its arithmetic floor, in one run (issue 21).

    python benchmarks/analyze_phases.py                          # the quick start's model and analysis
    python benchmarks/analyze_phases.py --cache_dir /tmp/phases  # train once, then reuse the checkpoints
    python benchmarks/analyze_phases.py --epochs 2 --train_size 2000   # a quicker model
    python benchmarks/analyze_phases.py --smoke                  # digits MLP, seconds (tests/test_phases.py)
    python benchmarks/analyze_phases.py --device cuda --json P   # also the metrics and phase times as JSON

It trains the quick start's model in process (ResNet-20 width 16 on 5,000 Fashion-MNIST images, 5 epochs,
checkpoints every eighth of training: `entrypoints/main.py`), or loads its checkpoints from `--cache_dir`,
selects the checkpoints the quick start analyzes (`tc.analysis.splits.window_spread_steps`) and runs
`tc.analysis.run.analyze_run` at the quick start's analysis settings (500 samples, the default splits,
anisotropy on) but with the measures gm_* and tc_mmd on, which the quick start leaves out (it prints none) and
`analyze` computes by default. It then prints one table, from the phase timers the analysis logs:

    | phase | seconds | floor (s) | ratio | what the floor counts |

A phase's floor is the forward passes it must do (a backward counts as 2 forwards), in FLOPs counted with
`torch.utils.flop_counter.FlopCounterMode` on batch-1 passes of the model parts involved, times the pass
counts, divided by the rate (FLOP/s) that the composite phase reaches in the same run (its FLOPs over its
seconds): the composite rows are 1.0x by construction, and a yardstick line compares that rate with the best
rate of one plain forward pass, so that a slow composite phase cannot hide. Linear-algebra phases state
their floor as the flops of the work they must do at an f64 GEMM rate measured in the same run, or have none.
It also counts how many whole-network predictions of the composite pass (channels_last, the diagonal
g[i, i]) differ from the contiguous forward pass that tc_full used before issue 21
(`benchmarks.reference.old_network_predictions`).

`--json PATH` also writes {"device", "cpu", "metrics": the analysis's metrics, "phases": {phase: seconds}} (the
table's rows; the wall time as `analyze_run`): scripts/gpu_check.sh compares a CUDA and a CPU run of the same
checkpoints with it (scripts/compare_metrics.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import tc.analysis.consistency as consistency
import tc.core.baselines as baselines
from tc.analysis.inputs import RunContext
from tc.analysis.run import analyze_run
from tc.analysis.splits import checkpoint_interval, make_splits, parse_cuts, window_spread_steps
from tc.config import AnalyzeConfig, TrainConfig
from tc.core import consistency as C
from tc.core.checkpoints import Checkpoints
from tc.core.data import DataBundle, load_data, steps_per_epoch
from tc.core.device import cpu_description, exact_fp32, resolve_device
from tc.core.models import BlockNet, ModelSpec, at_state, build_model
from tc.core.sgd_noise import KINDS, PerturbOptions
from tc.core.train import train

try:  # the package's own imports of benchmarks/ (from the repository root)
    from benchmarks.reference import old_network_predictions
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from reference import old_network_predictions


def flops(fn, *args) -> int:
    """FLOPs that `fn(*args)` does, as torch's FlopCounterMode counts them (matrix products and convolutions:
    2 per multiply-add; elementwise operations, BatchNorm in eval mode and pooling are not counted)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn(*args)
    return counter.get_total_flops()


class Collect:
    """The state dicts the training loop saves at its checkpoint steps."""

    def __init__(self):
        self.steps, self.sds = [], []

    def on_save(self, step, epoch, model, state, checkpoint):
        if checkpoint and step not in self.steps:
            self.steps.append(step)
            self.sds.append({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()})


def trained(cfg: TrainConfig, data: DataBundle, spec: ModelSpec, cache_dir: str | None) -> tuple[list, list, float]:
    """(steps, state dicts, training seconds) of the run `cfg`: trained in process, or loaded from `cache_dir`."""
    path = None
    if cache_dir:
        key = f"{cfg.dataset}_{cfg.model}_w{cfg.width}_e{cfg.epochs}_n{cfg.train_size}_s{cfg.seed}"
        path = Path(cache_dir) / f"analyze_phases_{key}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=True)
            return saved["steps"], saved["state_dicts"], float("nan")
    torch.manual_seed(cfg.seed)
    collect = Collect()
    t0 = time.perf_counter()
    train(build_model(spec), data, cfg, [collect])
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"steps": collect.steps, "state_dicts": collect.sds}, path)
    return collect.steps, collect.sds, seconds


def part_flops(model: BlockNet, sd: dict, x1: torch.Tensor, cuts: list[int]) -> dict:
    """Batch-1 FLOPs of the model parts: `full` forward, `shallow[c]` (input to cut c), `deep[c]` (cut c to
    the head) and the feature size `dim[c]` at each cut."""
    m = at_state(model, sd)
    z = {c: m.forward_blocks(x1, 0, c) for c in cuts}
    return {
        "full": flops(m, x1),
        "shallow": {c: flops(lambda a, c=c: m.forward_blocks(a, 0, c), x1) for c in cuts},
        "deep": {c: flops(lambda a, c=c: m.forward_blocks(a, c), z[c]) for c in cuts},
        "dim": {c: z[c][0].numel() for c in cuts},
    }


def forward_rate(model: BlockNet, sd: dict, x: torch.Tensor, fl_full: int, device: str = "cpu") -> tuple[float, int]:
    """(FLOP/s, batch) of the fastest plain fp32 forward pass (channels_last, inference mode) on `device` (the
    analysis's, so that the yardstick measures the hardware the composites ran on) over a few batch sizes: the
    yardstick for the composite phase's rate."""
    m = at_state(model, sd).to(device, memory_format=torch.channels_last)
    sync = (
        torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    )  # CUDA kernels run asynchronously
    best = (0.0, 0)
    for b in (64, 128, 256):
        big = x.repeat(-(-b // len(x)), *([1] * (x.dim() - 1)))[:b].to(device)
        big = big.contiguous(memory_format=torch.channels_last) if big.dim() == 4 else big
        with torch.inference_mode():
            m(big)
            sync()
            t0 = time.perf_counter()
            for _ in range(3):
                m(big)
            sync()
            dt = (time.perf_counter() - t0) / 3
        best = max(best, (fl_full * b / dt, b))
    return best


def f64_gemm_rate(n: int = 1024) -> float:
    """FLOP/s of an n x n float64 matrix product (the linear-algebra phases' rate)."""
    a = torch.randn(n, n, dtype=torch.float64)
    a @ a
    t0 = time.perf_counter()
    for _ in range(3):
        a @ a
    return 2 * n**3 * 3 / (time.perf_counter() - t0)


def machine() -> str:
    """CPU model and ISA (lscpu, and what torch uses of it), torch version, date, load average."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model_name = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), "?")
    except OSError:
        model_name = "?"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"# CPU: {model_name}; {cpu_description()}\n# torch {torch.__version__}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}; load average {load}; {os.cpu_count()} CPUs"
    )


class Spy:
    """Records the whole-network predictions of each split (`network_predictions`) and counts the sharpness
    search's σ evaluations (`_perturbed_increase` calls) where the analysis does not log gm_sharpness_evals."""

    def __init__(self):
        self.preds, self.sharpness_evals = {}, 0
        self._net, self._rise = consistency.network_predictions, getattr(baselines, "_perturbed_increase", None)

    def __enter__(self):
        def net(plan, indices, split, *a, **k):
            pred = self._net(plan, indices, split, *a, **k)
            self.preds[split.name] = (indices, split, pred)
            return pred

        def rise(*a, **k):
            self.sharpness_evals += 1
            return self._rise(*a, **k)

        consistency.network_predictions = net
        if self._rise is not None:
            baselines._perturbed_increase = rise
        return self

    def __exit__(self, *exc):
        consistency.network_predictions = self._net
        if self._rise is not None:
            baselines._perturbed_increase = self._rise


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train_size", type=int, default=5000)
    p.add_argument("--max_samples", type=int, default=500)
    p.add_argument("--cache_dir", default=None, help="keep the trained checkpoints here and reuse them")
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true", help="digits MLP, tiny: checks that the script runs")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the metrics and phase times here")
    args = p.parse_args(argv)

    if args.smoke:
        tcfg = TrainConfig(dataset="digits", model="mlp", width=16, epochs=2, train_size=256, batch_size=32)
        acfg = dict(max_samples=40, null_draws=100, grad_batches=5)
    else:
        tcfg = TrainConfig(dataset="fashion-mnist", model="resnet20", width=16, epochs=args.epochs,
                           train_size=args.train_size, batch_size=128)  # fmt: skip
        acfg = dict(max_samples=args.max_samples)
    data = load_data(tcfg.dataset, train_size=tcfg.train_size, seed=tcfg.seed)
    total = tcfg.epochs * steps_per_epoch(len(data.train_y), tcfg.batch_size)
    tcfg = dataclasses.replace(tcfg, checkpoint_every=checkpoint_interval(total))  # the quick start's saves
    spec = ModelSpec.of(tcfg, data)
    steps, sds, train_s = trained(tcfg, data, spec, args.cache_dir)
    chosen = window_spread_steps(steps)
    ckpts = Checkpoints(chosen, [sds[steps.index(s)] for s in chosen])
    cfg = AnalyzeConfig(run_id="analyze_phases", checkpoints=",".join(map(str, chosen)), device=args.device, **acfg)
    model = build_model(spec)
    run = RunContext(model, tcfg.batch_size, tcfg.seed, init=sds[0])

    t0 = time.perf_counter()
    with Spy() as spy:
        result = analyze_run(ckpts, data, cfg, run)
    wall = time.perf_counter() - t0
    m = result.metrics

    # --- the floors ---
    cuts = parse_cuts(cfg.cut_spec, model)
    splits = make_splits(data, cfg)
    x1 = data.normalize(data.test_x[:1])
    fl = part_flops(model, ckpts.state_dicts[-1], x1, cuts)
    F, S, D, deepest = fl["full"], fl["shallow"], fl["deep"], max(cuts)
    T = len(chosen)
    win = C.window(chosen, cfg.window)
    pairs = T * (T - 1) if cfg.matrix == "full" else T - 1  # deep parts per cut; the diagonal is the shallow pass
    composite = {s.name: len(s.y) * (T * F + pairs * sum(D.values())) for s in splits}
    composite_s = sum(m[f"tc_{name}_seconds"] for name in composite)
    rate = sum(composite.values()) / composite_s
    device = resolve_device(cfg.device)
    with exact_fp32(device):  # the fp32 the composites ran in: no TF32 convolutions on CUDA
        best_rate, best_b = forward_rate(model, ckpts.state_dicts[-1], data.normalize(splits[0].x[:256]), F, device)
    rate64 = f64_gemm_rate()

    test = next(s for s in splits if s.name == "test")
    train_split = next((s for s in splits if s.name == "train"), None)
    n_test, n_train = len(test.y), len(train_split.y) if train_split is not None else 0
    grad_batches = min(cfg.grad_batches, len(data.train_y) // run.train_batch_size)
    po = PerturbOptions(k=cfg.aniso_k, seed=cfg.seed)
    variants = 1 + po.draws * len(po.eps) * len(KINDS)
    gram_rows = min(po.max_rows, len(win) * n_test)
    aniso = {
        "grad": grad_batches * run.train_batch_size * 3 * F,
        "features": (len(win) + 1) * n_test * S[deepest],
        "perturb": variants * n_test * sum(D.values()),
    }
    # the directions' floor: the smaller Gram matrix per cut (X Xᵀ when rows < dim, else Xᵀ X), at the f64 rate
    gram_s = sum(min(gram_rows, fl["dim"][c]) ** 2 * max(gram_rows, fl["dim"][c]) for c in cuts) / rate64
    evals = m.get("gm_sharpness_evals", spy.sharpness_evals)
    draws = baselines.SharpnessOptions().draws

    rows = []  # (phase, seconds, floor seconds or None, what the floor counts)
    for s in splits:
        what = (
            f"{len(s.y)} samples × ({T} whole networks + {pairs} deep parts at each of the cuts {cuts}); "
            "the rate's own phase"
        )
        rows.append((f"tc_{s.name}", m[f"tc_{s.name}_seconds"], composite[s.name] / rate, what))
    if "controls_seconds" in m:
        rows.append(("controls", m["controls_seconds"], 0.0, "no control applies (no reference run, fp32)"))
    rows.append(("splits", m["splits_seconds"], None, "no forward floor (subsets and corruptions)"))
    if "anisotropy_seconds" in m:
        floor = sum(aniso.values()) / rate + gram_s
        what = (
            f"gradient noise {grad_batches}×{run.train_batch_size} fwd+bwd; features {len(win) + 1} checkpoints "
            f"× {n_test} to cut {deepest}; perturbation {variants} variants × {n_test} × the deep parts; "
            f"directions: the Gram matrix of {gram_rows} drift rows per cut at the f64 rate; null spectra not counted"
        )
        rows.append(("anisotropy", m["anisotropy_seconds"], floor, what))
        for part, fl_part in aniso.items():
            if f"aniso_{part}_seconds" in m:
                rows.append((f"  aniso_{part}", m[f"aniso_{part}_seconds"], fl_part / rate, "(its part above)"))
        if "aniso_stats_seconds" in m:
            rows.append(("  aniso_stats", m["aniso_stats_seconds"], gram_s, "the Gram matrix per cut at the f64 rate"))
    gm_floor = {
        "gm_sharpness": ((1 + evals * draws) * n_train * F, f"(1 + {evals} σ values × {draws} draws) × {n_train} fwd"),
        "gm_margin": (n_train * F, f"{n_train} fwd (one logits pass, shareable with gm_train_loss)"),
        "gm_train_loss": (n_train * F, f"{n_train} fwd"),
        "gm_disagreement": (2 * n_test * F, f"2 networks × {n_test} fwd"),
        "gm_log_spectral_product": (None, "no forward floor (power iterations on each layer)"),
        "gm_param_norm": (None, "no forward floor (a norm)"),
        "gm_dist_init": (None, "no forward floor (a norm)"),
    }
    for name, (floor_flops, what) in gm_floor.items():
        if f"{name}_seconds" in m:
            rows.append((name, m[f"{name}_seconds"], None if floor_flops is None else floor_flops / rate, what))
    if "tc_mmd_seconds" in m:
        floor_flops = (len(win) * n_train + n_test) * S[deepest]
        what = (
            f"features: {len(win)} window checkpoints × {n_train} train + the final × {n_test} test, to cut {deepest}"
        )
        rows.append(("tc_mmd", m["tc_mmd_seconds"], floor_flops / rate, what))
    floors = [r[2] for r in rows if r[2] is not None and not r[0].startswith(" ")]
    rows.append(("analyze_run (wall)", wall, sum(floors), "the sum of the floors above"))

    print(f"# analyze phases: {spec.model} width {spec.width} on {tcfg.dataset} ({len(data.train_y)} train, "
          f"{tcfg.epochs} epochs{'' if train_s != train_s else f', trained in {train_s:.0f} s'}); "
          f"checkpoints {chosen}, window {[chosen[i] for i in win]}, cuts {cuts}, {cfg.max_samples} samples, "
          f"splits {cfg.splits}, device {cfg.device}")  # fmt: skip
    print(machine())
    print("\n| phase | seconds | floor (s) | ratio | what the floor counts |")
    print("|---|---|---|---|---|")
    for name, sec, floor, what in rows:
        ratio = f"{sec / floor:.2f}x" if floor else "-"
        print(f"| {name} | {sec:.2f} | {'-' if floor is None else f'{floor:.2f}'} | {ratio} | {what} |")
    print(
        f"\nrates: composite phase {rate / 1e9:.3g} GFLOP/s = {rate / best_rate * 100:.0f}% of the best plain "
        f"fp32 forward ({best_rate / 1e9:.3g} GFLOP/s, batch {best_b}); f64 GEMM {rate64 / 1e9:.3g} GFLOP/s; "
        f"batch-1 FLOPs: full forward {F / 1e6:.3g} M, deep parts {[float(f'{D[c] / 1e6:.3g}') for c in cuts]} M"
    )
    for name, (indices, split, pred) in spy.preds.items():
        sds_used = [ckpts.state_dicts[i] for i in indices]
        old = old_network_predictions(model, sds_used, data.normalize(split.x), cfg.batch_size, cfg.device)
        flips = int((old != pred).sum())
        print(
            f"whole networks, {name}: {flips} of {pred.numel()} predictions of the composites' diagonal "
            f"(channels_last) differ from the old contiguous forward"
        )
    if args.json:
        name = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
        phases = {("analyze_run" if row[0] == "analyze_run (wall)" else row[0].strip()): row[1] for row in rows}
        saved = {"device": name, "cpu": cpu_description(), "metrics": {k: float(v) for k, v in m.items()}}
        Path(args.json).write_text(json.dumps({**saved, "phases": phases}, indent=1))


if __name__ == "__main__":
    main()
