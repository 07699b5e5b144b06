import torch

from tc.data import iterate_batches, load_data
from tc.models import ModelSpec, build_model
from tc.noise import drift_vectors, features, gradient_noise, perturbation_test


def _setup():
    spec = ModelSpec("resnet20", 8, 4, 1, 8, 10)
    sds = []
    for i in range(3):
        torch.manual_seed(i)
        sds.append(build_model(spec).state_dict())
    return build_model(spec), sds, load_data("digits", train_size=256)


def test_drift_vectors_are_pooled_consecutive_differences():
    model, sds, data = _setup()
    x = data.normalize(data.test_x[:20])
    feats = features(model, sds, x, cut=2)
    assert feats.shape == (3, 20, 4, 8, 8)
    d = drift_vectors(feats)
    assert d.shape == (2 * 20, 4)
    assert torch.allclose(torch.from_numpy(d[:20]).float(), (feats[1] - feats[0]).mean(dim=(-2, -1)), atol=1e-6)


def test_gradient_noise_has_one_centred_row_per_minibatch():
    model, sds, data = _setup()
    batches = [(data.normalize(x), y) for x, y in iterate_batches(data, 32, 0, 0, False)][:6]
    g = gradient_noise(model, sds[0], batches, cuts=[1, 3], proj_dim=16)
    assert g[1].shape == (6, 16) and g[3].shape == (6, 16)
    assert abs(g[3].mean(axis=0)).max() < 1e-10
    assert not (g[1] == g[3]).all()  # different parameter sets


def test_perturbation_test_reports_clean_then_both_kinds_at_each_norm():
    model, sds, data = _setup()
    x, y = data.normalize(data.test_x[:30]), data.test_y[:30]
    feats = features(model, sds, x, cut=2)
    full = (feats[1:] - feats[:-1]).flatten(2).flatten(0, 1)
    rows = perturbation_test(model, sds[-1], feats[-1], full, y, 2, eps=(0.0, 0.5), k=2)
    assert [r[:2] for r in rows] == [
        (0.0, "clean"),
        (0.0, "structured"),
        (0.0, "isotropic"),
        (0.5, "structured"),
        (0.5, "isotropic"),
    ]
    assert rows[1][2] == rows[0][2] == rows[2][2]  # zero norm changes nothing
