"""The one list of logged metrics (`tc.analysis.registry.METRICS`) against what `analyze_run` logs and the headline
list; and the one aggregation over cuts. The docs' table of it (docs/analyze.md) is checked by
tests/test_docs.py."""

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from tc.analysis import registry as M
from tc.analysis.inputs import RunContext, TrainingHistory
from tc.analysis.run import analyze_run
from tc.config import AnalyzeConfig
from tc.core.checkpoints import Checkpoints
from tc.core.data import load_data
from tests.test_compose import _checkpoints

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def logged() -> dict[str, float]:
    """Every metric of a full analysis (all splits, anisotropy, measures, a reference run, a training curve) of a
    tiny run."""
    model, sds = _checkpoints(n=5)
    _, other = _checkpoints(n=2)
    data = load_data("digits", train_size=512)  # 4 full minibatches of 128: gradient noise is computed
    cfg = AnalyzeConfig(
        run_id="x", max_samples=24, null_draws=100, cuts="1,3", batch_size=32, grad_batches=4, aniso_k=2
    )
    cfg = replace(cfg, phases=True)
    history = TrainingHistory(((3, 2.0), (6, 1.0), (9, 0.4)), ((3, 1.8), (6, 0.9), (9, 0.3)), target_loss=0.5)
    run = RunContext(model, 128, 0, reference=Checkpoints([0, 9], other), seconds_per_epoch=2.0, history=history)
    return analyze_run(Checkpoints([0, 3, 5, 8, 9], sds), data, cfg, run).metrics


def test_every_logged_metric_matches_exactly_one_pattern(logged):
    assert len(logged) > 100
    for key in logged:
        assert len(M.patterns_of(key)) == 1, (key, M.patterns_of(key))
    # and the list holds no pattern that nothing matches, but for what this analysis cannot log
    used = {M.patterns_of(k)[0] for k in logged}
    sweep_only = {p for p, meaning in M.METRICS.items() if meaning.startswith("sweep")}
    # bf16_agreement needs precision=bf16, n_calibration_batches bn_mode=recalibrate (tests/test_reductions.py)
    assert set(M.METRICS) - used == {"bf16_agreement", "n_calibration_batches", *sweep_only}
    assert {"splits_seconds", "controls_seconds", "tc_test_seconds", "tc_corrupt_seconds"} <= set(logged)
    for key in ("tc_kappa_test_seed_sd", "corr_kendall_gm_sharpness", "tc_test_cheap_k2_n100_seconds"):
        assert len(M.patterns_of(key)) == 1, key


def test_every_metric_has_a_range_and_every_logged_value_lies_in_it(logged):
    """`RANGES` (what intervals over seeds stay inside, `metric_range`) has one entry per pattern, and a real
    analysis logs no value outside its metric's range."""
    assert set(M.RANGES) == set(M.METRICS)
    for key, value in logged.items():
        lo, hi = M.metric_range(key)
        assert math.isnan(value) or lo <= value <= hi, (key, value, (lo, hi))


def test_headline_agrees_with_the_list():
    for key in M.HEADLINE:
        assert len(M.patterns_of(key)) == 1, key
    # no other copy of the headline list in the entry points
    for path in (ROOT / "entrypoints").glob("*.py"):
        assert not re.search(r'"aniso_perturb_bottom_acc",\s*\n', path.read_text()), path


def test_mean_over_cuts_skips_cuts_without_the_statistic():
    metrics = {"a_d1": 1.0, "a_d3": 2.0, "b_d1": 5.0}
    assert M.mean_over_cuts(metrics, "a", [1, 2, 3]) == 1.5
    assert M.mean_over_cuts(metrics, "c", [1, 2, 3]) is None
    M.add_means_over_cuts(metrics, ["a", "b", "c"], [1, 3])
    assert metrics["a"] == 1.5 and metrics["b"] == 5.0 and "c" not in metrics
