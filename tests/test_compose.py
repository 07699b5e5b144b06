"""Composite networks and the consistency quantities, against brute force and invariants."""

import math

import numpy as np
import pytest
import torch

from tc.core import consistency as C
from tc.core.compose import ComposeOptions, composite_outputs, composite_outputs_naive, recalibrate_bn, splice
from tc.core.models import ModelSpec, build_model


def _checkpoints(name="resnet20", depth=8, n=4, c=1, size=8, k=10):
    """`n` different state dicts of one architecture (BatchNorm statistics made non-trivial)."""
    spec = ModelSpec(name, depth, 4, c, size, k)
    sds = []
    for i in range(n):
        torch.manual_seed(i)
        m = build_model(spec)
        recalibrate_bn(m, [torch.randn(32, c, size, size) * (1 + i) for _ in range(2)])
        sds.append({k: v.clone() for k, v in m.state_dict().items()})
    return build_model(spec), sds


def _data(n=37, c=1, size=8, k=10):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, c, size, size, generator=g), torch.randint(k, (n,), generator=g)


def test_splice_takes_shallow_blocks_from_one_and_deep_from_the_other():
    model, (a, b, *_) = _checkpoints()
    mixed = splice(model, a, b, cut=2)
    for key, value in mixed.items():
        source = a if model.block_of(key) in ("stem", "block1") else b
        assert value is source[key]


@pytest.mark.parametrize("name,depth", [("resnet20", 8), ("vgg", 3), ("mlp", 2)])
def test_fast_path_equals_naive_path_exactly(name, depth):
    model, sds = _checkpoints(name, depth)
    x, y = _data()
    cuts = model.cuts
    naive = composite_outputs_naive(model, sds, sds, (x, y), cuts, ComposeOptions(batch_size=16, channels_last=True))
    fast = composite_outputs(model, sds, sds, (x, y), cuts, ComposeOptions(batch_size=16, channels_last=True))
    for cut in cuts:
        assert torch.equal(fast[cut].pred, naive[cut].pred), cut
        assert torch.equal(fast[cut].nll, naive[cut].nll), cut
        own = C.own_predictions(naive[cut])
        assert torch.equal(C.acc_matrix(fast[cut], y), C.acc_matrix(naive[cut], y))
        assert torch.equal(C.agree_matrix(fast[cut], own), C.agree_matrix(naive[cut], own))
        assert torch.equal(C.loss_matrix(fast[cut]), C.loss_matrix(naive[cut]))


def test_the_diagonal_is_reused_only_for_one_state_dict_object_in_both_lists():
    """The fast path reads a pair (i, j) from the whole network only where shallow[i] *is* deep[j]: a deep list
    other than the shallow one (the cross-seed control), and an equal-content copy, get the deep part run as
    any other pair; the results equal the naive splice either way."""
    model, (a, b, c, d) = _checkpoints()
    x, y = _data()
    copy_of_a = {k: v.clone() for k, v in a.items()}  # equal content, another object: no reuse
    shallow, deep = [a, b, c], [c, copy_of_a, d]
    opts = ComposeOptions(batch_size=16, channels_last=True)
    naive = composite_outputs_naive(model, shallow, deep, (x, y), [1, 3], opts)
    fast = composite_outputs(model, shallow, deep, (x, y), [1, 3], opts)
    for cut in (1, 3):
        assert torch.equal(fast[cut].pred, naive[cut].pred) and torch.equal(fast[cut].nll, naive[cut].nll), cut
    # only c (shallow 2 = deep 0) continued to the head: the others' whole networks were not computed
    net = fast[1].network_pred
    assert (net[:2] == -1).all() and torch.equal(net[2], naive[1].pred[2, 0])


def test_final_column_only_matches_the_full_matrix():
    model, sds = _checkpoints()
    x, y = _data()
    full = composite_outputs(model, sds, sds, (x, y), [1, 3])
    final = composite_outputs(model, sds, sds, (x, y), [1, 3], ComposeOptions(columns=[3]))
    for cut in (1, 3):
        assert final[cut].done[:, 3].all() and not final[cut].done[:, :3].any()
        assert torch.equal(final[cut].pred[:, 3], full[cut].pred[:, 3])
        assert torch.isnan(C.acc_matrix(final[cut], y)[:, :3]).all()


def test_diagonal_composite_is_the_model_itself_and_agrees_with_itself():
    model, sds = _checkpoints()
    x, y = _data()
    out = composite_outputs(model, sds, sds, (x, y), model.cuts, ComposeOptions(channels_last=False))
    for t, sd in enumerate(sds):
        model.load_state_dict(sd)
        model.eval()
        with torch.no_grad():
            logits = model(x)
        for cut in model.cuts:
            assert torch.equal(out[cut].pred[t, t], logits.argmax(1))
            assert torch.allclose(out[cut].nll[t, t], torch.nn.functional.cross_entropy(logits, y, reduction="none"))
            agree = C.agree_matrix(out[cut], C.own_predictions(out[cut]))
            assert agree[t, t] == 1.0


def test_bf16_predictions_mostly_agree_with_fp32():
    model, sds = _checkpoints(n=2)
    x, y = _data(n=200)
    lo = composite_outputs(model, sds, sds, (x, y), [1, 3], ComposeOptions(precision="bf16"))
    hi = composite_outputs(model, sds, sds, (x, y), [1, 3])
    assert (lo[3].pred == hi[3].pred).double().mean() > 0.9


def test_drift_is_relative_distance_to_the_last_shallow_features():
    model, sds = _checkpoints(n=3)
    x, y = _data()
    out = composite_outputs(model, sds, sds, (x, y), [2], ComposeOptions(channels_last=False))[2]
    feats = []
    for sd in sds:
        model.load_state_dict(sd)
        model.eval()
        with torch.no_grad():
            feats.append(model.forward_blocks(x, 0, 2).flatten(1))
    expected = torch.stack([(f - feats[-1]).norm(dim=1) / feats[-1].norm(dim=1) for f in feats])
    assert torch.allclose(out.drift, expected, atol=1e-6)
    assert torch.all(out.drift[-1] == 0)


def test_recalibrated_composites_use_calibration_statistics():
    model, sds = _checkpoints(n=2)
    x, y = _data()
    calib = [torch.randn(32, 1, 8, 8) for _ in range(2)]
    plain = composite_outputs_naive(model, sds, sds, (x, y), [1])[1]
    recal = composite_outputs_naive(model, sds, sds, (x, y), [1], ComposeOptions(calibration=calib))[1]
    assert not torch.equal(plain.nll, recal.nll)


# ---- consistency quantities against brute force on hand-made predictions ----


def _outputs(pred, y):
    from tc.core.compose import CompositeOutputs

    n_s, n_d, _ = pred.shape
    return CompositeOutputs(pred=pred, nll=torch.rand(pred.shape), done=torch.ones(n_s, n_d, dtype=torch.bool))


def test_matrices_tc_lag_and_half_life_match_brute_force():
    g = torch.Generator().manual_seed(0)
    T, N = 5, 50
    y = torch.randint(3, (N,), generator=g)
    pred = torch.randint(3, (T, T, N), generator=g)
    pred[:, :, :30] = y[:30]  # make accuracies differ from chance
    out = _outputs(pred, y)
    acc, agree = C.acc_matrix(out, y), C.agree_matrix(out, C.own_predictions(out))
    for i in range(T):
        for j in range(T):
            assert acc[i, j] == sum(int(pred[i, j, n] == y[n]) for n in range(N)) / N
            assert agree[i, j] == sum(int(pred[i, j, n] == pred[j, j, n]) for n in range(N)) / N
    steps = [0, 10, 20, 30, 40]
    win = C.window(steps)
    assert win == [2, 3]  # steps >= 20 and before the last
    assert C.tc_score(agree, win) == pytest.approx((agree[2, 4] + agree[3, 4]).item() / 2)
    rc = C.relative_consistency(acc)
    lag = C.lag_curve(rc)
    for d in range(T):
        assert lag[d] == pytest.approx(np.mean([rc[t, t + d].item() for t in range(T - d)]))
    assert lag[0] == pytest.approx(1.0)
    assert C.half_life(np.array([1.0, 0.95, 0.91, 0.85, 0.5])) == 3
    assert C.half_life(np.array([1.0, 0.95])) is None
    c = C.per_sample_consistency(out, y, win)
    assert torch.equal(c, ((pred[2, 4] == y).double() + (pred[3, 4] == y).double()) / 2)


def test_kde_uses_scotts_rule_and_refuses_a_point_mass():
    from tc.analysis.plots import kde

    values = np.random.default_rng(0).random(200)
    grid, density, bw = kde(values)
    assert bw == pytest.approx(200 ** (-1 / 5) * values.std(ddof=1))
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=0.05)
    assert kde(np.ones(10)) is None
    assert math.isnan(C.lag_curve(torch.full((2, 2), math.nan))[0])


def test_analyze_with_recalibrated_batchnorm_and_final_column():
    from tc.analysis.consistency import consistency_analysis as analyze
    from tc.analysis.inputs import RunContext
    from tc.config import AnalyzeConfig
    from tc.core.checkpoints import Checkpoints
    from tc.core.data import load_data

    data = load_data("digits", train_size=200)
    model, sds = _checkpoints(n=3)
    cfg = AnalyzeConfig(
        run_id="x",
        splits="test",
        max_samples=40,
        bn_mode="recalibrate",
        matrix="final",
        calibration_batches=2,
        batch_size=32,
        cuts="all",
    )
    result = analyze(Checkpoints([0, 5, 10], sds), data, cfg, RunContext(model, 128, 0))
    assert set(result.matrices["t2"]) == {10} and len(result.matrices) == 3 * len(model.cuts)
    assert 0 <= result.metrics["tc_test"] <= 1 and "half_life_test" not in result.metrics


def test_anisotropy_leaves_out_gradient_noise_with_too_few_minibatches():
    from tc.analysis.anisotropy import anisotropy
    from tc.analysis.inputs import RunContext
    from tc.analysis.splits import make_splits
    from tc.config import AnalyzeConfig
    from tc.core.checkpoints import Checkpoints
    from tc.core.data import load_data

    model, sds = _checkpoints(n=3)
    cfg = AnalyzeConfig(run_id="x", splits="test", max_samples=30, null_draws=100, cuts="1,3")
    # batch 128: 4 full minibatches are too few for the test at aniso_k = 3 (it needs aniso_k + 2), 5 are enough
    for train_size, has_grad in ((512, False), (640, True)):
        data = load_data("digits", train_size=train_size)
        split = make_splits(data, cfg)[0]
        ticks = []
        result = anisotropy(Checkpoints([0, 5, 10], sds), data, cfg, RunContext(model, 128, 0), split, ticks.append)
        assert ticks == [1, 1, 1]  # progress: the gradient noise, then each of the 2 cuts
        assert "aniso_drift_min_pvalue" in result.metrics
        assert ("aniso_grad_min_pvalue" in result.metrics) is has_grad
        assert result.metrics["n_grad_batches"] == train_size // 128 and result.metrics["n_cuts_grad"] == 2 * has_grad
        assert any(w.startswith("gradient-noise test not run") for w in result.warnings) is not has_grad
        assert set(result.perturb["kind"]) == {"clean", "top", "random", "bottom"}


def test_mmd_matches_brute_force_and_separates_distributions():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=g), torch.randn(5, 3, generator=g) + 1

    def k(a, b, h=0.7):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))

    brute = (
        sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
        + sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
        - 2 * sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30
    )
    assert C.mmd2(x, y, bandwidth=0.7)[0] == pytest.approx(brute)
    same = C.mmd2(torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g))[0]
    shifted = C.mmd2(torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g) + 0.5)[0]
    assert abs(same) < 0.01 < shifted


def test_recalibrate_bn_equals_a_brute_force_re_estimate_of_every_batchnorm():
    model, (sd, *_) = _checkpoints(n=1)
    model.load_state_dict(sd)
    batches = [torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(i)) * (1 + i) for i in range(3)]
    bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    seen = {n: [] for n in bns}  # in train mode a BatchNorm's input does not depend on any running statistic
    hooks = [m.register_forward_pre_hook(lambda _m, a, n=n: seen[n].append(a[0].detach())) for n, m in bns.items()]
    with torch.no_grad():
        model.train()
        for x in batches:
            model(x)
    for h in hooks:
        h.remove()
    recalibrate_bn(model, batches)
    for name, bn in bns.items():
        # brute force: per batch, the channel mean and the unbiased channel variance; averaged over batches
        means = torch.stack([z.mean(dim=(0, 2, 3)) for z in seen[name]])
        variances = torch.stack([z.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for z in seen[name]])
        torch.testing.assert_close(bn.running_mean, means.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, variances.mean(0), rtol=1e-5, atol=1e-6)
    assert not model.training
