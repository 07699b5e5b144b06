"""Minimal pure-torch reproducer of issue 11: oneDNN's AVX2 weight gradient of a strided 1x1 convolution.

    python scripts/repro_onednn_avx2.py          # checks this CPU as it is, and capped at AVX2
    python scripts/repro_onednn_avx2.py --child  # one check in this process (environment as given)

The op: `torch.ops.aten.convolution_backward` for a 1x1 convolution, stride 2, no padding, float32 -- ResNet-20's
projection shortcut (e.g. 4 -> 8 channels, 8x8 -> 4x4, batch 256, channels_last). On a CPU without AVX-512
(or with ONEDNN_MAX_CPU_ISA=AVX2), oneDNN 3.12 in torch 2.14.1 runs it with `jit_1x1:avx2` backward_weights,
whose weight gradient differs from the reference (mkldnn disabled) and from call to call, and which corrupts
the heap (glibc abort) at 1 thread. The same convolution written as subsample-then-stride-1 (tc's guard) is
correct. Each setting runs in a child process, since the bug can abort it.
Exit status: 0 if every setting is correct and deterministic, 1 if any is not.
"""

from __future__ import annotations

import os
import subprocess
import sys

SHAPES = [  # (batch, in channels, out channels, image size): ResNet-20 shortcuts at widths 4, 8, 16
    (256, 4, 8, 8),
    (256, 8, 16, 4),
    (256, 8, 16, 8),
    (256, 16, 32, 16),
    (256, 2, 4, 8),
]


def child() -> int:
    import torch

    torch.manual_seed(0)

    def grad_w(g, x, w, stride):
        return torch.ops.aten.convolution_backward(
            g, x, w, None, stride, (0, 0), (1, 1), False, (0, 0), 1, (False, True, False)
        )[1]

    print(f"  capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}", flush=True)
    bad = 0
    for mb, ci, co, hw in SHAPES:
        x = torch.randn(mb, ci, hw, hw).contiguous(memory_format=torch.channels_last)
        g = torch.randn(mb, co, hw // 2, hw // 2).contiguous(memory_format=torch.channels_last)
        w = torch.randn(co, ci, 1, 1).contiguous(memory_format=torch.channels_last)
        with torch.backends.mkldnn.flags(enabled=False):
            ref = grad_w(g, x, w, (2, 2))
        for name, (xs, stride) in (
            ("stride-2 1x1 (oneDNN)", (x, (2, 2))),
            ("subsample + stride-1 1x1 (tc's guard)", (x[:, :, ::2, ::2], (1, 1))),
        ):
            outs = [grad_w(g, xs, w, stride) for _ in range(10)]
            err = max(((o - ref).abs().max() / ref.abs().max()).item() for o in outs)
            same = all(torch.equal(o, outs[0]) for o in outs)
            ok = err < 1e-4 and same
            bad += not ok
            print(
                f"  {'ok    ' if ok else 'FAULTY'} x {mb}x{ci}x{hw}x{hw} -> {co} ch, {name}: "
                f"max rel. error vs reference {err:.2e}, 10 calls identical: {same}",
                flush=True,
            )
    return 1 if bad else 0


def main() -> int:
    settings = [("as this CPU is", {})]
    avx2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    settings.append(("capped at AVX2 (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)", avx2))
    failed = []
    for label, extra in settings:
        for threads in ("2", "1"):
            env = {**os.environ, **extra, "OMP_NUM_THREADS": threads}
            print(f"{label}, OMP_NUM_THREADS={threads}:", flush=True)
            p = subprocess.run([sys.executable, __file__, "--child"], env=env)
            if p.returncode:
                why = f"crashed ({p.returncode})" if p.returncode != 1 else "wrong or non-deterministic gradients"
                failed.append(f"{label}, {threads} thread(s): {why}")
    print()
    if failed:
        print("VERDICT: oneDNN's strided 1x1 weight gradient is FAULTY here:\n  " + "\n  ".join(failed))
        return 1
    print("VERDICT: correct and deterministic in every setting")
    return 0


if __name__ == "__main__":
    sys.exit(child() if "--child" in sys.argv else main())
