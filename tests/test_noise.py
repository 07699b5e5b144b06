import numpy as np
import pytest
import torch
from scipy import stats

from tc.core import anisotropy as A
from tc.core.data import iterate_batches, load_data
from tc.core.models import ModelSpec, build_model
from tc.core.sgd_noise import (
    PerturbOptions,
    drift_rows,
    drift_vectors,
    features,
    gradient_noise,
    perturbation_test,
    project_noise,
    random_projection,
)


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
    assert d.shape == (2, 20, 4)  # transitions, samples, channels
    assert torch.allclose(torch.from_numpy(d[0]).float(), (feats[1] - feats[0]).mean(dim=(-2, -1)), atol=1e-6)


def test_gradient_noise_has_one_centred_row_per_minibatch():
    model, sds, data = _setup()
    batches = [(data.normalize(x), y) for x, y in iterate_batches(data, 32, 0, 0, False)][:6]
    g = gradient_noise(model, sds[0], batches, cuts=[1, 3], proj_dim=16)
    assert g[1].shape == (6, 16) and g[3].shape == (6, 16)
    assert abs(g[3].mean(axis=0)).max() < 1e-10
    assert not (g[1] == g[3]).all()  # different parameter sets


def test_random_projection_has_orthonormal_columns_and_is_the_identity_when_small():
    for p, dim in ((88, 128), (176, 128), (1000, 128), (5, 5)):
        q = random_projection(p, dim, seed=1)
        assert q.shape == (p, min(p, dim))
        assert np.allclose(q.T @ q, np.eye(min(p, dim)), atol=1e-10)
        if p <= dim:
            assert np.array_equal(q, np.eye(p))
    assert np.array_equal(random_projection(300, 16, 4), random_projection(300, 16, 4))
    assert not np.allclose(random_projection(300, 16, 4), random_projection(300, 16, 5))


def _old_projection(g, dim, rng):  # the Gaussian matrix gradient_noise used before (not orthonormal)
    return (g - g.mean(axis=0)) @ (rng.standard_normal((g.shape[1], dim)) / dim**0.5)


def test_project_noise_centres_then_projects():
    g = np.random.default_rng(0).standard_normal((7, 300)) + 5
    assert np.allclose(project_noise(g, 16, seed=2), (g - g.mean(axis=0)) @ random_projection(300, 16, 2))
    assert np.allclose(project_noise(g[:, :10], 16, seed=2), g[:, :10] - g[:, :10].mean(axis=0))
    # the streamed path (row chunks of the same seeded Gaussian) equals the dense QR projection
    assert np.allclose(project_noise(g, 16, seed=2, chunk=7), (g - g.mean(axis=0)) @ random_projection(300, 16, 2))
    assert np.allclose(project_noise(g.astype(np.float32), 16, seed=2, chunk=64), project_noise(g, 16, 2), atol=1e-5)


@pytest.mark.parametrize("p", [88, 176, 1000])
def test_projected_isotropic_gradient_noise_holds_its_level(p):
    # production path: gradient_noise's centring + projection (project_noise), then analyze_samples;
    # n = 32 minibatches, a shared mean gradient, 100 data sets, 199 null draws each (production: 1000).
    # Five projections cycled (a QR per data set is slow on a loaded machine; project_noise is checked above).
    rng = np.random.default_rng(p)
    projections = [random_projection(p, 128, seed) for seed in range(5)]
    trials, mc, lw, old = 100, 0, 0, 0
    for i in range(trials):
        g = rng.standard_normal((32, p)) * 0.1 + rng.standard_normal(p)
        x = (g - g.mean(axis=0)) @ projections[i % 5]
        r = A.analyze_samples(x, k=3, draws=199, seed=i, unit="minibatches")
        assert r.p == min(p, 128) and r.n == 32
        mc += r.pvalue < 0.05
        lw += r.lw_pvalue < 0.05
        if i < 20:
            old += A.analyze_samples(_old_projection(g, 128, rng), k=3, draws=199, seed=i).pvalue < 0.05
    assert mc / trials <= 0.1 and lw / trials <= 0.1
    if p < 1000:
        assert old >= 18  # the old Gaussian matrix: isotropic noise looked anisotropic


def test_projected_gradient_noise_with_a_few_strong_directions_is_rejected():
    rng = np.random.default_rng(3)
    q = random_projection(1000, 128, 0)
    for i in range(10):
        dirs = np.linalg.qr(rng.standard_normal((1000, 3)))[0].T
        g = rng.standard_normal((32, 1000)) + 20 * rng.standard_normal((32, 3)) @ dirs
        r = A.analyze_samples((g - g.mean(axis=0)) @ q, k=3, draws=199, seed=i)
        assert r.pvalue < 0.05 and r.lw_pvalue < 0.05


def test_drift_rows_are_centred_per_transition_and_drawn_from_every_transition():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(4, 50, 6, generator=g) + torch.arange(4.0)[:, None, None] * 10
    rows = drift_rows(d, max_rows=1000)
    assert rows.shape == (200, 6) and rows.view(4, 50, 6).mean(dim=1).abs().max() < 1e-12
    # capped: rows come from every transition in proportion (the old [:2000] took the first transitions)
    big = torch.randn(10, 500, 3, generator=g) + torch.arange(10.0)[:, None, None] * 1000
    sub = drift_rows(big, max_rows=2000, seed=1)
    assert sub.shape == (2000, 3)
    centred = (big - big.mean(dim=1, keepdim=True)).double().flatten(0, 1)
    which = torch.cdist(sub, centred).argmin(dim=1) // 500  # the transition of each chosen row
    counts = torch.bincount(which, minlength=10)
    assert counts.min() > 140 and counts.max() < 260  # ~200 each


def test_perturbation_test_compares_three_subspaces_at_each_norm_over_draws():
    model, sds, data = _setup()
    x, y = data.normalize(data.test_x[:30]), data.test_y[:30]
    feats = features(model, sds, x, cut=2)
    df = perturbation_test(
        model, sds[-1], feats[-1], feats[1:] - feats[:-1], (y, 2), PerturbOptions(eps=(0.0, 0.5), k=2, draws=3)
    )
    assert list(df.columns) == ["eps", "kind", "draw", "acc"]
    assert df.iloc[0].tolist()[:3] == [0.0, "clean", 0]
    assert len(df) == 1 + 3 * 2 * 3  # clean + draws x eps x kinds
    assert set(df["kind"]) == {"clean", "top", "random", "bottom"}
    clean = df.iloc[0]["acc"]
    assert (df[df["eps"] == 0.0]["acc"] == clean).all()  # zero norm changes nothing


def test_perturbation_summary_is_the_t_interval_over_draws_on_the_logit_scale():
    """Issue 22: the interval over draws is the t interval of the logits, mapped back, so it stays in [0, 1];
    the plain t interval of these draws (near 1, spread) reached past 1."""
    import pandas as pd
    from scipy.special import expit, logit

    from tc.analysis.anisotropy import perturbation_summary

    acc = [0.95, 0.99, 0.9, 0.995]
    df = pd.DataFrame({"eps": 0.5, "kind": ["top"] * 4 + ["clean"], "draw": [0, 1, 2, 3, 0], "acc": [*acc, 0.9]})
    s = perturbation_summary(df).set_index("kind")
    z_lo, z_hi = stats.t.interval(0.95, 3, loc=np.mean(logit(acc)), scale=stats.sem(logit(acc)))
    assert s.loc["top", "acc"] == pytest.approx(np.mean(acc)) and s.loc["top", "draws"] == 4
    assert s.loc["top", "lo"] == pytest.approx(expit(z_lo)) and s.loc["top", "hi"] == pytest.approx(expit(z_hi))
    assert stats.t.interval(0.95, 3, loc=np.mean(acc), scale=stats.sem(acc))[1] > 1 > s.loc["top", "hi"]
    assert s.loc["clean", "lo"] == s.loc["clean", "hi"] == 0.9


def test_random_shallow_is_logged_only_when_step_0_is_among_the_checkpoints():
    # tc_<split>_random_shallow reads checkpoint 0 as the initialisation: true only when step 0 was selected
    from tc.analysis.consistency import consistency_analysis as analyze
    from tc.analysis.inputs import RunContext
    from tc.config import AnalyzeConfig
    from tc.core.checkpoints import Checkpoints

    model, sds, data = _setup()
    cfg = AnalyzeConfig(run_id="x", splits="test", max_samples=20, matrix="final", cuts="2", batch_size=32)
    with_init = analyze(Checkpoints([0, 5, 10], sds), data, cfg, RunContext(model, 128, 0)).metrics
    without = analyze(Checkpoints([5, 10, 15], sds), data, cfg, RunContext(model, 128, 0)).metrics
    assert "tc_test_random_shallow_d2" in with_init and "tc_test_random_shallow" in with_init
    assert not any("random_shallow" in k for k in without)


@pytest.mark.parametrize("method", ["loop", "vmap"])
def test_gradient_noise_equals_hand_computed_per_batch_gradients_minus_their_mean(method):
    model, sds, data = _setup()
    batches = [(data.normalize(x), y) for x, y in iterate_batches(data, 32, 0, 0, False)][:5]
    got = gradient_noise(model, sds[1], batches, cuts=[1], proj_dim=10_000, method=method)[1]  # P < proj_dim
    m = build_model(ModelSpec("resnet20", 8, 4, 1, 8, 10))
    m.load_state_dict(sds[1])
    m.train()  # BatchNorm on batch statistics, as SGD saw it
    stem = [p for n, p in m.named_parameters() if n.startswith("blocks.stem.")]
    rows = []
    for x, y in batches:
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(m(x), y), stem)
        rows.append(torch.cat([g.flatten() for g in grads]).double().numpy())
    hand = np.stack(rows)
    assert got.shape == hand.shape == (5, sum(p.numel() for p in stem))
    np.testing.assert_allclose(got, hand - hand.mean(axis=0), rtol=1e-4, atol=1e-7)
