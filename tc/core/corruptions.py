"""Deterministic CIFAR-10-C-style corruptions (Hendrycks & Dietterich 2019), generated from the test set.

Each corruption maps uint8 images [N, C, H, W] to uint8 images of the same shape (CIFAR-10-C is stored as
uint8 too), at severity 1..5, with randomness drawn from a generator seeded by (seed, corruption, severity).
Severity parameters follow the CIFAR-10-C code where the corruption is the same; brightness adds to all
channels (CIFAR-10-C adds to HSV value), and the blur is a Gaussian blur.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.functional as TF
from torchvision.io import decode_jpeg, encode_jpeg

from tc.config.vocabulary import CORRUPTION_NAMES  # the names; the configs check them before any data is read

_Fn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]  # float [0, 1] images in and out


def _gaussian_noise(x, c, g):
    return x + torch.randn(x.shape, generator=g) * c


def _shot_noise(x, c, g):
    return torch.poisson(x * c, generator=g) / c


def _impulse_noise(x, c, g):
    u = torch.rand(x.shape, generator=g)
    salt = torch.rand(x.shape, generator=g) < 0.5
    hit = u < c
    return torch.where(hit & salt, 1.0, torch.where(hit, 0.0, x))


def _gaussian_blur(x, c, g):
    radius = max(1, int(3 * c + 0.5))
    return TF.gaussian_blur(x, kernel_size=2 * radius + 1, sigma=c)


def _contrast(x, c, g):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


def _brightness(x, c, g):
    return x + c


def _pixelate(x, c, g):
    size = x.shape[-1]
    small = max(1, int(size * c))
    down = torch.nn.functional.interpolate(x, size=(small, small), mode="area")  # box filter, as PIL's BOX
    return torch.nn.functional.interpolate(down, size=(size, size), mode="nearest")


def _jpeg(x, c, g):
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return torch.stack([decode_jpeg(encode_jpeg(img, quality=int(c))) for img in u8]).float() / 255


# One (function, parameter per severity 1..5) per name of `CORRUPTION_NAMES`, in its order
# (`tests/test_vocabulary.py` checks that they agree).
CORRUPTIONS: dict[str, tuple[_Fn, tuple[float, ...]]] = {
    "gaussian_noise": (_gaussian_noise, (0.04, 0.06, 0.08, 0.09, 0.10)),
    "shot_noise": (_shot_noise, (500, 250, 100, 75, 50)),
    "impulse_noise": (_impulse_noise, (0.01, 0.02, 0.03, 0.05, 0.07)),
    "gaussian_blur": (_gaussian_blur, (0.4, 0.6, 0.7, 0.8, 1.0)),
    "contrast": (_contrast, (0.75, 0.5, 0.4, 0.3, 0.15)),
    "brightness": (_brightness, (0.05, 0.1, 0.15, 0.2, 0.3)),
    "pixelate": (_pixelate, (0.95, 0.9, 0.85, 0.75, 0.65)),
    "jpeg": (_jpeg, (80, 65, 58, 50, 40)),
}


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Corrupt uint8 images `x` [N, C, H, W] with corruption `name` at `severity` (1..5)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTION_NAMES)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity={severity} is out of range; valid: 1..5")
    fn, params = CORRUPTIONS[name]
    g = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}/{severity}".encode()))
    out = fn(x.float() / 255, params[severity - 1], g)
    return (out.clamp(0, 1) * 255).round().to(torch.uint8)


def corrupted_set(
    x: torch.Tensor, names: Sequence[str], severities: Sequence[int], seed: int = 0
) -> tuple[torch.Tensor, list[str], list[int]]:
    """A mixed corrupted copy of `x`: sample k gets the k-th (corruption, severity) pair in round-robin
    order, so every pair covers an equal share and per-corruption scores come from the subgroups at the
    cost of one data set. Returns (images, corruption per sample, severity per sample)."""
    pairs = [(n, s) for n in names for s in severities]
    if not pairs:  # no pair to assign: the result would be torch.empty_like, uninitialised memory
        raise ValueError(
            f"a corrupted set needs at least one corruption and one severity; got corruptions={list(names)}, "
            f"severities={list(severities)}"
        )
    out = torch.empty_like(x)
    tags_n, tags_s = [""] * len(x), [0] * len(x)
    for p, (name, sev) in enumerate(pairs):
        idx = torch.arange(p, len(x), len(pairs))
        if len(idx):
            out[idx] = corrupt(x[idx], name, sev, seed)
            for k in idx.tolist():
                tags_n[k], tags_s[k] = name, sev
    return out, tags_n, tags_s
