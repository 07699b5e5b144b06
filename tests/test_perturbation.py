"""Issue 21 P1/P3: the perturbation test and the anisotropy features at their floor, against the frozen
pre-issue-21 implementations in benchmarks/reference.py (oracles)."""

import functools

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import reference as ref
from tc.core import sgd_noise
from tc.core.data import iterate_batches, load_data
from tc.core.models import ModelSpec, build_model
from tc.core.sgd_noise import PerturbOptions, features, perturbation_test


@functools.cache
def _setup(model="resnet20", depth=8, width=4, n=150):
    """Three checkpoints of a briefly trained model (Adam, 0 / 10 / 20 full-batch steps on 128 digits): an
    untrained one predicts one class everywhere, which no perturbation changes. Cached: callers do not modify
    what it returns."""
    spec = ModelSpec(model, depth, width, 1, 8, 10)
    data = load_data("digits", train_size=256)
    torch.manual_seed(0)
    net = build_model(spec)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = data.normalize(data.train_x[:128]), data.train_y[:128]
    sds = []
    for step in range(21):
        if step % 10 == 0:
            sds.append({k: v.clone() for k, v in net.state_dict().items()})
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return build_model(spec), sds, data.normalize(data.test_x[:n]), data.test_y[:n]


class _Directions(tuple):
    """(dirs, var) with `.rank`: the shape of `tc.core.anisotropy.principal_directions`' answer."""

    rank: int


def _old_directions_top_bottom(x: np.ndarray, k: int | None = None) -> _Directions:
    """The frozen full SVD's directions, cut as `principal_directions(x, k)` cuts them: with k only the top
    min(k, r) and bottom min(k, r) rows, without repeats ([min(2k, r), p]); `.rank` r."""
    dirs, var = ref.old_principal_directions(x)
    r = len(dirs)
    if k is not None and 2 * k < r:
        keep = np.r_[0:k, r - k : r]
        dirs, var = dirs[keep], var[keep]
    out = _Directions((dirs, var))
    out.rank = r
    return out


@pytest.fixture
def old_directions(monkeypatch):
    """Both paths take their directions from the frozen full SVD (tc.core.anisotropy's route may change): the
    new test gets them cut to the top-k and bottom-k, as it asks for them, and must still pick the same ones."""
    monkeypatch.setattr(sgd_noise, "principal_directions", _old_directions_top_bottom)


@pytest.mark.parametrize(("model", "depth", "cut"), [("resnet20", 8, 2), ("resnet20", 8, 1), ("mlp", 3, 1)])
@pytest.mark.parametrize("batch_size", [128, 37])
def test_perturbation_test_equals_the_old_one(old_directions, model, depth, cut, batch_size):
    net, sds, x, y = _setup(model, depth)
    feats = ref.old_features(net, sds, x, cut)
    opts = PerturbOptions(eps=(0.1, 0.5, 1.0), k=2, draws=3, seed=4)
    args = (net, sds[-1], feats[-1], feats[1:] - feats[:-1], (y, cut), opts)
    old = ref.old_perturbation_test(*args)
    new = perturbation_test(*args, batch_size=batch_size)  # the default format: contiguous
    pd.testing.assert_frame_equal(new, old)  # every accuracy equal, bit for bit
    assert len(new) == 1 + 3 * 3 * 3 and new["acc"].nunique() > 3  # the noise does change predictions


def test_perturbation_test_in_channels_last_moves_each_accuracy_by_at_most_one_sample(old_directions):
    net, sds, x, y = _setup(width=8)
    feats = ref.old_features(net, sds, x, 2)
    args = (net, sds[-1], feats[-1], feats[1:] - feats[:-1], (y, 2), PerturbOptions(k=3, draws=2))
    old = ref.old_perturbation_test(*args)
    new = perturbation_test(*args, channels_last=True)  # 128 rows per forward
    assert new[["eps", "kind", "draw"]].equals(old[["eps", "kind", "draw"]])
    assert (new["acc"] - old["acc"]).abs().max() <= 1 / len(y) + 1e-12


def test_perturbation_draws_are_the_old_sequence_of_seeded_draws():
    # per draw: the random subspace's randint, then per ε per kind randn(N, k): the order the test always had
    opts = PerturbOptions(eps=(0.1, 0.5), k=2, draws=3, seed=7)
    subspaces, coefs = sgd_noise.perturbation_draws(5, 40, 2, opts)
    g = torch.Generator().manual_seed(7)
    for d in range(3):
        seed = int(torch.randint(2**31, (1,), generator=g))
        assert torch.equal(subspaces[d], torch.from_numpy(sgd_noise.random_projection(40, 2, seed).T.copy()))
        for i in range(2):
            for j in range(3):
                assert torch.equal(coefs[d, i, j], torch.randn(5, 2, generator=g, dtype=torch.float64))
    assert sgd_noise.perturbation_draws(5, 40, 2, PerturbOptions(draws=0))[1].shape == (0, 4, 3, 5, 2)


@pytest.mark.parametrize(("model", "depth", "cuts"), [("resnet20", 8, [3, 1, 2]), ("mlp", 3, [2, 1])])
def test_features_at_all_cuts_from_one_pass_equal_a_pass_per_cut(model, depth, cuts):
    net, sds, x, _ = _setup(model, depth)
    got = sgd_noise.features_at_cuts(net, sds, x, cuts, batch_size=32)
    assert list(got) == cuts
    for cut in cuts:
        old = ref.old_features(net, sds, x, cut, batch_size=32)
        assert torch.equal(got[cut], old)  # bit for bit
        assert torch.equal(features(net, sds, x, cut, batch_size=32), old)


def test_gradient_noise_by_vmap_equals_the_old_loop_at_every_cut():
    net, sds, _, _ = _setup()
    data = load_data("digits", train_size=256)
    batches = [(data.normalize(x), y) for x, y in iterate_batches(data, 32, 0, 0, False)][:6]
    old = ref.old_gradient_noise(net, sds[1], batches, [1, 3], proj_dim=16)
    loop = sgd_noise.gradient_noise(net, sds[1], batches, [1, 3], proj_dim=16)
    vmapped = sgd_noise.gradient_noise(net, sds[1], batches, [1, 3], proj_dim=16, method="vmap")
    for cut in (1, 3):
        assert np.array_equal(loop[cut], old[cut])  # the loop is the old code path
        np.testing.assert_allclose(vmapped[cut], old[cut], rtol=1e-4, atol=1e-6 * np.abs(old[cut]).max())
    with pytest.raises(ValueError, match="one size"):
        sgd_noise.gradient_noise(net, sds[1], [batches[0], (batches[1][0][:5], batches[1][1][:5])], [1], method="vmap")
