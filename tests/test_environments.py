"""The report's environments (issue 23): their spaces validate and fit their data sets, no label noise in any
of them; the conditional (per-optimizer) learning-rate spec; the sizing calculation against brute force."""

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import optuna
import pytest

from benchmarks import env_sizing
from tc.config import SweepConfig
from tc.core import data as tcdata
from tc.report import experiments
from tc.report.environments import Environment, environments
from tc.sweep import space as sweep_space
from tc.sweep.study import make_sampler
from tests.conftest import ROOT

COND = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    "lr": {
        "type": "float",
        "log": True,
        "given": "optimizer",
        "ranges": {"sgd": {"low": 0.02, "high": 0.1}, "adam": {"low": 1e-3, "high": 4e-3}},
    },
    "width": {"type": "categorical", "choices": [8, 16]},
}


def _config(env: Environment, quick: bool) -> SweepConfig:
    s = experiments.settings(quick=quick, trials=50, root=ROOT)
    params = {**experiments.sweep_parameters(s, env.name, env.n_trials or 1), **env.sweep}
    return experiments.from_strings(SweepConfig, experiments.as_strings(params))


@pytest.mark.parametrize("quick", [True, False])
def test_environments_are_what_the_report_needs_and_their_spaces_fit_their_data(quick):
    if not quick and not tcdata.DEBIAN_FASHION_MNIST.is_dir():  # the quick environments are all on digits
        pytest.skip("Debian's dataset-fashion-mnist not installed")
    envs = environments(quick, ROOT)
    assert [e.name for e in envs] == ["digits-mlp", "conv"]  # unique, in report order
    assert len({e.title for e in envs}) == len(envs)
    for env in envs:
        cfg = _config(env, quick)
        assert cfg.search_space is None or (ROOT / cfg.search_space).is_file()
        space = sweep_space.checked_space(cfg)  # validated, fitted to the data set, every value trainable
        assert "label_noise" not in space, env.name
        assert cfg.target_loss > 0 and cfg.seeds == 2  # every trial trained to the criterion, two seeds
        assert env.n_trials is None or env.n_trials >= 3  # the fewest a rank correlation is computed on
    conv = _config(envs[1], quick)
    assert (conv.dataset, conv.model) == ("digits" if quick else "fashion-mnist", "resnet20")
    conv_space = sweep_space.checked_space(conv)
    assert {"optimizer", "lr", "width", "depth", "batch_size", "train_size"} <= set(conv_space)
    if not quick:
        assert {"sgd", "adam"} == set(conv_space["optimizer"]["choices"]) and "weight_decay" in conv_space
        assert set(conv_space["depth"]["choices"]) == {8, 14}  # ResNet-8 and ResNet-14 (6n + 2)


def test_the_default_space_has_no_label_noise_and_the_examples_quoted_by_the_docs_are_kept():
    assert "label_noise" not in sweep_space.DEFAULT_SPACE
    assert "label_noise" not in sweep_space.default_space(1438)
    # docs/sweep.md quotes a measured demo sweep on digits_space.yaml: it keeps its label noise
    assert "label_noise" in sweep_space.load_space(str(ROOT / "examples/digits_space.yaml"))


def test_a_conditional_spec_gets_its_envelope_and_its_values_are_checked_with_their_choice(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text((ROOT / "examples/fashion_conv_space.yaml").read_text())
    space = sweep_space.load_space(str(path))
    assert (space["lr"]["low"], space["lr"]["high"]) == (2e-3, 0.15)  # the envelope of the two ranges
    sweep_space.validate_space(space)  # the envelope is valid too
    fixed = {"dataset": "digits", "model": "mlp"}
    sweep_space.check_space_values(sweep_space.with_envelopes(COND), fixed)
    bad = {**COND, "lr": {**COND["lr"], "ranges": {"sgd": {"low": 0.02, "high": 0.1}, "adam": {"low": -1, "high": 1}}}}
    with pytest.raises(ValueError, match=r"lr=-1 is not a valid training value"):
        sweep_space.check_space_values(bad, fixed)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"given": "width_typo"}, "must be another, unconditional categorical parameter"),
        ({"given": "lr"}, "must be another, unconditional categorical parameter"),
        ({"ranges": {"sgd": {"low": 0.02, "high": 0.1}}}, "one range per choice of optimizer"),
        ({"ranges": {"sgd": {"low": 0.02, "high": 0.1}, "adam": {"low": 1e-3, "high": 4e-3}, "x": {}}}, "one range"),
        ({"ranges": [0.1, 0.2]}, "one range per choice"),
        ({"ranges": {"sgd": {"low": 0.2, "high": 0.1}, "adam": {"low": 1e-3, "high": 4e-3}}}, r"low < high"),
        ({"ranges": {"sgd": {"low": 0.02}, "adam": {"low": 1e-3, "high": 4e-3}}}, r"lr\[optimizer=sgd\] needs low"),
        ({"ranges": {"sgd": {"low": "a", "high": 0.1}, "adam": {"low": 1e-3, "high": 4e-3}}}, "must be a number"),
        ({"low": 0.5}, "envelope"),
    ],
)
def test_a_malformed_conditional_spec_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        sweep_space.validate_space({**COND, "lr": {**COND["lr"], **change}})


def test_a_categorical_spec_cannot_be_conditional_and_grid_refuses_a_conditional_range():
    with pytest.raises(ValueError, match="only a float or int spec may be conditional"):
        sweep_space.validate_space({**COND, "width": {**COND["width"], "given": "optimizer"}})
    with pytest.raises(ValueError, match="sampler=grid cannot draw lr: its range depends on optimizer"):
        sweep_space.grid_of(sweep_space.with_envelopes(COND))


@pytest.mark.parametrize("sampler", ["qmc", "random", "tpe"])
def test_drawn_conditional_values_respect_the_range_of_their_choice(sampler):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = sweep_space.with_envelopes(COND)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler, space, 0))
    seen = set()
    for _ in range(24):
        trial = study.ask()
        values = sweep_space.suggest(trial, space)
        r = COND["lr"]["ranges"][values["optimizer"]]
        assert r["low"] <= values["lr"] <= r["high"], values
        assert trial.params["lr"] == values["lr"]  # the trial's recorded lr is the one it trains with
        seen.add(values["optimizer"])
        study.tell(trial, values["lr"])
    assert seen == {"sgd", "adam"}


def test_the_bootstrap_half_width_estimates_the_sampling_spread_of_tau():
    """The sizing calculation's core (`halfwidth`, the sweep's percentile bootstrap) against brute force: 1.96 SD
    of τ-b over independent simulated sweeps; and the simulation's τ is the one asked for (Greiner's relation)."""
    from scipy import stats

    for n, tau in ((30, 0.5), (60, 0.3)):
        boot = env_sizing.halfwidth(n, tau, reps=60, draws=500)
        brute = env_sizing.sampling_halfwidth(n, tau, reps=800)
        assert boot == pytest.approx(brute, rel=0.15), (n, tau)
    rng = np.random.default_rng(1)
    taus = [stats.kendalltau(*env_sizing.simulated(200, 0.5, rng)).statistic for _ in range(200)]
    assert np.mean(taus) == pytest.approx(0.5, abs=0.01)
    # half-widths fall as 1/sqrt(n): four times the trials, half the width
    assert env_sizing.sampling_halfwidth(120, 0.5, reps=800) == pytest.approx(
        env_sizing.sampling_halfwidth(30, 0.5, reps=800) / 2, rel=0.15
    )
    assert env_sizing.trials_needed(0.5, grid=range(20, 200, 20), reps=40, draws=300) in (40, 60, 80)
    assert math.isclose(env_sizing.GOAL, 0.15)


def test_a_sweep_with_sampler_grid_refuses_a_conditional_space_before_any_trial():
    space = str(ROOT / "examples/conv_quick_space.yaml")
    cfg = SweepConfig(search_space=space, dataset="digits", model="resnet20", sampler="grid")
    with pytest.raises(ValueError, match="sampler=grid cannot draw lr"):
        sweep_space.checked_space(cfg)
    assert "lr" in sweep_space.checked_space(SweepConfig(search_space=space, dataset="digits", model="resnet20"))


def test_qmc_refuses_overlapping_conditional_ranges_which_would_crowd_its_draws_into_the_overlap(tmp_path):
    """Under QMC a trial keeps the Sobol point drawn in the first trial's range wherever it also lies in its own,
    so overlapping ranges would draw the other choice's values more often in the overlap than its range says
    (measured: 0.66 of Adam's draws in an overlap holding half its log-range). Disjoint or touching ranges are
    drawn as documented; random draws each range on its own, so it accepts an overlap."""
    overlapping = {"sgd": {"low": 0.01, "high": 0.1}, "adam": {"low": 0.005, "high": 0.02}}
    path = tmp_path / "s.yaml"
    path.write_text(
        "optimizer: {type: categorical, choices: [sgd, adam]}\n"
        f"lr: {{type: float, log: true, given: optimizer, ranges: {overlapping}}}\n".replace("'", "")
    )
    cfg = SweepConfig(search_space=str(path), dataset="digits", model="mlp", sampler="qmc")
    with pytest.raises(ValueError, match=r"sampler=qmc cannot draw lr: its ranges overlap \(adam and sgd\)"):
        sweep_space.checked_space(cfg)
    assert "lr" in sweep_space.checked_space(SweepConfig(search_space=str(path), dataset="digits", sampler="random"))
    touching = "adam: {low: 0.005, high: 0.01}"
    path.write_text(path.read_text().replace("adam: {low: 0.005, high: 0.02}", touching))
    assert "lr" in sweep_space.checked_space(cfg)


@pytest.mark.parametrize("name", ["../x", "a/b", "", "Digits", "-x", "a" * 41, "x.csv", None])
def test_an_environment_name_that_could_reach_a_path_is_refused(name):
    """A name becomes part of the stored tables' file names, and a re-render reads it from settings.json."""
    with pytest.raises(ValueError, match="environment name"):
        Environment(name, "t")


def test_a_stored_settings_json_with_a_path_in_an_environment_name_is_refused(tmp_path):
    stored = {**asdict(experiments.settings(True, 0, Path("."))), "environments": [{"name": "../../etc", "title": "t"}]}
    with pytest.raises(ValueError, match="environment name"):
        experiments.legacy_settings(stored)
