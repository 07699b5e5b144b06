"""Writers for tiny data sets in the real on-disk formats torchvision reads (IDX, CIFAR pickles, SVHN .mat),
so the real loaders are tested without network access."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """IDX format (LeCun): magic 0x00 0x00 0x08 <ndim>, big-endian int32 dims, then uint8 data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def mnist_like(root: Path, folder: str, n_train: int = 20, n_test: int = 10, gz: bool = False, seed: int = 0) -> dict:
    """<root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, as torchvision's MNIST reads them."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        raw = root / folder / "raw" if folder else root
        write_idx(raw / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(raw / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
        arrays[split] = (images, labels)
    return arrays


def cifar_like(root: Path, num_classes: int, n_per_file: int = 6, seed: int = 0) -> dict:
    """The python-pickle CIFAR layout: rows of 3072 uint8 (R plane, G plane, B plane)."""
    rng = np.random.default_rng(seed)
    if num_classes == 10:
        folder, files, label_key = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels"
        meta_name, meta = "batches.meta", {"label_names": [f"c{i}" for i in range(10)]}
    else:
        folder, files, label_key = "cifar-100-python", ["train"], "fine_labels"
        meta_name, meta = "meta", {"fine_label_names": [f"c{i}" for i in range(100)]}
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in [*files, "test_batch" if num_classes == 10 else "test"]:
        data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, n_per_file).tolist()
        (d / name).write_bytes(pickle.dumps({"data": data, label_key: labels}))
        arrays[name] = (data, labels)
    (d / meta_name).write_bytes(pickle.dumps(meta))
    return arrays


def svhn_like(root: Path, n_train: int = 12, n_test: int = 6, seed: int = 0) -> dict:
    """SVHN's cropped-digits .mat files: X is 32x32x3xN uint8, y is Nx1 with label 10 meaning digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        root.mkdir(parents=True, exist_ok=True)
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        arrays[split] = (x, y)
    return arrays
