"""The sweep entry point: trials as nested MLflow runs, the correlation report, and several workers on one
study (an Optuna journal file, and PostgreSQL where a server is reachable)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tc.config import SweepConfig
from tc.sweep import budget
from tc.sweep import space as sweep_space
from tc.sweep import study as studies
from tc.sweep import summary as sweep_summary
from tc.sweep.study import open_storage
from tests.conftest import ROOT

SPACE = ROOT / "examples" / "digits_space.yaml"
TINY = ["dataset=digits", "model=mlp", "epochs=2", "max_samples=60", "bootstrap=100", f"search_space={SPACE}"]
TINY += ["target_loss=0", "seeds=1"]  # 2 epochs, one seed: the sharing machinery, not the stopping criterion


def _sweep_cmd(*params):
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "-e", "sweep"]
    for p in [*TINY, *params]:
        cmd += ["-P", p]
    return cmd


def _check_study(study_name, storage, n_trials, workers):
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == n_trials  # the global budget, exactly (see tc.sweep.study.run_worker)
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert all("tc.surplus" in t.user_attrs for t in others)  # at most a trial that lost the race, FAILED
    assert len({tuple(sorted(t.params.items())) for t in complete}) == n_trials  # workers drew distinct params
    numbers = [t.number for t in study.trials]
    assert len(set(numbers)) == len(numbers)
    client = MlflowClient()
    sweep_runs = {r.info.run_id for r in client.search_runs(["0"], "tags.`tc.storage` != ''")}
    assert len(sweep_runs) == workers
    run_ids = [t.user_attrs["mlflow_run_id"] for t in complete]
    assert len(set(run_ids)) == len(run_ids)  # no trial ran twice, none shares a run
    for t in complete:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["tc.trial"] == str(t.number) and run.data.tags["tc.study"] == study_name
        assert run.data.tags["mlflow.parentRunId"] in sweep_runs and "tc_test" in run.data.metrics
        assert any(f.path == "checkpoints/index.json" for f in client.list_artifacts(run.info.run_id, "checkpoints"))
    return study


def _two_workers(storage, study_name, n_trials=4):
    procs = [
        subprocess.Popen(
            _sweep_cmd(f"n_trials={n_trials}", f"study_name={study_name}", f"storage={storage}", f"seed={i}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return _check_study(study_name, storage, n_trials, workers=2)


@pytest.mark.slow
def test_two_workers_share_one_journal_study_and_a_rerun_adds_trials(mlflow_store, tmp_path):
    storage = str(tmp_path / "journal.log")
    _two_workers(storage, "journal-study")
    proc = subprocess.run(
        _sweep_cmd("n_trials=6", "study_name=journal-study", f"storage={storage}"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(
        study_name="journal-study",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)),
    )
    assert len(study.trials) >= 6  # resumed the study, did not start over


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(mlflow_store):
    url = os.environ.get("TC_TEST_POSTGRES_URL")
    if not url:
        pytest.skip(
            "no PostgreSQL server: set TC_TEST_POSTGRES_URL (.ci/run starts one with scripts/start_postgres.sh)"
        )
    name = f"pg-study-{os.getpid()}"
    try:
        _two_workers(url, name)
    finally:
        optuna.delete_study(study_name=name, storage=url)


def test_sweep_reports_correlations_to_the_parent_run(mlflow_store, tmp_path):
    from entrypoints import sweep as sweep_ep

    argv = [
        "--n_trials",
        "4",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "2",
        "--max_samples",
        "60",
        "--bootstrap",
        "100",
        "--search_space",
        str(SPACE),
        "--storage",
        str(tmp_path / "j.log"),
        "--anisotropy",
        "false",
        "--target_loss",
        "0",
        "--seeds",
        "1",
    ]
    assert sweep_ep.main(argv) == 0
    client = MlflowClient()
    (parent,) = client.search_runs(["0"], "tags.`tc.storage` != ''")
    names = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "correlations.csv", "scatter.png", "correlation_bars.png"} <= names
    assert "corr_spearman_tc_test" in parent.data.metrics and "corr_kendall_tc_test" in parent.data.metrics
    local = client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path))
    trials = pd.read_csv(local)
    assert len(trials) == 4 and {"lr", "width", "test_acc", "train_acc_clean", "gen_gap", "tc_test", "run_id"} <= set(
        trials
    )
    # 2 epochs: the window holds 1 checkpoint, so only the k=1 surrogate exists (k=2 would exceed the window)
    assert {"tc_test_cheap_k1_n100", "tc_window_checkpoints", "gm_margin", "gm_dist_init"} <= set(trials)
    # the default analysis, core: no train or corrupt split, no costly measures (analysis=measures adds them)
    assert not {"tc_train", "tc_corrupt", "gm_sharpness", "tc_mmd"} & set(trials)
    assert not any(c.endswith(("_seconds", "_cost_epochs")) for c in trials if c.startswith(("tc_", "gm_")))
    children = client.search_runs(["0"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_id for r in children) == sorted(trials["run_id"])


def test_diverging_trial_fails_with_its_reason_and_the_study_goes_on(mlflow_store, tmp_path, capsys):
    """Also what the sweep says (issue 22): one line per trial and no per-epoch lines (those are kept in the trial
    run's trial_output.txt), how every trial ended, and the too-few-trials line in the console, summary.json and
    the run description, with trials.csv still logged."""
    from entrypoints import sweep as sweep_ep

    space = tmp_path / "space.json"
    space.write_text(
        '{"lr": {"type": "categorical", "choices": [1e6, 0.05]}, "momentum": {"type": "categorical", "choices": [0.0]}}'
    )
    storage = str(tmp_path / "j.log")
    argv = [
        "--n_trials",
        "4",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--max_samples",
        "40",
        "--search_space",
        str(space),
        "--storage",
        storage,
        "--sampler",
        "grid",
        "--anisotropy",
        "false",
        "--seeds",
        "1",
    ]
    assert sweep_ep.main(argv) == 0
    study = optuna.load_study(
        study_name="tc-sweep",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)),
    )
    states = {t.params["lr"]: t for t in study.trials}
    assert states[1e6].state == optuna.trial.TrialState.FAIL and "diverged" in states[1e6].user_attrs["fail_reason"]
    assert states[0.05].state == optuna.trial.TrialState.COMPLETE
    failed_run = MlflowClient().get_run(states[1e6].user_attrs["mlflow_run_id"])
    assert failed_run.info.status == "FAILED" and "diverged" in failed_run.data.tags["tc.error"]
    printed = capsys.readouterr()
    out = printed.out.splitlines()
    per_trial = [line for line in out if line.startswith("tc sweep: trial ")]
    assert len(per_trial) == 2, out
    assert "lr=0.05 | hit the epoch cap | test_acc " in per_trial[0] and "tc_kappa_test" in per_trial[0]
    assert "1 left: about " in per_trial[0]  # the time left, after the first trial
    assert "lr=1e+06 | failed: training diverged at step" in per_trial[1]
    assert not [line for line in out if line.startswith(("epoch ", "tc train:", "tc analyze:"))], out
    assert not [line for line in printed.err.splitlines() if line.startswith(("tc train:", "tc analyze:"))]
    run_id = states[0.05].user_attrs["mlflow_run_id"]
    kept = Path(MlflowClient().download_artifacts(run_id, "trial_output.txt", str(tmp_path))).read_text()
    assert "epoch 1/1" in kept and "tc train:" in kept
    failed_kept = {f.path for f in MlflowClient().list_artifacts(failed_run.info.run_id)}
    assert "trial_output.txt" in failed_kept  # logged after its run was ended FAILED too
    explained = "2 trial(s): 1 finished, of which 0 converged and 1 hit the epoch cap, not reaching target_loss 0.01"
    too_few = "too few converged trials (0 of 2; need 3)"
    assert f"tc sweep: {too_few}: no correlations computed" in out and any(explained in line for line in out)
    (parent,) = MlflowClient().search_runs(["0"], "tags.`tc.storage` != ''")
    names = {f.path for f in MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "summary.json"} <= names and "correlations.csv" not in names
    written = json.loads(
        Path(MlflowClient().download_artifacts(parent.info.run_id, "summary.json", str(tmp_path))).read_text()
    )
    assert written["correlations"]["status"] == "too_few" and too_few in written["correlations"]["line"]
    assert written["trials"]["failed_reasons"] == {"diverged": 1}
    description = parent.data.tags["mlflow.note.content"]
    assert too_few in description and explained in description and "1 failed (1 diverged)" in description


def test_bad_storage_and_search_space_exit_2(mlflow_store, tmp_path, capsys):
    from entrypoints import sweep as sweep_ep

    assert sweep_ep.main(["--storage", "nosuchdialect://x"]) == 2
    assert "cannot open this database" in capsys.readouterr().err
    (tmp_path / "s.json").write_text("{")
    assert sweep_ep.main(["--search_space", str(tmp_path / "s.json")]) == 2
    assert "not valid YAML/JSON" in capsys.readouterr().err


def test_a_space_the_data_cannot_satisfy_is_refused_before_any_trial(mlflow_store, tmp_path, capsys):
    from entrypoints import sweep as sweep_ep

    space = tmp_path / "space.json"
    space.write_text('{"train_size": {"type": "categorical", "choices": [500, 2000]}}')
    journal = tmp_path / "j.log"
    argv = ["--dataset", "digits", "--search_space", str(space), "--storage", str(journal)]
    assert sweep_ep.main(argv) == 2
    assert "train_size [2000] exceeds the 1438 training examples of digits" in capsys.readouterr().err
    assert not journal.exists()  # no study, no trial
    (run,) = MlflowClient().search_runs(["0"])  # and one run, the refusal's record (tc.tracking.refusals)
    assert run.info.status == "FAILED" and run.info.run_name.startswith("refused: ")
    assert "train_size [2000] exceeds" in run.data.tags["tc.error"]
    # the default space is fitted to digits instead (train_size 2000 dropped), so it never loses a trial to it
    assert 2000 not in sweep_space.fitted_space(SweepConfig(dataset="digits"))["train_size"]["choices"]


@pytest.mark.slow
def test_trials_train_to_the_target_with_two_seeds_and_unconverged_ones_are_set_apart(mlflow_store, tmp_path):
    """lr 0.2 reaches cross-entropy 0.05 on 300 digits well within 40 epochs; lr 1e-4 cannot."""
    from entrypoints import sweep as sweep_ep

    space = tmp_path / "space.json"
    space.write_text('{"lr": {"type": "categorical", "choices": [0.2, 0.0001]}}')
    argv = ["--n_trials", "2", "--dataset", "digits", "--model", "mlp", "--epochs", "40", "--target_loss", "0.05"]
    argv += ["--max_samples", "60", "--bootstrap", "100", "--search_space", str(space), "--sampler", "grid"]
    argv += ["--storage", str(tmp_path / "j.log"), "--anisotropy", "false", "--seeds", "2"]
    argv += ["--analysis", "measures"]  # the second seed analyzed too: the spreads <measure>_seed_sd
    # fixed training settings come from TrainConfig's defaults; keep trials small through the space's data
    assert sweep_ep.main(argv) == 0
    client = MlflowClient()
    (parent,) = client.search_runs(["0"], "tags.`tc.storage` != ''")
    assert parent.data.metrics["n_trials_converged"] == 1 and parent.data.metrics["n_trials_not_converged"] == 1
    trials = pd.read_csv(client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path)))
    by_lr = trials.set_index("lr")
    assert list(trials["converged"]) == [1, 0]  # converged first, then the one set apart
    assert by_lr.loc[0.2, "epochs_trained"] < 40 and by_lr.loc[0.0001, "epochs_trained"] == 40
    assert by_lr.loc[0.2, "gen_gap"] == pytest.approx(by_lr.loc[0.2, "train_acc_clean"] - by_lr.loc[0.2, "test_acc"])
    assert 0 <= by_lr.loc[0.2, "gm_disagreement"] <= 1 and "tc_test_seed_sd" in trials
    for t in trials.itertuples():
        run = client.get_run(t.run_id)
        assert run.data.tags["tc.converged"] == str(t.converged)
        (second,) = client.search_runs(["0"], f"tags.`tc.seed_of` = '{t.run_id}'")
        assert second.data.tags["mlflow.parentRunId"] == t.run_id
        assert int(second.data.params["seed"]) == int(run.data.params["seed"]) + 1


def test_qmc_in_the_sweep_keeps_one_sobol_sequence_across_per_trial_reseeding():
    """The entry point re-seeds its sampler per trial (for workers); QMC must still fill the space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"lr": {"type": "float", "low": 0.0, "high": 1.0}, "momentum": {"type": "float", "low": 0.0, "high": 1.0}}
    study = optuna.create_study(sampler=studies.make_sampler("qmc", space, 0))
    study.optimize(lambda t: sum(sweep_space.suggest(t, space).values()), n_trials=17)
    pts = [[t.params["lr"], t.params["momentum"]] for t in study.trials][1:]  # trial 0: learns the space
    for axis in (0, 1):
        assert sorted(int(p[axis] * 16) for p in pts) == list(range(16))


def test_a_grid_caps_the_trial_budget_at_its_number_of_points():
    space = {"lr": {"type": "categorical", "choices": [0.1, 0.2]}, "width": {"type": "int", "low": 8, "high": 32}}
    assert budget.trial_budget(SweepConfig(n_trials=20, sampler="grid"), space) == 2 * 3  # 3 points per range
    assert budget.trial_budget(SweepConfig(n_trials=4, sampler="grid"), space) == 4
    assert budget.trial_budget(SweepConfig(n_trials=20, sampler="random"), space) == 20


def test_the_sweep_run_counts_trials_in_the_correlations_once_as_n_trials_converged():
    """Issue 19.13: `n_trials_finished` was a second name for `n_trials_converged`; one name is left, logged
    whether or not there are enough trials for correlations."""
    from tc.analysis import registry as metrics

    space = {"lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}}
    rng = np.random.default_rng(0)
    every = pd.DataFrame(
        {
            "lr": rng.uniform(0.01, 0.1, 6),
            "converged": [1, 1, 0, 1, 1, 1],
            "test_acc": rng.random(6),
            "gen_gap": rng.random(6),
            "tc_test": rng.random(6),
        }
    )
    cfg = SweepConfig(bootstrap=100)
    for rows, converged in ((every, 5), (every.iloc[:3], 2)):
        summary = sweep_summary.summarize(cfg, space, rows)
        assert summary.metrics["n_trials_converged"] == converged == len(summary.trials)
        assert summary.metrics["n_trials_not_converged"] == 1
        assert {k for k in summary.metrics if k.startswith("n_trials")} == {
            "n_trials_converged",
            "n_trials_not_converged",
        }
    assert "n_trials_finished" not in metrics.METRICS and "n_trials_converged" in metrics.METRICS


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() on an RDB with heartbeats, outside optimize
def test_a_studys_storage_is_the_one_it_writes_through(tmp_path):
    """`study_storage` is the one place tc reads an Optuna private for a study (`Study._storage`: Optuna has no
    public accessor): a user attribute written through it is what the study reads back, for a journal file and
    for an RDB (which `optuna.create_study` wraps in a cache). This fails when Optuna moves it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for spec in (str(tmp_path / "j.log"), f"sqlite:///{tmp_path / 'o.db'}"):
        study = optuna.create_study(study_name="s", storage=open_storage(spec))
        number = study.ask().number
        storage = studies.study_storage(study)
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), number)
        storage.set_trial_user_attr(trial_id, "tc.stale", "a dead worker")
        assert study.get_trials()[number].user_attrs == {"tc.stale": "a dead worker"}


def test_past_the_grids_size_a_grid_trial_picks_its_point_by_its_own_seed():
    """Once trial numbers pass the grid's size (here taken by enqueued trials), GridSampler picks a point at
    random among the unvisited ones. `_seed_grid_choice` seeds that choice per trial through Optuna's private
    `GridSampler._rng` (this fails when Optuna changes it): the pick depends on the trial's number, so workers
    differ, and is reproducible, so one worker is."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    points = list(range(8))

    def pick_after(k: int) -> int:
        study = optuna.create_study(
            sampler=studies.make_sampler("grid", {"x": {"type": "categorical", "choices": points}}, 0)
        )
        for _ in range(k):
            study.enqueue_trial({"x": 0})  # no grid point: every point stays unvisited
        study.optimize(lambda t: t.suggest_categorical("x", points), n_trials=k + 1)
        return study.trials[-1].params["x"]

    picks = [pick_after(k) for k in range(8, 14)]
    assert picks == [pick_after(k) for k in range(8, 14)]
    assert len(set(picks)) > 1  # one seed for every trial would pick the same point each time
