"""Consistency summaries (tc.core.consistency) against oracles: sklearn's Cohen's κ, brute-force formulas, and the
production `analyze` path on a degenerate one-class model."""

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score

from tc.analysis.consistency import consistency_analysis as analyze
from tc.analysis.inputs import RunContext
from tc.analysis.splits import EvalSplit
from tc.config import AnalyzeConfig
from tc.core import consistency as C
from tc.core.checkpoints import Checkpoints
from tc.core.compose import CompositeOutputs
from tc.core.data import DataBundle
from tc.core.models import ModelSpec, build_model


@pytest.mark.parametrize("seed", range(5))
def test_kappa_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 5, (300,), generator=g)
    # b agrees with a on about half the samples, otherwise random (some classes may be missing)
    b = torch.where(torch.rand(300, generator=g) < 0.5, a, torch.randint(0, 4, (300,), generator=g))
    assert C.kappa(a, b, 5) == pytest.approx(cohen_kappa_score(a.numpy(), b.numpy()), abs=1e-12)
    assert C.kappa(a, a, 5) == pytest.approx(1.0)


def test_kappa_is_zero_when_chance_agreement_is_one():
    const = torch.zeros(50, dtype=torch.long)
    assert C.kappa(const, const, 10) == 0.0  # sklearn returns nan here (0/0)
    # one constant predictor against a varied one: p_e < 1, sklearn defines it (κ = 0)
    varied = torch.arange(50) % 10
    assert C.kappa(const, varied, 10) == pytest.approx(cohen_kappa_score(const.numpy(), varied.numpy()))


def _outputs(pred):
    pred = torch.as_tensor(pred)
    n = pred.shape[0]
    return CompositeOutputs(pred=pred, nll=torch.zeros(pred.shape), done=torch.ones(n, n, dtype=torch.bool))


def test_tc_kappa_full_and_excess_by_their_formulas():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 3, (4, 4, 40), generator=g)
    final = pred[3, 3]
    win = [1, 2]
    expected = np.mean([cohen_kappa_score(pred[i, 3].numpy(), final.numpy()) for i in win])
    assert C.tc_kappa(_outputs(pred), final, win, 3) == pytest.approx(expected)
    network = torch.stack([pred[i, i] for i in range(4)])
    full = np.mean([(network[i] == network[3]).double().mean() for i in win])
    assert C.tc_full(network, win) == pytest.approx(full)
    assert C.tc_excess(0.9, 0.8) == pytest.approx(0.5)
    assert C.tc_excess(0.8, 0.8) == 0 and C.tc_excess(0.7, 0.8) == pytest.approx(-0.5)
    assert C.tc_excess(1.0, 1.0) == 0


def test_tc_gain_is_the_difference_and_tc_excess_floors_its_denominator():
    """Oracles: tc_gain = tc - tc_full; tc_excess = (tc - tc_full) / max(1 - tc_full, EXCESS_FLOOR), the plain
    ratio above the floor and tc_gain / EXCESS_FLOOR below it, so it is finite at tc_full = 1."""
    f = C.EXCESS_FLOOR
    for tc, full in ((0.9, 0.8), (0.7, 0.8), (1.0, 1.0), (0.93, 0.97), (0.0, 1.0), (1.0, 0.0)):
        assert C.tc_gain(tc, full) == pytest.approx(tc - full)
        assert -1 <= C.tc_gain(tc, full) <= 1
        assert C.tc_excess(tc, full) == pytest.approx((tc - full) / max(1 - full, f))
        assert -1 / f <= C.tc_excess(tc, full) <= 1
    assert C.tc_excess(0.9, 0.8) == pytest.approx(0.5)  # above the floor: the ratio itself
    assert C.tc_excess(0.9995, 0.999) == pytest.approx(0.0005 / f)  # below: tc_gain / floor, not 0.5
    assert C.tc_excess(0.9, 1.0) == pytest.approx(-0.1 / f)  # was NaN: the denominator was 0
    # continuous at the floor: the two formulas meet there
    assert C.tc_excess(1 - f / 2, 1 - f) == pytest.approx(0.5)
    assert C.tc_excess(1 - f / 2 + 1e-12, 1 - f + 1e-12) == pytest.approx(0.5, abs=1e-9)


def test_half_life_is_censored_when_every_trained_checkpoint_is_consistent():
    # rc[i, j]: the initial checkpoint's features are unreadable by every later deep part (0.1), every
    # trained checkpoint's features are read as well as the deep part's own (1.0)
    n = 6
    rc = torch.ones(n, n, dtype=torch.float64)
    rc[0, 1:] = 0.1
    win = C.window(list(range(0, 6 * n, 6)))  # steps 0, 6, ..., 30: window = steps >= 15 before the last
    assert 0 not in win
    assert C.half_life(C.lag_curve(rc)) == 1  # the old curve over all rows: set by step 0
    curve = C.window_lag_curve(rc, win)
    assert C.half_life(curve) is None  # censored
    assert len(curve) == n - min(win)  # lags 0 .. T - first window row
    # and a real drop inside the window is still found
    rc[win[0], n - 1] = 0.5
    assert C.half_life(C.window_lag_curve(rc, win)) == n - 1 - win[0]


def test_lag_curve_over_rows_by_brute_force():
    g = torch.Generator().manual_seed(1)
    m = torch.rand(5, 5, generator=g, dtype=torch.float64)
    rows = [2, 3]
    curve = C.lag_curve(m, rows)
    for lag in range(len(curve)):
        cells = [float(m[i, i + lag]) for i in rows if i + lag < 5]
        assert curve[lag] == pytest.approx(np.mean(cells))


def test_one_class_model_gets_tc_near_one_but_kappa_zero():
    """The degeneracy guard on the production path: a network that predicts one class whatever its input
    agrees with itself on any features, so tc = 1 and tc_full = 1, but κ = 0 and tc_excess = 0."""
    torch.manual_seed(0)
    spec = ModelSpec("mlp", 2, 8, 1, 4, 3)
    model = build_model(spec)
    sds = []
    for _ in range(5):
        m = build_model(spec)
        with torch.no_grad():
            m.blocks["head"].weight.zero_()
            m.blocks["head"].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
        sds.append({k: v.clone() for k, v in m.state_dict().items()})
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (60, 1, 4, 4), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (60,), generator=g)
    data = DataBundle("toy", x, y, y, x, y, 3, (0.5,), (0.25,))
    cfg = AnalyzeConfig(run_id="x", splits="test", anisotropy=False, measures=False, cuts="all", device="cpu")
    splits = [EvalSplit("test", x, y)]
    result = analyze(Checkpoints([0, 1, 2, 3, 4], sds), data, cfg, RunContext(model, 128, 0), splits)
    m = result.metrics
    assert m["tc_test"] == 1.0 and m["tc_full_test"] == 1.0
    assert m["tc_kappa_test"] == 0.0 and m["tc_excess_test"] == 0.0 and m["tc_gain_test"] == 0.0
    assert m["tc_window_checkpoints"] == 2 and result.summary["tags"]["tc.window_warning"]


def test_phase_scores_equal_brute_force_over_each_third_of_training():
    """phases=true on the production path: tc_<split>_<phase> is the mean over cuts of agree[t, T] over the
    phase's rows of the logged matrix, tc_full_<split>_<phase> the whole network's agreement with θ_T there,
    and tc_kappa_<split>_<phase> lies in [-1, 1]; phases differ from each other (different checkpoints)."""
    model, sds = _mlp_run(n=7)
    steps = [0, 2, 3, 5, 6, 8, 9]  # early (0,3]: 2,3; middle (3,6]: 5,6; late (6,9): 8
    x, y = _toy_xy(80)
    data = DataBundle("toy", x, y, y, x, y, 3, (0.5,), (0.25,))
    cfg = AnalyzeConfig(run_id="x", splits="test", anisotropy=False, measures=False, cuts="all", phases=True)
    result = analyze(Checkpoints(steps, sds), data, cfg, RunContext(model, 128, 0), [EvalSplit("test", x, y)])
    m, mat = result.metrics, result.matrices
    assert result.summary["phase_steps"] == {"early": [2, 3], "middle": [5, 6], "late": [8]}
    for phase, rows in result.summary["phase_steps"].items():
        sel = mat[(mat.t2 == 9) & mat.t1.isin(rows)]
        assert m[f"tc_test_{phase}"] == pytest.approx(sel.groupby("cut")["agree"].mean().mean(), abs=1e-12)
        with torch.no_grad():
            final = _net(model, sds[-1])(data.normalize(x)).argmax(1)
            nets = [_net(model, sds[steps.index(s)]) for s in rows]
            full = [(net(data.normalize(x)).argmax(1) == final).double().mean() for net in nets]
        assert m[f"tc_full_test_{phase}"] == pytest.approx(float(np.mean(full)), abs=1e-12)
        assert -1.0 <= m[f"tc_kappa_test_{phase}"] <= 1.0
    assert len({m["tc_test_early"], m["tc_test_middle"], m["tc_test_late"]}) > 1


def test_phases_refuse_a_run_whose_third_holds_no_checkpoint():
    model, sds = _mlp_run(n=3)
    x, y = _toy_xy(20)
    data = DataBundle("toy", x, y, y, x, y, 3, (0.5,), (0.25,))
    cfg = AnalyzeConfig(run_id="x", splits="test", anisotropy=False, measures=False, cuts="all", phases=True)
    with pytest.raises(ValueError, match="phase 'middle'"):
        analyze(Checkpoints([0, 3, 9], sds), data, cfg, RunContext(model, 128, 0), [EvalSplit("test", x, y)])


def _mlp_run(n: int):
    """An MLP and `n` state dicts that drift apart (each a small random step from the previous one)."""
    torch.manual_seed(1)
    spec = ModelSpec("mlp", 3, 16, 1, 4, 3)
    model = build_model(spec)
    sds = [{k: v.clone() for k, v in model.state_dict().items()}]
    for _ in range(n - 1):
        sds.append({k: v + 0.3 * torch.randn_like(v) if v.is_floating_point() else v for k, v in sds[-1].items()})
    return model, sds


def _toy_xy(n: int):
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _net(model, sd):
    import copy

    m = copy.deepcopy(model).eval()
    m.load_state_dict(sd)
    return m
