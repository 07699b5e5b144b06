import os

import numpy as np
import pytest
import torch

from tc.core import data as tcdata
from tc.core.data import DatasetNotFoundError, augment_batch, batch_generator, iterate_batches, load_data

from .formats import cifar_like, mnist_like, svhn_like


@pytest.fixture
def no_md5(monkeypatch):
    """Our tiny CIFAR/SVHN files are in the real format but not the real files: keep torchvision's
    existence check, skip only its md5 comparison."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(cifar, "check_integrity", exists)
    monkeypatch.setattr(svhn, "check_integrity", exists)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_family_reads_real_idx_files(tmp_path, name, folder):
    arrays = mnist_like(tmp_path, folder)
    d = load_data(name, data_dir=str(tmp_path))
    assert d.train_x.shape == (20, 1, 28, 28) and d.train_x.dtype == torch.uint8
    assert np.array_equal(d.train_x[:, 0].numpy(), arrays["train"][0])
    assert np.array_equal(d.test_y.numpy(), arrays["t10k"][1])


def test_tc_data_dir_environment_variable_is_searched(tmp_path, monkeypatch):
    mnist_like(tmp_path, "MNIST")
    monkeypatch.setenv("TC_DATA_DIR", str(tmp_path))
    assert len(load_data("mnist").test_y) == 10


@pytest.mark.parametrize("k", [10, 100])
def test_cifar_reads_real_pickle_batches(tmp_path, no_md5, k):
    arrays = cifar_like(tmp_path, k)
    d = load_data(f"cifar{k}", data_dir=str(tmp_path))
    n_train = 30 if k == 10 else 6
    assert d.train_x.shape == (n_train, 3, 32, 32)
    first = arrays["data_batch_1" if k == 10 else "train"][0][0]
    assert np.array_equal(d.train_x[0].numpy().reshape(-1), first)  # CHW planes, as CIFAR stores them


def test_svhn_reads_real_mat_files_and_maps_10_to_0(tmp_path, no_md5):
    arrays = svhn_like(tmp_path)
    d = load_data("svhn", data_dir=str(tmp_path))
    assert d.train_x.shape == (12, 3, 32, 32)
    y = arrays["train"][1][:, 0].astype(int) % 10
    assert np.array_equal(d.train_y.numpy(), y)


def test_debian_gzipped_files_are_decompressed_into_the_cache(tmp_path, monkeypatch, cache_dir):
    debian = tmp_path / "debian"
    arrays = mnist_like(debian, "", gz=True)
    monkeypatch.setattr(tcdata, "DEBIAN_FASHION_MNIST", debian)
    monkeypatch.setenv("TC_CACHE_DIR", str(tmp_path / "cache"))
    d = load_data("fashion-mnist")
    assert np.array_equal(d.test_x[:, 0].numpy(), arrays["t10k"][0])
    assert (tmp_path / "cache" / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


@pytest.mark.skipif(not tcdata.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_the_debian_package():
    d = load_data("fashion-mnist", train_size=1000, seed=3)
    assert d.train_x.shape == (1000, 1, 28, 28) and len(d.test_y) == 10_000
    assert d.num_classes == 10 and 0.25 < d.mean[0] < 0.32  # Fashion-MNIST's pixel mean is about 0.286


def test_missing_data_without_download_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tcdata, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setenv("TC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as err:
        load_data("fashion-mnist", data_dir=str(tmp_path / "empty"))
    message = str(err.value)
    assert "download=true" in message and "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "empty") in message


def test_digits_are_always_available_with_a_fixed_test_split():
    a, b = load_data("digits", seed=0), load_data("digits", seed=7)
    assert a.train_x.shape[1:] == (1, 8, 8) and len(a.train_y) + len(a.test_y) == 1797
    assert torch.equal(a.test_x, b.test_x)


def test_train_subset_is_seeded():
    a, b, c = (load_data("digits", train_size=100, seed=s) for s in (1, 1, 2))
    assert len(a.train_y) == 100 and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.train_x, c.train_x)
    with pytest.raises(ValueError, match="train_size"):
        load_data("digits", train_size=10**6)


def test_label_noise_replaces_the_requested_fraction_by_uniform_labels():
    clean = load_data("digits", seed=0)
    noisy = load_data("digits", label_noise=0.5, seed=0)
    assert torch.equal(noisy.train_y_clean, clean.train_y)
    changed = (noisy.train_y != clean.train_y).float().mean().item()
    assert 0.5 * 0.9 - 0.05 < changed < 0.5 * 0.9 + 0.05  # a replaced label keeps its value 1 time in 10
    random = load_data("digits", label_noise=1.0, seed=0)
    assert abs((random.train_y == clean.train_y).float().mean().item() - 0.1) < 0.04
    assert torch.equal(random.train_y, load_data("digits", label_noise=1.0, seed=0).train_y)


def test_augment_is_a_shift_of_the_image_and_replays_from_the_seed():
    x = torch.arange(2 * 8 * 8, dtype=torch.uint8).view(2, 1, 8, 8) + 1
    a = augment_batch(x, batch_generator(0, 1, 2), flip=False)
    assert torch.equal(a, augment_batch(x, batch_generator(0, 1, 2), flip=False))
    for i in range(2):
        shifted = [
            torch.roll(torch.nn.functional.pad(x[i], (1, 1, 1, 1)), (dy, dx), (1, 2))[:, 1:9, 1:9]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ]
        assert any(torch.equal(a[i], s) for s in shifted)


def test_batches_cover_the_epoch_once_and_resume_mid_epoch_identically():
    d = load_data("digits", train_size=100)
    full = list(iterate_batches(d, 32, seed=0, epoch=3, augment=True))
    assert [len(y) for _, y in full] == [32, 32, 32, 4]
    assert sorted(torch.cat([y for _, y in full]).tolist()) == sorted(d.train_y.tolist())
    tail = list(iterate_batches(d, 32, seed=0, epoch=3, augment=True, start_batch=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[2:], tail, strict=True))
