"""Issue 22, "no run litter": a refused command leaves exactly one FAILED run named `refused: <reason>`, its whole
message in the tag `tc.error`, and exits 2 (`tc.tracking.refusals`): every entry point, run directly and as
`mlflow run` runs it (in the run MLFLOW_RUN_ID names). The cache command leaves no run at all."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tc.tracking import labels, refusals
from tests.conftest import ROOT


def _the_refused_run(said: str):
    """The store's one run: FAILED, named after `said`, with `said` whole in `tc.error`."""
    (run,) = MlflowClient().search_runs(["0"])
    assert run.info.status == "FAILED" and run.data.tags["tc.error"] == said
    assert run.info.run_name == labels.refused_name(said) and run.info.run_name.startswith("refused: ")
    return run


def _said(capsys, entry: str) -> str:
    """What a refused command printed on stderr (one message), without its `tc <entry>: ` prefix."""
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tc {entry}: ") and err.count("tc ") == 1
    return err.removeprefix(f"tc {entry}: ")


@pytest.mark.parametrize(
    "entry, argv, words",
    [
        ("train", ["--optimizer", "rmsprop"], "optimizer='rmsprop' is not valid"),
        ("train", ["--no_such", "1"], "unrecognized arguments: --no_such 1"),  # an undeclared -P of `mlflow run`
        ("analyze", ["--run_id", "x", "--splits", "val"], "'val' is not valid"),
        ("analyze", [], "run_id is required"),
        ("sweep", ["--sampler", "nope"], "sampler='nope' is not valid"),
        ("main", ["--epochs", "0"], "epochs=0 is out of range"),
        ("report", ["--trials", "-3"], "trials=-3 is out of range"),
    ],
)
def test_a_command_refused_before_any_work_leaves_one_failed_run_named_refused(
    mlflow_store, capsys, entry, argv, words
):
    command = importlib.import_module(f"entrypoints.{entry}")
    assert command.main(argv) == refusals.REFUSED_EXIT == 2
    said = _said(capsys, entry)
    assert words in said
    _the_refused_run(said)


def test_under_mlflow_run_the_refusal_is_recorded_in_the_run_it_created(mlflow_store, capsys, monkeypatch):
    """`mlflow run` creates the run (a made-up name) before the command starts and passes it as MLFLOW_RUN_ID:
    that run, and no second one, becomes the record."""
    from entrypoints import train as train_ep

    made = MlflowClient().create_run("0").info
    assert labels.is_generated_name(made.run_name)
    monkeypatch.setenv("MLFLOW_RUN_ID", made.run_id)
    assert train_ep.main(["--lr", "-1"]) == 2
    run = _the_refused_run(_said(capsys, "train"))
    assert run.info.run_id == made.run_id and run.info.run_name == "refused: lr=-1.0 is out of range"


def test_a_name_someone_gave_is_kept(mlflow_store, capsys, monkeypatch):
    """`mlflow run --run-name mine` or a caller's `run_name` (a sweep's `trial N seedS`) stays the run's name, as
    tc keeps such names everywhere (docs/ui.md); `tc.error` and FAILED still say it was refused."""
    from entrypoints import train as train_ep
    from tc.config import TrainConfig
    from tc.core.data import DatasetNotFoundError
    from tc.tracking import jobs

    mine = MlflowClient().create_run("0", run_name="mine").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", mine)
    assert train_ep.main(["--lr", "-1"]) == 2
    run = MlflowClient().get_run(mine)
    assert run.info.run_name == "mine" and run.info.status == "FAILED" and "lr=-1.0" in run.data.tags["tc.error"]
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)  # start_run took it, as under `mlflow run`
    with pytest.raises(DatasetNotFoundError):
        jobs.train_job(TrainConfig(dataset="mnist", model="mlp"), run_name="trial 3 seed1")
    (run,) = MlflowClient().search_runs(["0"], "attributes.run_name = 'trial 3 seed1'")
    assert run.info.status == "FAILED" and "mnist" in run.data.tags["tc.error"]


def test_a_job_refusal_after_the_run_was_labelled_renames_it(mlflow_store, capsys):
    """The train job names its run from the config before it loads the data: a data set it cannot find is
    still a refusal (nothing trained), and the one run says so."""
    from entrypoints import train as train_ep

    assert train_ep.main(["--dataset", "mnist", "--model", "mlp", "--epochs", "1"]) == 2
    said = _said(capsys, "train")
    assert said.startswith("data set 'mnist' was not found in: ") and "download=true" in said  # 4 lines
    run = _the_refused_run(said)
    assert run.info.run_name.startswith("refused: data set 'mnist' was not found in: ")
    assert run.data.tags["tc.dataset"] == "mnist"  # the job's labels stay: only the name says it was refused


def test_a_failure_is_not_a_refusal():
    """Training that diverged started its work: exit 1, and its run keeps its name (`tc.tracking.jobs`)."""
    from tc.core.train import TrainingFailure
    from tc.tracking.jobs import TRAIN_REFUSALS

    diverged = TrainingFailure("training diverged at step 3")
    assert not refusals.is_refusal(diverged) and refusals.exit_code(diverged) == 1
    assert refusals.error_text(diverged, TRAIN_REFUSALS) == "training diverged at step 3"
    assert refusals.error_text(RuntimeError("boom")) == "RuntimeError: boom"  # a bug says its type
    assert all(refusals.exit_code(e) == 2 for e in (ValueError("v"), LookupError("l")))


def test_a_tracking_store_that_is_down_does_not_hide_the_refusal(mlflow_store, capsys, monkeypatch):
    from entrypoints import analyze as analyze_ep

    def down(*args, **kwargs):
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(refusals.mlflow, "start_run", down)
    assert analyze_ep.main([]) == 2
    first, second = capsys.readouterr().err.strip().splitlines()
    assert first.startswith("tc analyze: run_id is required")
    assert "not recorded in MLflow: ConnectionError: tracking server unreachable" in second


def test_the_cache_command_creates_no_run(mlflow_store, capsys):
    """`python -m tc.tracking.cache` is no MLproject entry point (`mlflow run` would create an empty run at each
    use), and creates no run; its parameters are checked by its config."""
    import yaml

    from tc.tracking import cache

    assert "cache" not in yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    assert cache.main(["prune", "--max-gb", "5"]) == 0
    assert cache.main(["prune", "--max-gb", "-1"]) == 2
    assert "max_gb=-1.0 is out of range" in capsys.readouterr().err
    assert MlflowClient().search_runs(["0"]) == []


@pytest.mark.slow  # 10-17 s of `mlflow run`; in process: tests/test_sweep.py, and the record of `mlflow run`'s run:
# test_under_mlflow_run_the_refusal_is_recorded_in_the_run_it_created, tests/test_mlflow_run.py (the fast suite ~10 min)
def test_an_oversized_train_size_through_mlflow_run_creates_no_study_or_trial_and_one_refused_run(
    mlflow_store, tmp_path
):
    """docs/sweep.md's promise, through `mlflow run` (which exits 1 whenever its command exits non-zero: the
    command itself exits 2; MLflow keeps the run's name and tags)."""
    space = tmp_path / "space.json"
    space.write_text('{"train_size": {"type": "categorical", "choices": [500, 2000]}}')
    journal = tmp_path / "j.log"
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "-e", "sweep"]
    cmd += ["-P", f"search_space={space}", "-P", f"storage={journal}", "-P", "dataset=digits"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 1, proc.stderr[-3000:]
    said = f"{space}: train_size [2000] exceeds the 1438 training examples of digits; use values <= 1438 (0 = the "
    said += "whole training set)"
    assert f"tc sweep: {said}" in proc.stderr
    _the_refused_run(said)
    assert not journal.exists()  # the study's storage was never opened: no study, so no trial either


@pytest.mark.parametrize("entry", ["train", "analyze", "sweep", "main", "report"])
def test_help_prints_and_exits_0_and_creates_no_run(mlflow_store, capsys, entry):
    """`--help` is no refusal: argparse prints the parameters and exits 0 (a `%` in a help string, as train's
    `schedule` has, once made it a TypeError)."""
    command = importlib.import_module(f"entrypoints.{entry}")
    with pytest.raises(SystemExit) as done:
        command.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and ("--quick" if entry == "report" else "--seed") in out
    if entry == "train":
        assert "x0.1 at 50% and 75%" in " ".join(out.split())  # argparse wraps the lines
    assert MlflowClient().search_runs(["0"]) == []


def test_the_quick_start_refuses_a_train_size_above_its_data_before_any_run(mlflow_store, capsys, monkeypatch):
    """A train_size the data set cannot give is refused with the rest, before the quick start's run: one run,
    not a `quick start` run with a refused child (digits stands in for Fashion-MNIST: 1438 training examples)."""
    from entrypoints import main as quick

    def no_job(*a, **k):
        raise AssertionError("an oversized train_size reached the train job")

    monkeypatch.setattr(quick, "DATASET", "digits")
    monkeypatch.setattr(quick, "train_job", no_job)
    assert quick.main(["--train_size", "5000"]) == 2
    said = _said(capsys, "main")
    assert said == "train_size=5000 exceeds the 1438 training examples of digits"
    _the_refused_run(said)
