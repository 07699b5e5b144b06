"""Sweep trials fail alone (issue 19.10): only a trial's own failures count as failed trials; any other error
crashes that trial alone, recorded with its reason, and a repeated one stops the worker; search-space values
are checked against TrainConfig's types; every seed's run carries the trial's tags and a description."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from entrypoints import sweep as sweep_ep
from tc.config import SweepConfig, TrainConfig
from tc.core.train import DivergenceError, TrainingFailure, UntrainableConfigError
from tc.sweep import budget
from tc.sweep import space as sweep_space
from tc.sweep import study as studies
from tc.sweep import trial as sweep_trial

BASE = ["--dataset", "digits", "--model", "mlp", "--epochs", "1", "--max_samples", "40", "--anisotropy", "false"]
BASE += ["--seeds", "1", "--target_loss", "0", "--bootstrap", "100"]


def _sweep(tmp_path, space: dict, *extra: str) -> int:
    (tmp_path / "space.json").write_text(json.dumps(space))
    argv = [*BASE, "--search_space", str(tmp_path / "space.json"), "--storage", str(tmp_path / "j.log"), *extra]
    return sweep_ep.main(argv)


def _study(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="tc-sweep", storage=studies.open_storage(str(tmp_path / "j.log")))


LR = {"lr": {"type": "categorical", "choices": [0.05, 0.1, 0.2]}}


def test_the_failures_that_are_a_trials_own_are_training_failures():
    """The policy's two kinds: divergence and an untrainable combination are `TrainingFailure`s (still the
    RuntimeError / ValueError they were, for callers that catch those); a plain ValueError is not."""
    assert issubclass(DivergenceError, TrainingFailure) and issubclass(DivergenceError, RuntimeError)
    assert issubclass(UntrainableConfigError, TrainingFailure) and issubclass(UntrainableConfigError, ValueError)
    assert not isinstance(ValueError("a bug"), sweep_trial.TRIAL_FAILURES)
    cfg = SweepConfig(dataset="digits", model="mlp")
    with pytest.raises(UntrainableConfigError, match="combination"):
        sweep_trial.trial_config(cfg, {"epochs": 0})  # refused by TrainConfig: the trial's own
    assert sweep_trial.trial_config(cfg, {"lr": 0.2}) == TrainConfig(**{**sweep_space.fixed_settings(cfg), "lr": 0.2})


@pytest.mark.parametrize("sampler", ["tpe", "grid"])
def test_a_programming_error_in_training_crashes_trials_and_three_in_a_row_stop_the_worker(
    mlflow_store, tmp_path, monkeypatch, capsys, sampler
):
    """A ValueError from a bug is not "the trial failed": each trial is recorded as crashed (not counted, so
    the budget is not spent on it), and after 3 in a row the worker stops with a message and exit 1."""

    def buggy(*args, **kwargs):
        raise ValueError("an index out of place (a bug)")

    monkeypatch.setattr(sweep_trial.jobs, "train_into_run", buggy)
    assert _sweep(tmp_path, LR, "--n_trials", "5", "--sampler", sampler) == 1
    err = capsys.readouterr().err
    assert "3 trials in a row crashed" in err and "an index out of place" in err
    trials = _study(tmp_path).trials
    if sampler == "grid":  # the crashed point runs next, each time, and is still queued for the next worker
        *trials, queued = trials
        assert queued.state == optuna.trial.TrialState.WAITING and queued.params == {}
        assert len({t.params["lr"] for t in trials}) == 1 and queued.system_attrs["fixed_params"] == trials[0].params
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    for t in trials:
        assert "fail_reason" not in t.user_attrs  # not a failure of its configuration
        assert t.user_attrs[budget.CRASH_ATTR] == "ValueError: an index out of place (a bug)"
        run = MlflowClient().get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED" and run.data.tags["tc.error"].startswith("ValueError: an index")
    assert budget.budget_used(_study(tmp_path)) == (sampler == "grid")  # only the queued rerun counts
    (parent,) = MlflowClient().search_runs(["0"], "tags.`tc.storage` != ''")
    assert parent.info.status == "FAILED" and "in a row" in parent.data.tags["tc.error"]


def _analysis_fails_on_call(monkeypatch, k: int) -> None:
    """The trials' analysis (`tc.sweep.trial.analyze_trial`) raises on its k-th call and does nothing otherwise."""
    calls = {"n": 0}

    def flaky_analysis(cfg, parent_id, second_id=None):
        calls["n"] += 1
        if calls["n"] == k:
            raise RuntimeError("the analysis fell over")

    monkeypatch.setattr(sweep_trial, "analyze_trial", flaky_analysis)


def test_an_analysis_error_crashes_that_trial_alone_and_the_worker_goes_on(mlflow_store, tmp_path, monkeypatch):
    """The second trial's analysis raises: that trial is FAILED with its reason and does not count, the run
    FAILED with tc.error; the worker runs on until n_trials trials count, and exits 0."""
    _analysis_fails_on_call(monkeypatch, 2)
    assert _sweep(tmp_path, LR, "--n_trials", "2") == 0
    trials = _study(tmp_path).trials
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    crashed = trials[1]
    assert crashed.user_attrs[budget.CRASH_ATTR] == "RuntimeError: the analysis fell over"
    run = MlflowClient().get_run(crashed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "the analysis fell over" in run.data.tags["tc.error"]
    assert budget.budget_used(_study(tmp_path)) == 2


@pytest.mark.parametrize("crash_at", [0, 2], ids=["first", "last"])
def test_a_crashed_grid_point_runs_again_and_every_point_is_measured_once(
    mlflow_store, tmp_path, monkeypatch, crash_at
):
    """Optuna's GridSampler counts a FAILED trial as a visited point: without a rerun, a crash of the first
    trial leaves one of 3 points never measured and spends the budget on a duplicate of another; the rerun of
    the last point is queued while the other trials already fill the budget, and must still run."""
    real, calls = sweep_trial.jobs.train_into_run, {"n": 0}

    def crashes_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_at + 1:
            raise RuntimeError("a lost connection")
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_trial.jobs, "train_into_run", crashes_once)
    assert _sweep(tmp_path, LR, "--n_trials", "3", "--sampler", "grid") == 0
    trials = _study(tmp_path).trials
    done = [t.params["lr"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(done) == [0.05, 0.1, 0.2]  # every point, none twice
    (crashed,) = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert crashed.number == crash_at and budget.CRASH_ATTR in crashed.user_attrs and len(trials) == 4
    assert trials[crash_at + 1].params == crashed.params  # the same point, next


def test_an_analysis_out_of_memory_is_the_trials_own_failure_and_frees_the_cache(mlflow_store, tmp_path, monkeypatch):
    """Out of device memory in the analysis, as in training: the configuration's size meeting the device. The
    trial fails with its reason and counts, and the allocator's cache is emptied for the next trial."""
    emptied = []

    def oom(cfg, parent_id, second_id=None):
        monkeypatch.setattr(sweep_trial.torch.cuda, "is_available", lambda: not emptied)  # a GPU, until emptied
        monkeypatch.setattr(sweep_trial.torch.cuda, "empty_cache", lambda: emptied.append(True))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(sweep_trial, "analyze_trial", oom)
    assert _sweep(tmp_path, LR, "--n_trials", "1") == 0
    (trial,) = _study(tmp_path).trials
    assert trial.state == optuna.trial.TrialState.FAIL and budget.CRASH_ATTR not in trial.user_attrs
    assert trial.user_attrs["fail_reason"].startswith("OutOfMemoryError: CUDA out of memory")
    run = MlflowClient().get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "out of memory" in run.data.tags["tc.error"]
    assert budget.budget_used(_study(tmp_path)) == 1 and emptied == [True]


def test_a_crashed_trial_marks_its_second_seeds_run_too(mlflow_store, tmp_path, monkeypatch):
    """seeds=2: the analysis crashes after both seeds trained; the second seed's run, FINISHED by its
    training, is FAILED with tc.error as the first one is, so no run of a crashed trial looks like a result."""
    _analysis_fails_on_call(monkeypatch, 1)
    assert _sweep(tmp_path, LR, "--n_trials", "1", "--seeds", "2") == 0
    crashed, done = _study(tmp_path).trials
    client = MlflowClient()
    for trial, status in ((crashed, "FAILED"), (done, "FINISHED")):
        first = trial.user_attrs["mlflow_run_id"]
        (second,) = client.search_runs(["0"], f"tags.`tc.seed_of` = '{first}'")
        for run in (client.get_run(first), second):
            assert run.info.status == status, (trial.number, run.info.run_name)
            assert ("the analysis fell over" in run.data.tags.get("tc.error", "")) == (status == "FAILED")


@pytest.mark.parametrize("where", ["suggest", "nested_run"])
def test_an_error_before_the_trials_run_exists_crashes_that_trial_alone(mlflow_store, tmp_path, monkeypatch, where):
    """Sampling the values and creating the trial's run are inside the crash guard too."""
    module = sweep_trial if where == "suggest" else sweep_trial.client
    real, calls = getattr(module, where), {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError(f"{where} fell over")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, where, flaky)
    assert _sweep(tmp_path, LR, "--n_trials", "1") == 0
    crashed, done = _study(tmp_path).trials
    assert crashed.user_attrs[budget.CRASH_ATTR] == f"RuntimeError: {where} fell over"
    assert "mlflow_run_id" not in crashed.user_attrs and done.state == optuna.trial.TrialState.COMPLETE
    runs = MlflowClient().search_runs(["0"], "tags.`tc.trial` != ''")
    assert [r.info.run_id for r in runs] == [done.user_attrs["mlflow_run_id"]]


def test_a_pruned_trial_ends_its_run_killed_and_counts(mlflow_store, tmp_path, monkeypatch):
    def pruned(*args, **kwargs):
        raise optuna.TrialPruned("test_acc below the median at epoch 1")

    monkeypatch.setattr(sweep_trial.jobs, "train_into_run", pruned)
    assert _sweep(tmp_path, LR, "--n_trials", "1") == 0
    (trial,) = _study(tmp_path).trials
    assert trial.state == optuna.trial.TrialState.PRUNED and budget.budget_used(_study(tmp_path)) == 1
    run = MlflowClient().get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and "below the median" in run.data.tags["tc.pruned"]
    (parent,) = MlflowClient().search_runs(["0"], "tags.`tc.storage` != ''")
    assert parent.info.status == "FINISHED"


@pytest.mark.parametrize("error", ["diverged", "bug"])
def test_a_second_seed_whose_training_fails_fails_or_crashes_the_trial_with_both_runs(
    mlflow_store, tmp_path, monkeypatch, error
):
    """seeds=2, the second seed's training raises after the first seed trained (the second seed runs in a
    train job of its own): a divergence is the trial's own failure (fail_reason, counted), a bug crashes it
    (not counted); either way both seeds' runs end FAILED with the trial's reason in tc.error, never
    FINISHED, so no run of that trial looks like a result."""
    original = sweep_trial.jobs.train_into_run

    def second_seed_fails(run_id, cfg, *args, **kwargs):
        if cfg.seed == SweepConfig.seed + 1:
            raise DivergenceError(3, float("nan")) if error == "diverged" else ValueError("a bug in seed two")
        return original(run_id, cfg, *args, **kwargs)

    monkeypatch.setattr(sweep_trial.jobs, "train_into_run", second_seed_fails)
    # a crash does not count, so the worker retries until three crashes in a row stop it (exit 1)
    assert _sweep(tmp_path, LR, "--n_trials", "1", "--seeds", "2") == (error == "bug")
    trial = _study(tmp_path).trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL
    if error == "diverged":
        assert trial.user_attrs["fail_reason"].startswith("training diverged at step 3")
        assert budget.CRASH_ATTR not in trial.user_attrs
    else:
        assert trial.user_attrs[budget.CRASH_ATTR] == "ValueError: a bug in seed two"
    client = MlflowClient()
    first = client.get_run(trial.user_attrs["mlflow_run_id"])
    (second,) = client.search_runs(["0"], f"tags.`tc.seed_of` = '{first.info.run_id}'")
    for run in (first, second):
        assert run.info.status == "FAILED", run.info.run_name
        if error == "diverged":
            assert run.data.tags["tc.error"] == trial.user_attrs["fail_reason"]
        else:
            assert run.data.tags["tc.error"].startswith("ValueError: a bug in seed two\n\nTraceback")
    assert second.info.run_name == "trial 0 seed1" and second.data.tags["tc.trial"] == "0"


def test_an_untrainable_combination_is_the_trials_own_failure_and_counts(mlflow_store, tmp_path):
    """freeze_cut 9 is a valid value alone, but not a cut of a 3-layer MLP: the trial fails with its reason,
    counts toward n_trials, and the study goes on."""
    space = {"freeze_cut": {"type": "categorical", "choices": [0, 9]}}
    assert _sweep(tmp_path, space, "--n_trials", "2", "--sampler", "grid") == 0
    by_cut = {t.params["freeze_cut"]: t for t in _study(tmp_path).trials}
    assert by_cut[0].state == optuna.trial.TrialState.COMPLETE
    assert by_cut[9].state == optuna.trial.TrialState.FAIL and "not a cut" in by_cut[9].user_attrs["fail_reason"]
    assert budget.CRASH_ATTR not in by_cut[9].user_attrs and budget.budget_used(_study(tmp_path)) == 2


def test_a_trial_ends_its_own_run_never_the_sweep_run(mlflow_store, tmp_path, monkeypatch):
    """MLflow pops the active run before it marks it ended: when marking the diverged trial's run FAILED
    raises (a tracking-server hiccup), the trial crashes, and its crash handling ends the trial's run by id,
    not the sweep run that is active by then."""

    def diverges(*args, **kwargs):
        raise DivergenceError(1, float("nan"))

    real, calls = MlflowClient.set_terminated, []

    def hiccup(self, run_id, status=None, end_time=None):
        calls.append((run_id, status))
        if len(calls) == 1:
            raise ConnectionError("the tracking server hiccuped")
        return real(self, run_id, status, end_time)

    monkeypatch.setattr(sweep_trial.jobs, "train_into_run", diverges)
    monkeypatch.setattr(MlflowClient, "set_terminated", hiccup)
    assert _sweep(tmp_path, LR, "--n_trials", "1") == 0
    (parent,) = MlflowClient().search_runs(["0"], "tags.`tc.storage` != ''")
    assert parent.info.status == "FINISHED" and "tc.error" not in parent.data.tags
    first, second = _study(tmp_path).trials
    assert "ConnectionError" in first.user_attrs[budget.CRASH_ATTR] and "diverged" in second.user_attrs["fail_reason"]
    for t in (first, second):
        run = MlflowClient().get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED" and run.data.tags["tc.error"], t.number
    assert calls[0] == (first.user_attrs["mlflow_run_id"], "FAILED")


CRASH_SCRIPT = """
import optuna
from tc.sweep import study as studies
from tc.sweep import trial

def objective(t):
    try:
        raise ValueError("a bug deep inside")
    except ValueError as e:
        raise trial._crash(t, e, None) from e

study = optuna.create_study(storage=studies.open_storage({journal!r}), direction="maximize")
try:
    studies.run_worker(study, objective, 1, max_consecutive_crashes=1)
except studies.SystematicFailure:
    pass
"""


def test_a_crashs_traceback_reaches_the_output_once(tmp_path):
    """Optuna logs a failed trial's exception with its traceback, the crash's cause chained in: tc prints its
    own line, and no second copy of the traceback. In a fresh interpreter, whose stderr Optuna's handler holds."""
    (tmp_path / "crash.py").write_text(CRASH_SCRIPT.format(journal=str(tmp_path / "j.log")))
    out = subprocess.run(
        [sys.executable, tmp_path / "crash.py"], capture_output=True, text=True, timeout=120, check=True
    )
    err = out.stderr
    assert "tc sweep: trial 0 crashed" in err and 'raise ValueError("a bug deep inside")' in err
    assert err.splitlines().count("ValueError: a bug deep inside") == 1  # the traceback's last line, once
    assert err.count("Traceback (most recent call last)") == 2  # the bug, then the TrialCrashed it caused


def _crashing(fails: set[int]):
    """An objective that crashes (as `tc.sweep.trial.objective` records a crash) on the trials numbered in `fails`."""

    def func(trial: optuna.Trial) -> float:
        if trial.number in fails:
            trial.set_user_attr(budget.CRASH_ATTR, "RuntimeError: boom")
            raise studies.TrialCrashed("boom")
        return float(trial.number)

    return func


@pytest.mark.parametrize(
    ("fails", "n_trials", "stops", "ran"),
    [
        ({0, 1, 3, 4, 6, 7}, 3, False, 9),  # never 3 in a row: 3 trials count, the crashes do not
        ({1, 2, 3, 4, 5}, 4, True, 4),  # 3 in a row: stopped after trial 3, one trial counted
        ({0, 1}, 2, False, 4),
    ],
)
def test_the_worker_stops_after_three_crashes_in_a_row_only(fails, n_trials, stops, ran):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    if stops:
        with pytest.raises(studies.SystematicFailure, match="3 trials in a row crashed"):
            studies.run_worker(study, _crashing(fails), n_trials)
    else:
        studies.run_worker(study, _crashing(fails), n_trials)
        assert budget.budget_used(study) == n_trials
    assert len(study.trials) == ran


@pytest.mark.parametrize(
    ("param", "spec", "message"),
    [
        ("batch_size", {"type": "categorical", "choices": [32, 32.5]}, "batch_size=32.5 is not a valid training value"),
        ("batch_size", {"type": "categorical", "choices": [32.0]}, "batch_size takes int values"),
        ("width", {"type": "float", "low": 8, "high": 64}, "width takes integers, and type float samples fractions"),
        ("augment", {"type": "categorical", "choices": [0, 1]}, "augment=0 is not a valid training value"),
        ("augment", {"type": "int", "low": 0, "high": 1}, "augment takes bool values: use type categorical"),
        ("lr", {"type": "categorical", "choices": [0.1, True]}, "lr=True is not a valid training value"),
        ("optimizer", {"type": "categorical", "choices": ["sgd", 1]}, "optimizer=1 is not a valid training value"),
    ],
)
def test_space_values_are_checked_against_the_training_fields_types(param, spec, message):
    fixed = {"dataset": "digits", "model": "mlp"}
    sweep_space.validate_space({param: spec})
    with pytest.raises(ValueError, match=message):
        sweep_space.check_space_values({param: spec}, fixed, "space.json")


def test_well_typed_spaces_pass_and_the_default_space_is_well_typed():
    fixed = {"dataset": "digits", "model": "mlp"}
    sweep_space.check_space_values(sweep_space.DEFAULT_SPACE, fixed)
    ok = {
        "lr": {"type": "categorical", "choices": [1, 0.5]},  # an integer is a float value
        "momentum": {"type": "int", "low": 0, "high": 1},
        "augment": {"type": "categorical", "choices": [True, False]},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        "width": {"type": "int", "low": 8, "high": 64},
    }
    sweep_space.check_space_values(ok, fixed)


def test_a_mistyped_space_value_is_refused_before_any_trial(mlflow_store, tmp_path, capsys):
    space = {"batch_size": {"type": "categorical", "choices": [32.5]}}
    assert _sweep(tmp_path, space) == 2
    assert "batch_size=32.5" in capsys.readouterr().err
    assert not (tmp_path / "j.log").exists()  # no study, no trial
    (run,) = MlflowClient().search_runs(["0"])  # the refusal's record (tc.tracking.refusals)
    assert run.info.run_name.startswith("refused: ") and "batch_size=32.5" in run.data.tags["tc.error"]


@pytest.mark.parametrize("analysis", ["core", "measures"])
def test_every_seeds_run_has_the_trials_tags_and_a_description(mlflow_store, tmp_path, analysis):
    """seeds=2: the second seed's run carries the trial's tags (tc.study, tc.trial, tc.sweep_run_id), the
    training run's tags, tc.converged and a description, as the first seed's run does, so a UI filter on any of
    them finds both seeds. With analysis=measures it is analyzed too (the analysis tags, the spreads
    <measure>_seed_sd); under the default, core, it is the first seed's reference alone (gm_disagreement,
    gm_js_disagreement) and holds its training only."""
    argv = ["--seeds", "2", "--target_loss", "0.5", "--epochs", "3", "--n_trials", "1", "--analysis", analysis]
    assert _sweep(tmp_path, {"lr": {"type": "categorical", "choices": [0.2]}}, *argv) == 0
    client = MlflowClient()
    (trial,) = _study(tmp_path).trials
    first = client.get_run(trial.user_attrs["mlflow_run_id"])
    (second,) = client.search_runs(["0"], f"tags.`tc.seed_of` = '{first.info.run_id}'")
    per_run = {"tc.seed", "tc.seed_of", "tc.writer", "tc.writer_heartbeat", "tc.analysis", "tc.analysis_last_step"}
    per_run |= {"tc.analysis.run_id", "tc.analysis.reference_run_id", "tc.analysis_run_status"}
    shared = {k for k in first.data.tags if k.startswith("tc.") and k not in per_run}
    assert {"tc.study", "tc.trial", "tc.sweep_run_id", "tc.dataset", "tc.model", "tc.converged"} <= shared
    assert any(k.startswith("tc.analysis.") for k in shared)
    analyzed = analysis != "core"
    for key in shared:
        if not analyzed and key.startswith(("tc.analysis", "tc.window_warning")):  # the analysis' own tags
            assert key not in second.data.tags, key  # core: the second seed is not analyzed
            continue
        assert key in second.data.tags, key
        if not key.startswith(("tc.analysis_version", "tc.analysis_step")):
            assert second.data.tags[key] == first.data.tags[key], key
    assert ("tc.analysis" in second.data.tags) == analyzed
    assert first.data.tags["tc.analysis.reference_run_id"] == second.info.run_id
    assert {"gm_disagreement", "gm_js_disagreement"} <= set(first.data.metrics)  # the reference, in both
    assert ("tc_test_seed_sd" in first.data.metrics) == analyzed
    assert ("tc_test" in second.data.metrics) == analyzed
    assert second.data.tags["tc.seed"] == str(int(first.data.tags["tc.seed"]) + 1)
    assert (first.info.run_name, second.info.run_name) == ("trial 0", "trial 0 seed1")
    note = second.data.tags["mlflow.note.content"]
    assert "seed 1" in note and "test accuracy" in note  # trained
    assert ("tc test" in note) == analyzed  # then analyzed, or not
    trial_filter = f"tags.`tc.trial` = '{trial.number}' and tags.`tc.study` = 'tc-sweep'"
    assert {r.info.run_id for r in client.search_runs(["0"], trial_filter)} == {first.info.run_id, second.info.run_id}
