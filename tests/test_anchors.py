"""Issue 23's label-free anchors against oracles: Jensen-Shannon divergence (brute force in numpy), the two seeds'
soft disagreement gm_js_disagreement, the soft temporal consistency tc_js_{split} (brute force through spliced
networks), the learning-speed measures (hand-computed curves), the single-run error estimates err_hat_* and
their calibration (hand computation, numpy.polyfit, scipy's linregress)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from tc.analysis.baselines import learning_speed_asked, learning_speed_measures
from tc.analysis.inputs import RunContext, TrainingHistory
from tc.analysis.run import analyze_run
from tc.config import AnalyzeConfig
from tc.core import divergence as D
from tc.core import learning_speed as speed
from tc.core.checkpoints import Checkpoints
from tc.core.compose import ComposeOptions, composite_outputs, composite_outputs_naive, splice
from tc.core.consistency import window
from tc.core.data import load_data
from tc.core.models import at_state
from tc.stats.calibration import calibration
from tests.test_compose import _checkpoints, _data


def _js_bits_numpy(p: np.ndarray, q: np.ndarray) -> float:
    """JS(p, q) in bits, straight from the definition (0 log 0 = 0)."""
    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


# ---- Jensen-Shannon divergence ----


def test_js_matches_the_definition_and_its_bounds():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(40, 7, generator=g, dtype=torch.float64) * 3 for _ in range(2))
    got = D.js_divergence(torch.log_softmax(a, 1), torch.log_softmax(b, 1))
    p, q = _softmax(a.double().numpy()), _softmax(b.double().numpy())
    want = [_js_bits_numpy(p[i], q[i]) for i in range(40)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    assert bool(((got >= 0) & (got <= 1)).all())
    # symmetric, zero on identical distributions
    assert torch.allclose(got, D.js_divergence(torch.log_softmax(b, 1), torch.log_softmax(a, 1)))
    assert float(D.js_divergence(torch.log_softmax(a, 1), torch.log_softmax(a, 1)).max()) < 1e-15  # rounding
    assert D.mean_js(a, b) == pytest.approx(float(np.mean(want)), rel=1e-10)


def test_js_of_one_hot_outputs_is_top1_disagreement_and_never_nan():
    """Near one-hot logits (probabilities that underflow): JS in bits is 1 where the classes differ, 0 where they
    agree, so the mean equals top-1 disagreement; no NaN from 0 log 0."""
    a = torch.full((4, 5), -1e4)
    b = torch.full((4, 5), -1e4)
    a[torch.arange(4), torch.tensor([0, 1, 2, 3])] = 0.0
    b[torch.arange(4), torch.tensor([0, 4, 2, 1])] = 0.0
    js = D.js_divergence(torch.log_softmax(a, 1), torch.log_softmax(b, 1))
    assert js.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert D.mean_js(a, b) == D.top1_disagreement(a, b) == 0.5
    minus_inf = torch.tensor([[0.0, -math.inf], [-math.inf, 0.0]])  # exact zeros in log space
    assert D.js_divergence(minus_inf, minus_inf.flip(1)).tolist() == [1.0, 1.0]


def test_tc_js_is_the_mean_over_the_window_against_the_final_row():
    g = torch.Generator().manual_seed(1)
    logp = torch.log_softmax(torch.randn(6, 30, 4, generator=g), -1)
    win = [2, 3, 4]
    p = logp.double().exp().numpy()
    want = np.mean([np.mean([_js_bits_numpy(p[t, x], p[5, x]) for x in range(30)]) for t in win])
    assert D.tc_js(logp, win, 5) == pytest.approx(want, rel=1e-10)
    assert math.isnan(D.tc_js(logp, [], 5))
    assert D.tc_js(logp, [5], 5) < 1e-15  # the final network against itself: 0 up to rounding


def test_gm_js_disagreement_is_the_mean_js_of_the_two_networks():
    """compute_all's gm_js_disagreement against softmax + the definition on the two networks' own forwards; its
    gm_disagreement unchanged (the top-1 oracle)."""
    from tc.core.baselines import compute_all

    model, sds = _checkpoints(name="mlp", depth=3, n=3, size=8)
    x, y = _data(n=25)
    a, b, init = at_state(model, sds[2]), at_state(model, sds[1]), at_state(model, sds[0])
    values, seconds = compute_all(a, init, (x, y), other=b, x_test=x)
    with torch.no_grad():
        la, lb = a.eval()(x).double().numpy(), b.eval()(x).double().numpy()
    pa, pb = _softmax(la), _softmax(lb)
    want = np.mean([_js_bits_numpy(pa[i], pb[i]) for i in range(len(x))])
    assert values["gm_js_disagreement"] == pytest.approx(want, rel=1e-6)
    assert values["gm_disagreement"] == pytest.approx(float(np.mean(la.argmax(1) != lb.argmax(1))))
    assert 0 < values["gm_js_disagreement"] < 1 and seconds["gm_js_disagreement"] >= 0


# ---- soft temporal consistency: the composites' final column, no extra forward ----


@pytest.mark.parametrize("columns", [None, [3]])
def test_composites_keep_the_final_columns_log_probabilities(columns):
    """logp[i] = log_softmax of g[i, T] computed by splicing and a plain forward (the oracle), on the fast path
    (full matrix and final column only) and the naive one."""
    model, sds = _checkpoints(n=4)
    x, y = _data()
    cut = 2
    fast = composite_outputs(model, sds, sds, (x, y), [cut], ComposeOptions(columns=columns))[cut]
    naive = composite_outputs_naive(model, sds, sds, (x, y), [cut], ComposeOptions(columns=columns))[cut]
    for i in range(4):
        with torch.no_grad():
            want = torch.log_softmax(at_state(model, splice(model, sds[i], sds[3], cut)).eval()(x), 1)
        assert torch.allclose(fast.logp[i], want, atol=1e-5), i
        assert torch.allclose(naive.logp[i], want, atol=1e-5), i
    assert fast.logp_column == naive.logp_column == 3 and fast.logp.shape == (4, len(y), 10)


@pytest.fixture(scope="module")
def analyzed():
    """A small analysis (test and train splits, measures, a reference run, a training curve) and its inputs."""
    model, sds = _checkpoints(n=5)
    _, other = _checkpoints(n=2)
    data = load_data("digits", train_size=128)
    cfg = AnalyzeConfig(run_id="x", splits="train,test", max_samples=40, cuts="1,3", anisotropy=False, batch_size=16)
    history = TrainingHistory(((4, 2.0), (8, 1.0), (9, 0.5)), ((4, 1.5), (8, 0.6), (9, 0.3)), target_loss=0.5)
    run = RunContext(model, 32, 0, reference=Checkpoints([0, 9], other), seconds_per_epoch=2.0, history=history)
    ckpts = Checkpoints([0, 3, 5, 8, 9], sds)
    return analyze_run(ckpts, data, cfg, run), (model, sds, data, cfg, ckpts)


def test_tc_js_of_an_analysis_matches_brute_force_through_spliced_networks(analyzed):
    result, (model, sds, data, cfg, ckpts) = analyzed
    m = result.metrics
    test_idx = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(cfg.seed + 1))[:40]
    x = data.normalize(data.test_x[test_idx.sort().values])
    win = window(ckpts.steps, cfg.window)
    with torch.no_grad():
        final = torch.log_softmax(at_state(model, sds[-1]).eval()(x), 1)
        for cut in (1, 3):
            per_t = []
            for t in win:
                g = torch.log_softmax(at_state(model, splice(model, sds[t], sds[-1], cut)).eval()(x), 1)
                per_t.append(float(D.js_divergence(g, final).mean()))
            assert m[f"tc_js_test_d{cut}"] == pytest.approx(float(np.mean(per_t)), abs=1e-5)
    assert m["tc_js_test"] == pytest.approx((m["tc_js_test_d1"] + m["tc_js_test_d3"]) / 2)
    assert "tc_js_train" in m and 0 <= m["tc_js_train"] <= 1


def test_err_hat_is_one_minus_tc_and_tc_full(analyzed):
    m = analyzed[0].metrics
    for split in ("train", "test"):
        assert m[f"err_hat_tc_{split}"] == 1 - m[f"tc_{split}"]
        assert m[f"err_hat_full_{split}"] == 1 - m[f"tc_full_{split}"]


def test_an_analysis_logs_the_anchors_with_their_costs(analyzed):
    m = analyzed[0].metrics
    assert m["gm_sum_train_loss"] == pytest.approx((2.0 + 1.0 + 0.5) / 3)
    assert m["gm_steps_to_criterion"] == 9.0  # the first epoch end with train_eval_loss <= 0.5
    assert 0 < m["gm_js_disagreement"] < 1 and "gm_js_disagreement_cost_epochs" in m
    assert m["gm_sum_train_loss_cost_epochs"] == m["gm_sum_train_loss_seconds"] / 2.0
    assert m["n_measures_skipped"] == 0


# ---- learning speed ----


def test_learning_speed_on_hand_made_curves():
    curve = [(30, 0.2), (10, 1.2), (20, 0.4), (20, 0.5)]  # unsorted; step 20 logged twice (a resume): the last
    assert speed.by_step(curve) == [(10, 1.2), (20, 0.5), (30, 0.2)]
    assert speed.mean_train_loss(curve) == pytest.approx((1.2 + 0.5 + 0.2) / 3)
    assert speed.steps_to_criterion(curve, 0.5) == 20  # <=, at the first epoch end that reaches it
    assert speed.steps_to_criterion(curve, 0.3) == 30
    assert speed.steps_to_criterion(curve, 0.1) is None  # never reached
    assert speed.steps_to_criterion(curve, 0.0) is None  # no criterion
    assert math.isnan(speed.mean_train_loss([]))


def test_learning_speed_measures_say_why_they_are_missing():
    model, _ = _checkpoints(n=1)
    plain = RunContext(model, 32, 0)
    assert learning_speed_asked(plain) == [] and learning_speed_measures(plain) == {}
    never = replace(plain, history=TrainingHistory(((5, 1.0), (10, 0.9)), ((5, 1.0), (10, 0.8)), target_loss=0.1))
    warnings: list[str] = []
    out = learning_speed_measures(never, warnings)
    assert learning_speed_asked(never) == ["gm_sum_train_loss", "gm_steps_to_criterion"]
    assert math.isnan(out["gm_steps_to_criterion"]) and out["gm_sum_train_loss"] == pytest.approx(0.95)
    assert warnings == [
        "gm_steps_to_criterion is NaN: the run's train_eval_loss never reached target_loss=0.1 in its 10 steps"
    ]
    no_target = replace(plain, history=TrainingHistory(((5, 1.0),), ()))
    assert learning_speed_asked(no_target) == ["gm_sum_train_loss"]
    assert set(learning_speed_measures(no_target)) == {"gm_sum_train_loss", "gm_sum_train_loss_seconds"}
    # a run with a criterion that logged no train_eval_loss (an own loop that logged target_loss and train_loss
    # only): its steps to the criterion are unknown, not censored, so not computed (no NaN saying "never reached")
    no_curve = replace(plain, history=TrainingHistory(((5, 1.0),), (), target_loss=0.1))
    warnings = []
    assert "gm_steps_to_criterion" in learning_speed_asked(no_curve)  # asked: n_measures_skipped counts it
    assert set(learning_speed_measures(no_curve, warnings)) == {"gm_sum_train_loss", "gm_sum_train_loss_seconds"}
    assert warnings == ["gm_steps_to_criterion not computed: the run logged no train_eval_loss"]
    no_loss = replace(plain, history=TrainingHistory((), ((5, 0.05),), target_loss=0.1))
    warnings = []
    assert learning_speed_measures(no_loss, warnings)["gm_steps_to_criterion"] == 5.0
    assert warnings == ["gm_sum_train_loss not computed: the run logged no per-epoch train_loss"]


# ---- calibration of an error estimate over trials ----


def test_calibration_by_hand():
    """e = (0, 1, 2), y = (1, 2, 4): ē = 1, ȳ = 7/3, Sxx = 2, Sxy = 3: b = 1.5, a = 5/6; residuals
    (1/6, -1/3, 1/6): SSE = 1/6, s² = 1/6 (n - 2 = 1); se(b) = sqrt(1/12), se(a) = sqrt(1/6 · (1/3 + 1/2));
    |e - y| = (1, 1, 2): MAE = 4/3, sd = sqrt(1/3)."""
    c = calibration([0, 1, 2], [1, 2, 4])
    t1, t2 = stats.t.ppf(0.975, 1), stats.t.ppf(0.975, 2)
    assert (c.n, c.slope, c.intercept, c.mae) == (3, pytest.approx(1.5), pytest.approx(5 / 6), pytest.approx(4 / 3))
    assert (c.slope_low, c.slope_high) == pytest.approx((1.5 - t1 * math.sqrt(1 / 12), 1.5 + t1 * math.sqrt(1 / 12)))
    se_a = math.sqrt(1 / 6 * (1 / 3 + 1 / 2))
    assert (c.intercept_low, c.intercept_high) == pytest.approx((5 / 6 - t1 * se_a, 5 / 6 + t1 * se_a))
    half = t2 * math.sqrt(1 / 3) / math.sqrt(3)
    assert (c.mae_low, c.mae_high) == pytest.approx((4 / 3 - half, 4 / 3 + half))


def test_calibration_matches_polyfit_and_linregress():
    rng = np.random.default_rng(0)
    e = rng.uniform(0, 0.3, 40)
    y = 0.01 + 0.9 * e + rng.normal(0, 0.02, 40)
    e[3], y[7] = np.nan, np.nan  # a trial without an estimate or an error is dropped
    c = calibration(e, y)
    keep = np.isfinite(e) & np.isfinite(y)
    slope, intercept = np.polyfit(e[keep], y[keep], 1)
    lr = stats.linregress(e[keep], y[keep])
    t = stats.t.ppf(0.975, keep.sum() - 2)
    assert c.n == 38 and (c.slope, c.intercept) == (pytest.approx(slope), pytest.approx(intercept))
    assert c.slope_high - c.slope == pytest.approx(t * lr.stderr)
    assert c.intercept - c.intercept_low == pytest.approx(t * lr.intercept_stderr)
    assert c.mae == pytest.approx(np.abs(e[keep] - y[keep]).mean())


def test_calibration_where_the_trials_cannot_tell():
    two = calibration([0.1, 0.2], [0.1, 0.3])
    assert two.mae == pytest.approx(0.05) and math.isnan(two.slope) and math.isnan(two.intercept_low)
    flat = calibration([0.1, 0.1, 0.1], [0.1, 0.2, 0.3])  # all estimates equal: no slope
    assert math.isnan(flat.slope) and flat.mae == pytest.approx(0.1)
    perfect = calibration([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])
    assert (perfect.slope, perfect.intercept, perfect.mae) == (pytest.approx(1), pytest.approx(0, abs=1e-12), 0)
    with pytest.raises(ValueError, match="one length"):
        calibration([0.1, 0.2], [0.1])


# ---- the training curve, from a logged run to the analysis ----


def test_a_logged_runs_training_curve_reaches_the_analysis(mlflow_store):
    """load_analysis_inputs hands the analysis the run's logged train_loss and train_eval_loss curves (MLflow
    step = optimizer step) and its target_loss; for a run that stopped at its criterion, gm_steps_to_criterion is
    its last step; a run that logged no training loss gets no curve (the measures are then not asked for)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from entrypoints import train as train_ep
    from tc.tracking.checkpoints import load_analysis_inputs, training_history

    argv = ["--dataset", "digits", "--model", "mlp", "--width", "32", "--epochs", "8", "--batch_size", "64"]
    assert train_ep.main([*argv, "--train_size", "256", "--target_loss", "2.2", "--lr", "0.1"]) == 0
    client = MlflowClient()
    run = client.search_runs(["0"], order_by=["attribute.start_time DESC"])[0]
    history = load_analysis_inputs(AnalyzeConfig(run_id=run.info.run_id)).run.history

    def curve(key):
        return [
            (m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        ]

    assert list(history.train_loss) == curve("train_loss") and len(history.train_loss) >= 1
    assert list(history.criterion_loss) == curve("train_eval_loss") and history.target_loss == 2.2
    out = learning_speed_measures(replace(RunContext(None, 64, 0), history=history))
    assert out["gm_sum_train_loss"] == pytest.approx(np.mean([v for _, v in curve("train_loss")]))
    assert run.data.metrics["converged"] == 1  # 2.2 nats (chance: 2.3) is reached within the cap
    assert out["gm_steps_to_criterion"] == run.data.metrics["epochs_trained"] * 4  # 256 / 64 steps per epoch
    with mlflow.start_run() as own:  # a user's own loop that logged no training loss
        mlflow.log_metric("my_metric", 1.0, step=3)
    assert training_history(own.info.run_id, 0.0) is None


def test_the_soft_disagreement_costs_a_second_training_run():
    """gm_js_disagreement, like gm_disagreement, compares two seeds' networks: its cost holds the second run."""
    from tc.report import costs

    c = costs.epoch_costs([({"analysis_seconds": 6.0, "gm_js_disagreement_seconds": 0.06}, 3.0)], second_epochs=[12.0])
    assert costs.cost_of("gm_js_disagreement", c) == pytest.approx(0.02 + 12)
    assert costs.cost_of("tc_js_test", c) == 2.0  # within the consistency analysis: no second run
