"""Data sets by name, held in memory as uint8 tensors, with seeded subsets, label noise and batches.

Files are looked up in this order: the `data_dir` argument, `$TC_DATA_DIR`, tc's cache
(`$TC_CACHE_DIR/data`, default `~/.cache/tc/data`), Debian's `dataset-fashion-mnist` package
(`/usr/share/datasets/fashion-mnist`, decompressed once into the cache), and finally a torchvision download
into the first of those directories, only when `download=True`. The loaders are torchvision's own classes;
images are kept as uint8 N x C x H x W and normalised per batch, so a whole data set stays small in memory
and augmentation runs as batched tensor ops instead of per-image PIL calls.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tc.core.paths import cache_dir, make_private_dir

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DatasetNotFoundError(FileNotFoundError):
    """The data set's files are nowhere tc looks, and downloading was not allowed."""


@dataclass(frozen=True)
class DataBundle:
    """A labelled train/test pair. Images: uint8 [N, C, H, W]; labels: int64 [N].

    Example:

    >>> import tc
    >>> data = tc.load_data("digits", train_size=64)
    >>> x = data.normalize(data.train_x[:8])  # what a model takes: float, standardised per channel
    >>> x.dtype, tuple(x.shape)
    (torch.float32, (8, 1, 8, 8))
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor  # the labels training uses (after label noise)
    train_y_clean: torch.Tensor  # the original labels of the same examples
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, of the full training set in [0, 1]
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float32 network input (per-channel standardised)."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std


def candidate_roots(data_dir: str | None) -> list[Path]:
    roots = [data_dir, os.environ.get("TC_DATA_DIR"), cache_dir() / "data"]
    return [Path(r).expanduser() for r in roots if r]


def _install_debian_fashion_mnist(root: Path) -> bool:
    """Decompress Debian's gzipped IDX files to where torchvision's FashionMNIST reads them."""
    if not all((DEBIAN_FASHION_MNIST / f"{name}.gz").is_file() for name in _IDX_FILES):
        return False
    raw = make_private_dir(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in _IDX_FILES:
        if not (raw / name).is_file():
            tmp = raw / f"{name}.tmp{os.getpid()}"  # rename is atomic: concurrent workers never see half a file
            with gzip.open(DEBIAN_FASHION_MNIST / f"{name}.gz", "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(raw / name)
    return True


def _torchvision_arrays(name: str, root: Path, download: bool) -> tuple[np.ndarray, ...]:
    """(train_x, train_y, test_x, test_y) as numpy arrays, images N x C x H x W uint8."""
    from torchvision import datasets

    if name in ("mnist", "fashion-mnist"):
        cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
        parts = [cls(str(root), train=train, download=download) for train in (True, False)]
        return tuple(a for p in parts for a in (p.data.numpy()[:, None], p.targets.numpy()))
    if name in ("cifar10", "cifar100"):
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        parts = [cls(str(root), train=train, download=download) for train in (True, False)]
        return tuple(a for p in parts for a in (p.data.transpose(0, 3, 1, 2), np.asarray(p.targets)))
    if name == "svhn":
        parts = [datasets.SVHN(str(root), split=split, download=download) for split in ("train", "test")]
        return tuple(a for p in parts for a in (p.data, np.asarray(p.labels)))
    raise ValueError(f"unknown torchvision data set {name!r}")


def _digits_arrays() -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16), split 80/20 by a fixed permutation
    that does not depend on the run's seed, so every run sees the same test set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    n_test = len(y) // 5
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def _load_arrays(name: str, data_dir: str | None, download: bool) -> tuple[np.ndarray, ...]:
    if name == "digits":
        return _digits_arrays()
    roots = candidate_roots(data_dir)
    for root in roots:
        try:
            return _torchvision_arrays(name, root, download=False)
        except RuntimeError:  # torchvision's "Dataset not found or corrupted"
            continue
    if name == "fashion-mnist" and _install_debian_fashion_mnist(cache_dir() / "data"):
        return _torchvision_arrays(name, cache_dir() / "data", download=False)
    if download:
        if roots[0] == cache_dir() / "data":
            make_private_dir(roots[0])
        roots[0].mkdir(parents=True, exist_ok=True)
        return _torchvision_arrays(name, roots[0], download=True)
    hint = "  or: apt-get install dataset-fashion-mnist\n" if name == "fashion-mnist" else ""
    raise DatasetNotFoundError(
        f"data set {name!r} was not found in: {', '.join(str(r) for r in roots)}.\n"
        f"Get it with one of:\n  -P download=true (or download=True), which needs internet\n{hint}"
        f"  or put torchvision's files under a directory and pass data_dir=DIR or set TC_DATA_DIR=DIR"
    )


def load_data(
    name: str,
    *,
    data_dir: str | None = None,
    download: bool = False,
    train_size: int = 0,
    label_noise: float = 0.0,
    seed: int = 0,
) -> DataBundle:
    """Load data set `name`; keep a seeded subset of `train_size` training examples (0 = all), then replace
    the labels of a seeded fraction `label_noise` of them by labels drawn uniformly from all classes (a
    replaced label can equal the true one, as in Zhang et al. 2017; 1.0 = fully random labels).

    Example:

    >>> import tc
    >>> data = tc.load_data("digits", train_size=256, label_noise=0.1, seed=0)
    >>> tuple(data.train_x.shape), data.train_x.dtype, data.num_classes
    ((256, 1, 8, 8), torch.uint8, 10)
    >>> bool((data.train_y != data.train_y_clean).any())  # some labels were replaced
    True
    """
    train_x, train_y, test_x, test_y = (
        torch.from_numpy(np.ascontiguousarray(a)) for a in _load_arrays(name, data_dir, download)
    )
    train_y, test_y = train_y.long(), test_y.long()
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    scaled = train_x.float() / 255.0
    mean = tuple(scaled.mean(dim=(0, 2, 3)).tolist())
    std = tuple(scaled.std(dim=(0, 2, 3)).tolist())
    if train_size:
        if train_size > len(train_y):
            raise ValueError(f"train_size={train_size} exceeds the {len(train_y)} training examples of {name}")
        keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))[:train_size]
        keep = keep.sort().values
        train_x, train_y = train_x[keep], train_y[keep]
    clean = train_y.clone()
    if label_noise > 0:
        g = torch.Generator().manual_seed(seed + 1)  # a stream apart from the subset's
        n_noisy = round(label_noise * len(train_y))
        noisy = torch.randperm(len(train_y), generator=g)[:n_noisy]
        train_y = train_y.clone()
        train_y[noisy] = torch.randint(num_classes, (n_noisy,), generator=g)
    return DataBundle(name, train_x, train_y, clean, test_x, test_y, num_classes, mean, std)


def load_for(cfg) -> DataBundle:
    """The data a training config (`tc.config.TrainConfig`) trains on: same subset, same noisy labels."""
    return load_data(
        cfg.dataset,
        data_dir=cfg.data_dir,
        download=cfg.download,
        train_size=cfg.train_size,
        label_noise=cfg.label_noise,
        seed=cfg.seed,
    )


def batch_generator(seed: int, epoch: int, batch: int = -1) -> torch.Generator:
    """A generator that depends only on (seed, epoch, batch): any step's randomness can be replayed, which
    is what makes resuming a run mid-epoch exact."""
    state = np.random.SeedSequence([seed, epoch, batch + 1]).generate_state(2, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def augment_batch(x: torch.Tensor, g: torch.Generator, flip: bool) -> torch.Tensor:
    """Random crop after zero padding by 1/8 of the image size (4 px at 32, 3 at 28, 1 at 8), and a random
    horizontal flip if `flip`. Works on a whole uint8 batch at once."""
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    if flip:
        mirror = torch.rand(b, generator=g) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out


def flips_preserve_labels(name: str) -> bool:
    """Horizontal flips are label-preserving for natural images, not for digits (SVHN, MNIST, digits)."""
    return name in ("cifar10", "cifar100", "fashion-mnist")


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def iterate_batches(
    data: DataBundle, batch_size: int, seed: int, epoch: int, augment: bool, start_batch: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches of one epoch, as (uint8 images, labels), starting at batch `start_batch`.
    The last batch may be smaller. Order and augmentation are functions of (seed, epoch, batch)."""
    n = len(data.train_y)
    order = torch.randperm(n, generator=batch_generator(seed, epoch))
    flip = flips_preserve_labels(data.name)
    for b in range(start_batch, steps_per_epoch(n, batch_size)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        x = data.train_x[idx]
        if augment:
            x = augment_batch(x, batch_generator(seed, epoch, b), flip=flip)
        yield x, data.train_y[idx]
