"""Same-seed training is bit-identical on every model, width, image size and thread count, both on this CPU
as it is and with oneDNN/ATen capped at AVX2 (what an AVX2-only CPU runs; issue 11).

Thread counts and the ISA caps must be set before torch is imported, so each (setting, threads) pair runs in a
fresh interpreter (this file run as a script) that loops over all configurations. Inputs are the digits
images, upscaled by nearest neighbour (and repeated to 3 channels at 32x32), so they keep the exact repeated
pixel values (flat backgrounds) that exposed the fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
SETTINGS = {"native": {}, "avx2": AVX2}
MODELS = {"resnet20": 8, "vgg": 6, "mlp": 3}  # model -> depth (resnet20 depth 8 has both stride-2 shortcuts)
WIDTHS = (4, 8, 16)
SIZES = (8, 28, 32)


def _worker(threads: int, guard: bool, configs: list[tuple[str, int, int]]) -> list[dict]:
    """Train each (model, width, image size) twice from seed 0 (2 SGD steps, batch 32) and compare."""
    import torch

    torch.set_num_threads(threads)
    import tc.core.train
    from tc.config import TrainConfig
    from tc.core.data import DataBundle, load_data
    from tc.core.models import ModelSpec, build_model

    guarded = tc.core.train.guard_cpu_kernels
    if not guard:  # the power check: the code path without the guard must be caught
        tc.core.train.guard_cpu_kernels = lambda model, device: 0
    digits = load_data("digits", train_size=64)
    out = []
    for model, width, size in configs:
        channels = 3 if size == 32 else 1

        def grow(x, size=size, channels=channels):
            x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="nearest").to(torch.uint8)
            return x.repeat(1, channels, 1, 1)

        data = DataBundle(
            "digits-up", grow(digits.train_x), digits.train_y, digits.train_y, grow(digits.test_x[:32]),
            digits.test_y[:32], 10, digits.mean * channels, digits.std * channels,
        )  # fmt: skip
        cfg = TrainConfig(dataset="digits", model=model, depth=MODELS[model], width=width, epochs=1, batch_size=32)
        states = []
        for _ in range(2):
            torch.manual_seed(0)
            net = build_model(ModelSpec(model, MODELS[model], width, channels, size, 10))
            tc.core.train.train(net, data, cfg)
            states.append(net.state_dict())
        same = all(torch.equal(states[0][k], states[1][k]) for k in states[0])
        row = {"model": model, "width": width, "size": size, "identical": same}
        if not guard:  # also how far the unguarded weights are from the guarded (correct) ones
            tc.core.train.guard_cpu_kernels, unguarded = guarded, tc.core.train.guard_cpu_kernels
            torch.manual_seed(0)
            net = build_model(ModelSpec(model, MODELS[model], width, channels, size, 10))
            tc.core.train.train(net, data, cfg)
            tc.core.train.guard_cpu_kernels = unguarded
            ref = net.state_dict()
            row["max_abs_diff_vs_guarded"] = max(
                (states[0][k].double() - ref[k].double()).abs().max().item() for k in ref
            )
        out.append(row)
    return out


def _run(setting: str, threads: int, guard: bool = True, configs=None) -> tuple[int, list[dict], str]:
    configs = configs or [(m, w, s) for m in MODELS for w in WIDTHS for s in SIZES]
    env = {**os.environ, **SETTINGS[setting], "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, __file__, json.dumps({"threads": threads, "guard": guard, "configs": configs})],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    results = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else []
    return p.returncode, results, p.stderr[-2000:]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_same_seed_training_is_bit_identical(setting, threads):
    rc, results, err = _run(setting, threads)
    assert rc == 0, f"the training process died ({rc}) under {setting}, {threads} thread(s):\n{err}"
    assert len(results) == len(MODELS) * len(WIDTHS) * len(SIZES)
    differ = [r for r in results if not r["identical"]]
    assert not differ, f"same-seed runs differ under {setting}, {threads} thread(s): {differ}"


def test_the_check_catches_the_unguarded_avx2_kernel():
    """Power: without tc's guard, capped at AVX2, the check fails (differing weights or a dead process) on the
    configuration of issue 11, as long as this torch ships the faulty kernel (torch 2.14.1 / oneDNN 3.12)."""
    import torch

    if not torch.__version__.startswith("2.14."):
        pytest.skip(f"the faulty kernel was seen in torch 2.14.1; this is torch {torch.__version__}")
    rc, results, _ = _run("avx2", 2, guard=False, configs=[("resnet20", 4, 8)])
    # The faulty kernel is wrong (relative error 0.06-1 on the shortcut's weight gradient) and only sometimes
    # non-deterministic, so same-seed comparison alone caught it in most runs but not all (it passed once on a
    # loaded machine). Comparing with the guarded weights catches the wrong result every time; the two paths
    # compute the same function, so correct kernels agree to rounding (~1e-7).
    assert rc != 0 or not results[0]["identical"] or results[0]["max_abs_diff_vs_guarded"] > 1e-4, results


def test_the_faulty_kernel_is_wrong_and_the_guards_form_is_right_when_capped_at_avx2():
    """Kernel-level power check, deterministic: the pure-torch reproducer (scripts/repro_onednn_avx2.py)
    compares oneDNN's strided 1x1 weight gradient with the mkldnn-disabled reference under the AVX2 cap."""
    import torch

    if not torch.__version__.startswith("2.14."):
        pytest.skip(f"the faulty kernel was seen in torch 2.14.1; this is torch {torch.__version__}")
    env = {**os.environ, **AVX2, "OMP_NUM_THREADS": "2"}
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "repro_onednn_avx2.py"), "--child"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode != 0, p.stdout  # 1: wrong gradients found; negative: the kernel crashed the process
    guard_rows = [line for line in p.stdout.splitlines() if "tc's guard" in line]
    assert p.returncode < 0 or (guard_rows and all(line.lstrip().startswith("ok") for line in guard_rows)), p.stdout


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    print(json.dumps(_worker(args["threads"], args["guard"], [tuple(c) for c in args["configs"]])))
