"""No silent reductions (issue 22): where an analysis uses less than asked (samples, checkpoints, gradient
minibatches, cuts, measures) it says so in a warning and logs the count it used (`n_*`), and it refuses a test
with too little data to mean anything, stating the minimum. Also the promise about `tc_test_random_shallow`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import tc
from tc.analysis.anisotropy import grad_batches
from tc.analysis.composites import calibration_batches, calibration_notes
from tc.analysis.inputs import RunContext, unlogged_warnings
from tc.analysis.run import analyze_run
from tc.analysis.splits import MIN_CHECKPOINTS, checkpoint_notes, sample_notes
from tc.config import AnalyzeConfig, TrainConfig
from tc.config.analyze import min_spectrum_units
from tc.core.anisotropy import analyze_samples, null_spectra
from tc.core.checkpoints import Checkpoints
from tc.core.data import load_data
from tc.core.models import ModelSpec, build_model
from tc.core.train import train


def _cfg(**kw) -> AnalyzeConfig:
    return AnalyzeConfig(run_id="x", null_draws=100, **kw)


def test_the_minimum_of_the_anisotropy_tests_is_the_least_n_at_which_they_can_reject():
    """The oracle of `min_spectrum_units(k) = k + 2`: n centred rows span n - 1 directions, so at n = k + 1 the
    top k hold all the variance (topk_var = 1) in the data and in every null draw: even one overwhelming direction
    leaves the statistic at 1, where the null is too (its p-value then compares rounding errors, so it is not
    asserted); at n = k + 2 it is detected."""
    k, rng = 3, np.random.default_rng(0)
    x = rng.standard_normal((k + 2, 30))
    x[:, 0] *= 50  # one direction carries almost all the variance: as anisotropic as noise gets
    below = analyze_samples(x[: k + 1], k=k, draws=199, seed=0)
    nulls = null_spectra(k + 1, 30, 199, seed=0)
    assert below.topk[k - 1] == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(nulls[:, :k].sum(1) / nulls.sum(1), 1.0, rtol=0, atol=1e-12)  # the null: 1 at every draw
    at = analyze_samples(x, k=k, draws=199, seed=0)
    assert at.topk[k - 1] < 1 - 1e-6 and at.pvalue <= 0.01 and min_spectrum_units(k) == k + 2


def test_a_config_asking_for_fewer_minibatches_than_the_test_needs_is_refused():
    with pytest.raises(ValueError, match=r"grad_batches=4 .* at least aniso_k \+ 2 = 5"):
        _cfg(grad_batches=4)
    assert _cfg(grad_batches=4, aniso_k=2).grad_batches == 4
    assert _cfg(grad_batches=4, anisotropy=False).grad_batches == 4  # no test, no minimum


def test_the_issue_case_gradient_noise_on_7_of_32_minibatches_is_said_and_counted():
    """1,000 examples at batch 128 hold 7 full minibatches: grad_batches=32 used 7 without a word (issue 22)."""
    data = load_data("digits", train_size=1000)
    run = RunContext(None, 128, 0)
    batches, warnings = grad_batches(data, _cfg(grad_batches=32), run)
    assert len(batches) == 7 == len(data.train_y) // 128
    assert warnings == [
        "gradient noise uses 7 minibatches, not grad_batches=32: the training set (1000 examples) holds 7 full "
        "minibatch(es) of 128"
    ]
    # the first 7 full minibatches of the epoch-0 shuffle, as before
    first = next(iter(tc.core.data.iterate_batches(data, 128, 0, epoch=0, augment=False)))
    assert torch.equal(batches[0][1], first[1])
    assert grad_batches(data, _cfg(grad_batches=7), run)[1] == []  # asked = held: no reduction
    few, warnings = grad_batches(load_data("digits", train_size=600), _cfg(), run)  # 4 < aniso_k + 2
    assert len(few) == 4 and warnings[0].startswith("gradient-noise test not run: the training set (600 examples)")


def test_an_analysis_with_too_little_data_refuses_the_tests_states_the_minimum_and_logs_the_counts():
    """600 examples at batch 128 hold 4 minibatches (< aniso_k + 2 = 5), 8 test samples make 4 pairs (< 5): both
    spectrum tests are refused at every cut, with the minimum in the warning; the counts are metrics."""
    data = load_data("digits", train_size=600)
    torch.manual_seed(0)
    model = build_model(ModelSpec.of(TrainConfig(dataset="digits", model="mlp", width=16), data))
    sds = []
    for i in range(3):
        torch.manual_seed(i)
        sds.append({k: v.clone() for k, v in build_model(model.spec).state_dict().items()})
    cfg = _cfg(splits="test", max_samples=8, measures=False, matrix="final", cuts="1,2")
    result = analyze_run(Checkpoints([0, 5, 10], sds), data, cfg, RunContext(model, 128, 0))
    m, warnings = result.metrics, result.summary["warnings"]
    assert m["n_grad_batches"] == 4 and m["n_cuts_grad"] == 0 and m["n_cuts_drift"] == 0
    assert m["n_samples_test"] == 8 and m["n_checkpoints"] == 3
    assert {m["n_drift_pairs_d1"], m["n_drift_pairs_d2"]} == {4.0}  # 8 samples, distinct drift: 4 pairs
    assert not [k for k in m if k.startswith(("aniso_grad_", "aniso_drift_")) and not k.endswith("_seconds")]
    assert m["n_cuts_perturb"] == 2  # the perturbation test needs drift directions only
    assert any(w.startswith("gradient-noise test not run") and "at least aniso_k + 2 = 5" in w for w in warnings)
    assert sum(w.startswith("drift test not run at cut") and "at least aniso_k + 2 = 5" in w for w in warnings) == 2


def test_fewer_samples_than_max_samples_are_said_once_per_set_and_counted():
    data = load_data("digits")  # 1,438 training and 359 test examples
    counts, warnings = sample_notes(data, _cfg(max_samples=1000))
    assert counts == {"n_samples_train": 1000.0, "n_samples_test": 359.0, "n_samples_corrupt": 359.0}
    assert warnings == [
        "the test set has 359 examples, fewer than max_samples=1000: split(s) test, corrupt analyze all 359"
    ]
    assert sample_notes(data, _cfg(max_samples=0)) == (
        {"n_samples_train": 1438.0, "n_samples_test": 359.0, "n_samples_corrupt": 359.0},
        [],
    )  # 0 asks for the whole split: no reduction
    assert sample_notes(data, _cfg(max_samples=100, splits="test"))[1] == []


def test_fewer_training_samples_than_max_samples_are_said_when_only_the_measures_read_them():
    """The measures read the train and test samples whatever `splits` says (`tc.analysis.run.measure_samples`):
    with splits=test (a sweep's core analysis) on a training set smaller than max_samples, they read the whole
    set, which a warning says, as it does when the train split reads it. No train split: no n_samples_train."""
    data = load_data("digits", train_size=128)
    counts, warnings = sample_notes(data, _cfg(max_samples=300, splits="test"))
    assert counts == {"n_samples_test": 300.0}
    assert warnings == [
        "the train set has 128 examples, fewer than max_samples=300: the measures (gm_*, tc_mmd) read all 128"
    ]
    assert sample_notes(data, _cfg(max_samples=300, splits="test", measures=False)) == (counts, [])
    assert sample_notes(data, _cfg(max_samples=300, splits="train,test"))[1] == [
        "the train set has 128 examples, fewer than max_samples=300: split(s) train analyze all 128"
    ]  # said once, by the split


def test_fractions_that_give_fewer_checkpoints_are_said_and_one_checkpoint_is_refused():
    counts, warnings = checkpoint_notes([0, 8, 16], _cfg(checkpoints="fractions:5"))
    assert counts == {"n_checkpoints": 3.0} and "fractions:5 selected 3 checkpoints" in warnings[0]
    assert checkpoint_notes([0, 8, 16], _cfg(checkpoints="fractions:3")) == (counts, [])
    with pytest.raises(ValueError, match=f"needs at least {MIN_CHECKPOINTS}"):
        checkpoint_notes([16], _cfg())


def test_bn_recalibration_uses_full_batches_says_when_fewer_and_refuses_none():
    """bn_mode=recalibrate re-estimates BatchNorm as the plain average of per-batch statistics, so only full
    batches of batch_size weigh right: 600 examples at 128 hold 4 of the 5 asked (the 88 left over were a short
    5th batch, silently weighed as a full one); that is said and counted. Below one full batch: refused."""
    data = load_data("digits", train_size=600)
    cfg = _cfg(bn_mode="recalibrate", calibration_batches=5)
    batches = calibration_batches(data, cfg)
    assert [len(b) for b in batches] == [128] * 4
    order = torch.randperm(600, generator=torch.Generator().manual_seed(cfg.seed + 2))  # the same draw as before
    assert torch.equal(batches[3], data.normalize(data.train_x[order[384:512]]))
    counts, warnings = calibration_notes(data, cfg)
    assert counts == {"n_calibration_batches": 4.0}
    assert warnings == [
        "BatchNorm recalibration uses 4 batches, not calibration_batches=5: the training set (600 examples) holds "
        "4 full batch(es) of batch_size=128"
    ]
    assert calibration_notes(data, replace(cfg, calibration_batches=4)) == (counts, [])  # asked = held
    assert calibration_notes(data, _cfg()) == ({}, [])  # bn_mode=splice uses none
    with pytest.raises(ValueError, match=r"needs at least 1 full batch .* batch_size=128"):
        calibration_notes(load_data("digits", train_size=100), cfg)
    with pytest.raises(ValueError, match="needs at least 1 full batch"):
        calibration_batches(load_data("digits", train_size=100), cfg)
    torch.manual_seed(0)
    model = build_model(ModelSpec.of(TrainConfig(dataset="digits", model="mlp", width=16), data))
    sds = [{k: v.clone() for k, v in model.state_dict().items()} for _ in range(2)]
    acfg = replace(cfg, splits="test", max_samples=8, anisotropy=False, measures=False, matrix="final")
    result = analyze_run(Checkpoints([0, 1], sds), data, acfg, RunContext(model, 128, 0))
    assert result.metrics["n_calibration_batches"] == 4 and warnings[0] in result.summary["warnings"]


def test_a_user_models_skipped_spectral_bound_is_named_and_counted():
    """gm_log_spectral_product needs tc's own models: on a traced user model it is skipped, with a warning that
    names it, and `n_measures_skipped` counts it; the other measures are computed. Without the train split (or
    with the costly measures off) the measures are the same numbers: they read the same seeded samples."""
    from tests.stage_models import small_net

    data = load_data("digits", train_size=128)
    torch.manual_seed(0)
    model = build_model(ModelSpec("tests.stage_models:small_net", 0, 16, 1, 8, 10), factory=small_net)
    sds = [{k: v.clone() for k, v in model.state_dict().items()} for _ in range(2)]
    sds[1] = {k: v + 0.01 if v.is_floating_point() else v for k, v in sds[1].items()}
    cfg = _cfg(splits="train,test", max_samples=16, anisotropy=False, matrix="final")
    result = analyze_run(Checkpoints([0, 1], sds), data, cfg, RunContext(model, 32, 0))
    m = result.metrics
    assert m["n_measures_skipped"] == 1 and "gm_log_spectral_product" not in m
    assert {"gm_param_norm", "gm_margin", "gm_sharpness", "tc_mmd"} <= set(m)
    [said] = [w for w in result.summary["warnings"] if "gm_log_spectral_product" in w]
    assert "cannot bound" in said and "own-models.md" in said
    measures = {k for k in m if k.startswith("gm_") and not k.endswith(("_seconds", "_cost_epochs"))} | {"tc_mmd"}
    for only_test, costly in ((True, True), (True, False), (False, False)):
        cfg = _cfg(splits="test" if only_test else "train,test", max_samples=16, anisotropy=False, matrix="final")
        cfg = replace(cfg, costly_measures=costly)
        g = analyze_run(Checkpoints([0, 1], sds), data, cfg, RunContext(model, 32, 0)).metrics
        assert g["n_measures_skipped"] == 1, (only_test, costly)  # the spectral bound: costly ones are not asked
        left_out = set() if costly else {"gm_sharpness", "tc_mmd", "gm_sharpness_evals", "tc_mmd_seconds"}
        assert not left_out & set(g)
        assert {k: g[k] for k in measures - left_out} == {k: m[k] for k in measures - left_out}
        assert ("tc_train" in g) != only_test  # the consistency scores are still computed only where asked


def test_settings_an_own_loop_run_did_not_log_are_named_where_the_analysis_uses_them():
    run = RunContext(None, 128, 0, unlogged=("seed", "batch_size", "lr"))
    [said] = unlogged_warnings(run, _cfg(splits="test", measures=False))  # only the gradient noise reads them
    assert said.startswith("the run did not log seed, batch_size: tc's defaults (seed=0, batch_size=128)")
    assert unlogged_warnings(run, _cfg(splits="test", measures=False, anisotropy=False)) == []  # lr: never read
    # the measures read the training samples (and their labels) whatever `splits` says: a sweep's core analysis
    run = RunContext(None, 128, 0, unlogged=("train_size", "label_noise"))
    [said] = unlogged_warnings(run, _cfg(splits="test", anisotropy=False))
    assert said.startswith("the run did not log train_size, label_noise") and "the measures' training samples" in said
    assert unlogged_warnings(run, _cfg(splits="test", anisotropy=False, measures=False)) == []


def test_a_cross_seed_control_without_the_test_split_is_said():
    from tc.analysis.controls import control_warnings

    run = RunContext(None, 128, 0, reference=Checkpoints([0, 1], [{}, {}]))
    [said] = control_warnings(_cfg(splits="train"), run)
    assert said.startswith("tc_test_crossseed not computed: the cross-seed control needs the test split")
    assert control_warnings(_cfg(splits="train,test"), run) == []
    assert control_warnings(_cfg(splits="train"), RunContext(None, 128, 0)) == []  # no reference: not asked
    assert control_warnings(_cfg(splits="train", controls=False), run) == []  # controls off: not asked


class _Keep:
    """A `tc.core.train.train` callback keeping every saved state dict in memory."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.sds: list[dict] = []

    def on_save(self, step, epoch, model, state, checkpoint) -> None:
        self.steps.append(step)
        self.sds.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def _random_shallow(width: int) -> dict[str, float]:
    """tc_test_random_shallow[_d<cut>] of a digits MLP (5 epochs, batch 64, lr 0.05, seed 0) on the whole test set."""
    cfg = TrainConfig(dataset="digits", model="mlp", width=width, epochs=5, batch_size=64, lr=0.05, device="cpu")
    data = load_data("digits")
    torch.manual_seed(0)
    model = build_model(ModelSpec.of(cfg, data))
    keep = _Keep()
    train(model, data, cfg, [keep])
    acfg = _cfg(splits="test", max_samples=0, anisotropy=False, measures=False, matrix="final", cuts="all")
    first_last = Checkpoints([keep.steps[0], keep.steps[-1]], [keep.sds[0], keep.sds[-1]])  # all agree[0, T] reads
    m = analyze_run(first_last, data, acfg, RunContext(model, 64, 0)).metrics
    return {k.removeprefix("tc_test_random_shallow"): v for k, v in m.items() if "random_shallow" in k}


def test_a_random_shallow_part_of_an_mlp_is_not_at_chance():
    """docs/analyze.md: the initialisation's shallow part is near chance only where training moved the shallow
    part far from it. An MLP's first layer is a random projection the trained deep part still reads: at width 64
    (seed 0) 0.46 over the cuts and 0.81 at cut 1, against a chance level of about 0.1 (10 balanced classes);
    at width 16 the first layer moves further and it is near chance (0.07)."""
    wide, narrow = _random_shallow(64), _random_shallow(16)
    assert wide[""] == pytest.approx(0.46, abs=0.05) and wide["_d1"] == pytest.approx(0.81, abs=0.05)
    assert wide["_d1"] > wide["_d2"] > 0.2  # the deeper the cut, the more of the shallow part training changed
    assert narrow[""] == pytest.approx(0.07, abs=0.05)
