"""The sweep's cheap surrogates, computed from checkpoints already loaded."""

import dataclasses
from dataclasses import replace

from tc.analysis.inputs import RunContext
from tc.analysis.run import analyze_run
from tc.analysis.surrogates import NOT_SHARED, SHARED, SURROGATE_OWN, cheap_scores, surrogate_config
from tc.config import AnalyzeConfig
from tc.core.checkpoints import Checkpoints
from tc.core.data import load_data
from tests.test_compose import _checkpoints


def test_cheap_scores_are_tc_test_on_window_checkpoints_and_fewer_samples():
    model, sds = _checkpoints(n=5)
    data = load_data("digits", train_size=128)
    ckpts = Checkpoints([0, 2, 4, 6, 8], sds)  # window 0.5: steps 4 and 6
    cfg = AnalyzeConfig(run_id="x", max_samples=60, anisotropy=False, measures=False, batch_size=32)
    run = RunContext(model, 64, 0)
    out = cheap_scores(ckpts, data, cfg, run, samples=30)
    assert set(out) == {f"tc_test_cheap_k{k}_n30{s}" for k in (1, 2) for s in ("", "_seconds")}
    one = AnalyzeConfig(
        run_id="x", splits="test", max_samples=30, matrix="final", anisotropy=False, measures=False, window=1.0
    )
    one = replace(one, batch_size=32)
    middle = analyze_run(Checkpoints([6, 8], [sds[3], sds[4]]), data, one, run).metrics["tc_test"]
    assert out["tc_test_cheap_k1_n30"] == middle  # k = 1: the window's middle (index 1 of [4, 6])
    both = analyze_run(Checkpoints([4, 6, 8], sds[2:]), data, one, run).metrics["tc_test"]
    assert out["tc_test_cheap_k2_n30"] == both


def test_the_surrogate_config_holds_only_what_the_surrogate_needs():
    # the full analysis's controls (cross-seed reference, phases) and its other settings must not enter the
    # surrogate, whose cost is reported as its own: the same surrogate config with or without them
    plain = AnalyzeConfig(run_id="r", max_samples=60, batch_size=32, cuts="1,2", seed=3, precision="bf16")
    loaded = replace(
        plain,
        reference_run_id="other",
        phases=True,
        matrix="full",
        splits="train,test,corrupt",
        corruptions="jpeg",
        severities="1,2",
        anisotropy=True,
        measures=True,
        null_draws=500,
        grad_batches=8,
        aniso_k=2,
        window=0.3,
        checkpoints="every:2",
    )
    a, b = surrogate_config(plain, [4, 6, 8], 30), surrogate_config(loaded, [4, 6, 8], 30)
    assert a == b
    assert (a.reference_run_id, a.phases, a.anisotropy, a.measures) == (None, False, False, False)
    assert (a.splits, a.max_samples, a.matrix, a.checkpoints, a.window) == ("test", 30, "final", "4,6,8", 1.0)
    # what the surrogate does share with the full analysis: the run, cuts, batch size, device, compute
    # precision (a bf16 analysis gets a bf16 surrogate), BatchNorm, seed
    assert (a.run_id, a.cuts, a.batch_size, a.seed, a.device, a.bn_mode) == ("r", "1,2", 32, 3, "auto", "splice")
    assert a.precision == "bf16" and surrogate_config(replace(plain, precision="fp32"), [4, 8], 30).precision == "fp32"


def test_a_bf16_analysis_gets_a_bf16_surrogate_without_the_bf16_check(monkeypatch):
    # precision is the compute precision of the composites; only the bf16 agreement check (an fp32 rerun) is
    # the full analysis's control, and it must not run inside the surrogate's timing
    import tc.analysis.composites
    import tc.analysis.controls

    seen = []
    real = tc.analysis.composites.composite_outputs

    def recording(*args, **kwargs):
        seen.append(args[5].precision)
        return real(*args, **kwargs)

    def no_check(*args, **kwargs):
        raise AssertionError("the bf16 agreement check ran inside the surrogate")

    monkeypatch.setattr(tc.analysis.composites, "composite_outputs", recording)
    monkeypatch.setattr(tc.analysis.controls, "bf16_agreement", no_check)
    model, sds = _checkpoints(n=3)
    data = load_data("digits", train_size=128)
    cfg = AnalyzeConfig(run_id="x", max_samples=40, anisotropy=False, measures=False, batch_size=32, precision="bf16")
    out = cheap_scores(Checkpoints([0, 4, 8], sds), data, cfg, RunContext(model, 64, 0), samples=30)
    assert out and seen and set(seen) == {"bf16"}


def test_the_surrogate_runs_neither_control_that_the_full_analysis_runs_on_the_same_inputs(monkeypatch):
    # cheap_scores gets the trial's own RunContext, reference run included: controls=False alone keeps the
    # cross-seed composite out of the surrogate (its config has no reference_run_id, but the context has the
    # reference), and the bf16 check too. The full analysis on the same inputs runs both: the check is not vacuous.
    import tc.analysis.controls

    ran = []

    def recorded(name):
        real = getattr(tc.analysis.controls, name)

        def recording(*args, **kwargs):
            ran.append(name)
            return real(*args, **kwargs)

        return recording

    for name in ("cross_seed", "bf16_agreement"):
        monkeypatch.setattr(tc.analysis.controls, name, recorded(name))
    model, sds = _checkpoints(n=3)
    _, other = _checkpoints(n=2)
    data = load_data("digits", train_size=128)
    cfg = AnalyzeConfig(
        run_id="x", max_samples=40, anisotropy=False, measures=False, batch_size=32, precision="bf16", splits="test"
    )
    run = RunContext(model, 64, 0, reference=Checkpoints([0, 9], other))
    ckpts = Checkpoints([0, 4, 8], sds)
    assert cheap_scores(ckpts, data, cfg, run, samples=30) and ran == []
    full = analyze_run(ckpts, data, cfg, run).metrics
    assert ran == ["cross_seed", "bf16_agreement"]
    assert 0 <= full["tc_test_crossseed"] <= 1 and 0 <= full["bf16_agreement"] <= 1


def test_every_analyze_config_field_is_shared_own_or_not_shared_with_the_surrogate():
    # a field added to AnalyzeConfig fails here until it is put in one group (and so reviewed for surrogates)
    names = [f.name for f in dataclasses.fields(AnalyzeConfig)]
    groups = (SHARED, SURROGATE_OWN, NOT_SHARED)
    assert sorted(n for g in groups for n in g) == sorted(names)  # each field exactly once
    # and the groups are what surrogate_config does: a config with every field off its default
    other = {
        "run_id": "r", "model": "tests.stage_models:small_net", "cuts": "1", "bn_mode": "recalibrate",
        "calibration_batches": 2, "batch_size": 7, "device": "cpu", "precision": "bf16", "seed": 5,
        "splits": "train", "max_samples": 11, "matrix": "final", "anisotropy": False, "measures": False,
        "costly_measures": False, "controls": False, "checkpoints": "every:3", "window": 0.2, "corruptions": "jpeg",
        "severities": "1", "reference_run_id": "o",
        "phases": True, "aniso_k": 2, "null_draws": 200, "grad_batches": 4, "allow_unfinished": True,
        "data_dir": "/data/elsewhere", "download": True, "outputs": "measures",
    }  # fmt: skip
    assert sorted(other) == sorted(names)
    cfg, default = AnalyzeConfig(**other), {f.name: f.default for f in dataclasses.fields(AnalyzeConfig)}
    got = surrogate_config(cfg, [4, 8], 30)
    for n in names:
        assert getattr(cfg, n) != default[n], n  # the oracle config really differs everywhere
    for n in SHARED:
        assert getattr(got, n) == getattr(cfg, n), n
    for n in NOT_SHARED:
        assert getattr(got, n) == default[n], n
    own = {"splits": "test", "max_samples": 30, "matrix": "final", "anisotropy": False, "measures": False}
    own |= {"controls": False}
    own |= {"checkpoints": "4,8", "window": 1.0, "outputs": "measures"}
    assert {n: getattr(got, n) for n in SURROGATE_OWN} == own


def test_cheap_scores_ignore_the_full_analysis_controls():
    # phases=true on 3 checkpoints: the phase windows cannot be formed from a surrogate's 2-3 checkpoints, so
    # reusing the config crashed; a reference run (RunContext.reference) was analyzed again inside the timing
    model, sds = _checkpoints(n=3)
    data = load_data("digits", train_size=128)
    ckpts = Checkpoints([0, 4, 8], sds)
    base = AnalyzeConfig(run_id="x", max_samples=40, anisotropy=False, measures=False, batch_size=32)
    cfg = replace(base, phases=True, reference_run_id="other", precision="bf16")
    run = RunContext(model, 64, 0, reference=Checkpoints([0, 8], [sds[1], sds[0]]))
    got = cheap_scores(ckpts, data, cfg, run, samples=30)
    plain = cheap_scores(ckpts, data, base, RunContext(model, 64, 0), samples=30)
    assert {k: v for k, v in got.items() if not k.endswith("_seconds")} == {
        k: v for k, v in plain.items() if not k.endswith("_seconds")
    }
    assert set(got) == set(plain) and got
