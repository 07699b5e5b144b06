"""Devices and what the CPU can do: the device to run on, the CPU capability, native bf16, and the one
oneDNN kernel tc keeps its models away from.

The faulty kernel (docs/cpu-determinism.md, scripts/repro_onednn_avx2.py): with torch 2.14.1 / oneDNN 3.12,
the weight gradient of a 1x1 convolution with stride > 1 runs oneDNN's `jit_1x1:avx2` backward-weights
kernel on CPUs without AVX-512. With 2 to 4 input channels and channels_last tensors, that kernel returns
wrong, run-to-run different weight gradients and writes outside its buffers (glibc heap corruption).
ResNet-20's first projection shortcut at width 4 is such a convolution. A 1x1 convolution with stride s
equals the same convolution with stride 1 on the input subsampled by s, and that form takes oneDNN's correct
unit-stride kernels, so `guard_cpu_kernels` rewrites only those modules, only where the faulty kernel runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

# oneDNN ISA names (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) that cap oneDNN below AVX-512.
_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda was asked for, but torch sees no CUDA device; use device=cpu or auto")
    return torch.device(device)


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """Float32 matrix products and convolutions in full fp32 on a CUDA `device` while the block runs, the
    caller's settings restored after. On CUDA, cuDNN computes float32 convolutions in TF32 by default (10-bit
    mantissa), and `torch.set_float32_matmul_precision("high")` makes matmuls do so too: an analysis at
    precision=fp32 (and the fp32 parts of one at bf16: features, statistics, the bf16 control's reference)
    would then differ from the CPU's by far more than rounding. bf16 autocast regions are unaffected. A no-op
    on other devices."""
    if device.type != "cuda":
        yield
        return
    matmul, conv = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = conv


def cpu_capability() -> str:
    """ATen's CPU capability, e.g. 'AVX512', 'AVX2', 'DEFAULT' (follows ATEN_CPU_CAPABILITY)."""
    return torch.backends.cpu.get_cpu_capability()


def onednn_has_avx512() -> bool:
    """Whether oneDNN may use AVX-512 kernels: the CPU has AVX-512 (as ATen sees it) and neither
    ONEDNN_MAX_CPU_ISA nor DNNL_MAX_CPU_ISA caps oneDNN below it. The two libraries pick their ISA
    independently, so both are checked."""
    if not cpu_capability().startswith("AVX512"):
        return False
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    return cap not in _BELOW_AVX512


def has_native_bf16() -> bool:
    """Whether bf16 matmuls/convolutions run natively on this CPU (AVX512_BF16 / AMX), so bf16 autocast is
    a speed-up rather than an emulated slow-down. oneDNN's own check; it honours ONEDNN_MAX_CPU_ISA."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_description() -> str:
    """One line naming the CPU and what torch uses of it, for logs and benchmark output."""
    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return (
        f"{name}; torch {torch.__version__}; CPU capability {cpu_capability()}; "
        f"oneDNN AVX-512 {'yes' if onednn_has_avx512() else 'no'}; native bf16 {'yes' if has_native_bf16() else 'no'}; "
        f"threads {torch.get_num_threads()}"
    )


def needs_strided_1x1_guard(device: torch.device) -> bool:
    """True where oneDNN would run its faulty AVX2 backward-weights kernel for strided 1x1 convolutions."""
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and not onednn_has_avx512()


class SubsampledConv1x1(nn.Conv2d):
    """A 1x1, unpadded, strided `nn.Conv2d` computed as subsample-then-unit-stride convolution: the same
    function and the same parameters (state dicts are unchanged), but oneDNN's correct unit-stride kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        return nn.functional.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias, 1, 0, self.dilation, self.groups)


def _is_strided_1x1(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.kernel_size == (1, 1)
        and m.stride != (1, 1)
        and m.padding in ((0, 0), "valid")
        and m.dilation == (1, 1)
        and m.padding_mode == "zeros"
        and m.in_channels < 8  # faulty for 2-4 input channels (fewer than AVX2's 8 floats); 8+ are correct
    )


def guard_cpu_kernels(model: nn.Module, device: torch.device) -> int:
    """Steer `model`'s strided 1x1 convolutions off oneDNN's faulty kernel where it would run (in place;
    returns how many modules changed). Elsewhere (AVX-512, CUDA) nothing changes, so results stay
    bit-identical to before the guard existed."""
    if not needs_strided_1x1_guard(device):
        return 0
    changed = 0
    for m in model.modules():
        if _is_strided_1x1(m):
            m.__class__ = SubsampledConv1x1  # same attributes and parameters; only forward differs
            changed += 1
    return changed


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str | None]:
    """The precision to compute in, and why it differs from `precision` (None when it does not).

    bf16 autocast is only a speed-up where the hardware computes bf16 natively; elsewhere (e.g. an AVX2-only
    CPU) oneDNN emulates it, slower than fp32 and less exact, so bf16 falls back to fp32 there."""
    if precision != "bf16":
        return precision, None
    if device.type == "cuda":
        native, where = torch.cuda.is_bf16_supported(), "this GPU"
    else:
        native, where = has_native_bf16(), f"this CPU (capability {cpu_capability()})"
    if native:
        return precision, None
    return "fp32", f"precision=bf16 asked for, but {where} has no native bf16 (emulated bf16 is slower); using fp32"
