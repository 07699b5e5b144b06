"""One path per job (`tc.tracking.jobs`): `train_job` and `analyze_job` called as the sweep's trials and the report
call them, checked against what the train and analyze commands do on the same runs."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from entrypoints import analyze as analyze_ep
from tc.config import AnalyzeConfig, TrainConfig
from tc.core import device as D
from tc.core.train import TrainingFailure
from tc.tracking import analyses, jobs

TINY = TrainConfig(dataset="digits", model="mlp", width=16, epochs=2, batch_size=128, train_size=256)
# a cheap analysis of TINY's runs: its test split, no anisotropy and no baseline measures
CHEAP = {"splits": "test", "max_samples": 40, "anisotropy": False, "measures": False}


def _runs() -> list:
    return MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])


def _tc_metrics(run_id: str) -> dict[str, float]:
    return {k: v for k, v in MlflowClient().get_run(run_id).data.metrics.items() if k.startswith("tc_")}


@pytest.fixture
def trained(mlflow_store) -> str:
    """A FINISHED training run of TINY, trained by the train job in a run of its own."""
    return jobs.train_job(TINY)


def test_the_train_job_in_its_own_run_is_the_train_command(trained):
    run = MlflowClient().get_run(trained)
    assert run.info.status == "FINISHED" and run.info.run_name == "mlp3-w16 digits ep2 n256 seed0"
    assert run.data.params["width"] == "16" and run.data.tags["tc.dataset"] == "digits"
    assert "test accuracy" in run.data.tags["mlflow.note.content"]  # the description after training
    files = {f.path for f in MlflowClient().list_artifacts(trained, "checkpoints")}
    assert {"checkpoints/index.json", "checkpoints/step_00000000.pt", "checkpoints/step_00000004.pt"} <= files
    assert MlflowClient().list_artifacts(trained, "resume") == []  # a finished run keeps no resume state


def test_the_train_job_nests_under_the_active_run_or_trains_into_the_callers_run(mlflow_store):
    """The report: a child run with its tags and name. The sweep: the trial's own run, which it ends itself."""
    with mlflow.start_run() as parent:
        child = jobs.train_job(TINY, tags={"tc.trial": "3"}, run_name="trial 3")
        with mlflow.start_run(nested=True) as trial_run:
            assert jobs.train_job(TINY, run_id=trial_run.info.run_id) == trial_run.info.run_id
            still = MlflowClient().get_run(trial_run.info.run_id)
            assert still.info.status == "RUNNING"  # the caller's run: its analysis and its end are the caller's
            assert "test accuracy" in still.data.tags["mlflow.note.content"] and "test_acc" in still.data.metrics
    run = MlflowClient().get_run(child)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.info.run_name == "trial 3" and run.data.tags["tc.trial"] == "3"  # a caller's name is kept


@pytest.mark.parametrize(
    "error, tag",
    [(TrainingFailure("diverged at epoch 1"), "diverged at epoch 1"), (RuntimeError("boom"), "RuntimeError: boom")],
)
def test_a_train_job_that_fails_ends_its_own_run_failed_and_raises(mlflow_store, monkeypatch, error, tag):
    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(jobs, "train_into_run", fails)
    with pytest.raises(type(error)):
        jobs.train_job(TINY)
    (run,) = _runs()
    assert run.info.status == "FAILED" and run.data.tags["tc.error"] == tag  # a refusal's message, else its type too
    assert run.info.run_name == "mlp3-w16 digits ep2 n256 seed0"  # a failure, not a refusal: its name stays
    with mlflow.start_run() as caller, pytest.raises(type(error)):
        jobs.train_job(TINY, run_id=caller.info.run_id)
    assert "tc.error" not in MlflowClient().get_run(caller.info.run_id).data.tags  # the caller's run: its policy


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing in tc catches a BaseException."""


class _KillAfter:
    """A training callback that dies right after the resume state of step `step` is logged."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, step, epoch, model, state, checkpoint):
        if step == self.step:
            raise _Killed


class _ValueErrorAt(_KillAfter):
    """A callback that raises a ValueError (as torch does on a shape mismatch) at the save of step `step`."""

    def on_save(self, step, epoch, model, state, checkpoint):
        if step == self.step:
            raise ValueError("mat1 and mat2 shapes cannot be multiplied")


def test_a_value_error_once_training_began_is_a_failure_not_a_refusal(mlflow_store):
    """Issue 22's refusal policy names a run `refused: ...` and exits 2 only for a request refused before any
    work. A ValueError after the step-0 checkpoint (a bug, a shape mismatch) is a failure: the run keeps its name,
    `tc.error` says what happened, and the error reaches the caller with its cause (exit 1, a traceback)."""
    with pytest.raises(jobs.FailedDuringTraining) as info:
        jobs.train_job(TINY, callbacks=[_ValueErrorAt(2)])
    assert isinstance(info.value.__cause__, ValueError)
    run = _runs()[0]
    assert run.info.status == "FAILED" and not run.info.run_name.startswith("refused")
    assert run.data.tags["tc.error"].startswith("FailedDuringTraining: ValueError during training: mat1")
    with pytest.raises(ValueError):  # before any work, the same type is still a refusal
        jobs.train_job(TrainConfig(dataset="digits", model="mlp", train_size=100_000))
    assert _runs()[0].info.run_name.startswith("refused: ")


def _killed_run() -> str:
    """A TINY run killed after its step-2 checkpoint and resume state (ended FAILED: resumable)."""
    with pytest.raises(_Killed):
        jobs.train_job(TINY, callbacks=[_KillAfter(2)])
    killed = _runs()[0]
    assert killed.info.status == "FAILED" and "tc.error" not in killed.data.tags  # a kill leaves no words
    return killed.info.run_id


def test_a_resume_that_fails_after_its_checks_ends_both_runs_failed_and_says_why(mlflow_store, tmp_path, capsys):
    """Once the run to resume has passed `check_resumable`, it is the job's target: a refusal of its resume
    state (or any other failure) ends it FAILED with `tc.error`, as the resuming run, and the train command
    exits 2 with the same words (a refusal) or raises (anything else). A refusal renames the resuming run, the
    job's own, `refused: ...`; the resumed run, a real training run, keeps its name."""
    from entrypoints import train as train_ep
    from tc.core import checkpoints as ck
    from tc.tracking import resume

    killed = _killed_run()
    state = resume.load_resume_state(killed)
    ck.atomic_save({**state, "train_seconds": -1.0}, tmp_path / "state.pt")
    MlflowClient().log_artifact(killed, str(tmp_path / "state.pt"), "resume")
    name = MlflowClient().get_run(killed).info.run_name
    assert train_ep.main(["--resume_run_id", killed]) == 2
    said = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("tc train: ")
    assert said == f"run {killed}: resume/state.pt train_seconds '-1.0' is not a time"
    resuming, target = _runs()[0], MlflowClient().get_run(killed)
    assert resuming.data.tags["tc.resumed_run_id"] == killed
    for run in (resuming, target):
        assert run.info.status == "FAILED" and run.data.tags["tc.error"] == said
    assert resuming.info.run_name == f"refused: run {killed}: resume/state.pt train_seconds '-1.0' is not a time"
    assert target.info.run_name == name == "mlp3-w16 digits ep2 n256 seed0"

    ck.atomic_save(state, tmp_path / "state.pt")  # a good state again; now the training itself fails
    MlflowClient().log_artifact(killed, str(tmp_path / "state.pt"), "resume")

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    with pytest.MonkeyPatch.context() as fault, pytest.raises(RuntimeError, match="boom"):
        fault.setattr(jobs, "train_into_run", boom)
        train_ep.main(["--resume_run_id", killed])
    resuming, target = _runs()[0], MlflowClient().get_run(killed)
    for run in (resuming, target):
        assert run.info.status == "FAILED" and run.data.tags["tc.error"] == "RuntimeError: boom"
    assert jobs.train_job(TINY, resume_run_id=killed, command_line_model=TINY.model) == killed  # still resumable
    assert MlflowClient().get_run(killed).info.status == "FINISHED"


def test_the_analyze_job_refuses_an_unfinished_run_as_the_command_line_does(trained, capsys):
    MlflowClient().set_terminated(trained, "FAILED")  # killed: its checkpoints may stop early
    before = MlflowClient().get_run(trained)
    assert analyze_ep.main(["--run_id", trained, "--max_samples", "40"]) == 2
    said = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("tc analyze: ")
    assert said.startswith(f"run {trained} is FAILED, not FINISHED")
    command_run = _runs()[0]
    with mlflow.start_run() as report_run, pytest.raises(ValueError) as refused:  # the report's path
        jobs.analyze_job(AnalyzeConfig(run_id=trained, **CHEAP))
    assert str(refused.value) == said
    (job_run,) = MlflowClient().search_runs(["0"], f"tags.mlflow.parentRunId = '{report_run.info.run_id}'")
    for run in (command_run, job_run):
        assert run.info.status == "FAILED" and run.data.tags["tc.error"] == said
        assert run.data.tags["tc.source_run_id"] == trained and run.info.run_name.startswith("refused: run ")
    with pytest.raises(ValueError, match="not FINISHED"):  # the sweep's path: no run of its own
        jobs.analyze_job(AnalyzeConfig(run_id=trained, **CHEAP), own_run=False)
    assert _tc_metrics(trained) == {} and analyses.analysis_dir(trained) is None  # nothing written back
    after = MlflowClient().get_run(trained)  # the analyzed run: untouched (but for the status this test set)
    assert after.data.tags == before.data.tags and after.info.run_name == before.info.run_name


def test_the_analyze_job_falls_back_from_bf16_as_the_command_line_does(trained, monkeypatch, capsys):
    monkeypatch.setattr(D, "has_native_bf16", lambda: False)
    argv = ["--run_id", trained, "--precision", "bf16", "--splits", "test", "--max_samples", "40"]
    assert analyze_ep.main([*argv, "--anisotropy", "false", "--measures", "false"]) == 0
    command_lines = [line for line in capsys.readouterr().out.splitlines() if "no native bf16" in line]
    command_run = _runs()[0]
    with mlflow.start_run():
        done = jobs.analyze_job(AnalyzeConfig(run_id=trained, precision="bf16", **CHEAP))
    job_lines = [line for line in capsys.readouterr().out.splitlines() if "no native bf16" in line]
    job_run = MlflowClient().get_run(done.analyze_run_id)
    assert len(command_lines) == 1 and job_lines == command_lines  # one line, the same words
    same = ("tc.precision_fallback", "tc.source_run_id", "tc.analysis.precision")
    assert {k: job_run.data.tags[k] for k in same} == {k: command_run.data.tags[k] for k in same}
    assert job_run.data.tags["tc.precision_fallback"] == "bf16->fp32" and done.cfg.precision == "fp32"
    assert json.loads(MlflowClient().get_run(trained).data.tags["tc.analysis"])["precision"] == "fp32"
    assert "bf16_agreement" not in MlflowClient().get_run(trained).data.metrics  # ran as fp32: no bf16 control
    # without a run of its own (a sweep trial) the tag goes on the training run, the one the analysis is logged to
    jobs.analyze_job(AnalyzeConfig(run_id=trained, precision="bf16", **CHEAP), own_run=False)
    assert MlflowClient().get_run(trained).data.tags["tc.precision_fallback"] == "bf16->fp32"


def test_a_sweep_trials_analysis_records_the_sweep_run_and_writes_its_extras_back_whole(mlflow_store):
    """The sweep's path: the trial's own run, still open after its train job (`trained_here`), analyzed with
    no analyze run of its own; metrics computed from the same loaded inputs go into the same write-back."""
    seen = {}

    def extras(cfg, inputs, result):
        seen["steps"] = inputs.checkpoints.steps
        return {"tc_extra": 2.0 * result.metrics["tc_test"], "n_checkpoints": float(len(inputs.checkpoints.steps))}

    with mlflow.start_run() as sweep_run, mlflow.start_run(nested=True) as trial_run:
        rid = jobs.train_job(TINY, run_id=trial_run.info.run_id)
        before = {r.info.run_id for r in _runs()}
        with pytest.raises(ValueError, match="is RUNNING, not FINISHED"):  # the check still holds by default
            jobs.analyze_job(AnalyzeConfig(run_id=rid, **CHEAP), own_run=False)
        done = jobs.analyze_job(
            AnalyzeConfig(run_id=rid, **CHEAP),
            own_run=False,
            recorded_as=sweep_run.info.run_id,
            trained_here=True,
            extra_metrics=extras,
        )
        assert {r.info.run_id for r in _runs()} == before  # no run of its own
    assert done.analyze_run_id is None and seen["steps"] == [0, 2, 4]
    logged = MlflowClient().get_run(rid).data.metrics
    assert logged["tc_extra"] == pytest.approx(2 * logged["tc_test"]) and logged["n_checkpoints"] == 3.0
    where, summary = analyses.current_analysis(rid)  # the version's own summary.json holds them too
    assert where == f"analysis/v{done.version}" and summary["tc_extra"] == logged["tc_extra"]
    tags = MlflowClient().get_run(rid).data.tags
    assert json.loads(tags["tc.analysis"])["analyze_run_id"] == sweep_run.info.run_id
    assert tags["tc.analysis_run_status"] == "RUNNING" and tags["tc.analysis_allow_unfinished"] == "false"
    assert "tc test" in tags["mlflow.note.content"]  # the labels step: the description shows the analysis


def test_the_analyze_jobs_lines_are_the_commands_closing_lines(trained, capsys):
    cheap = ["--splits", "test", "--max_samples", "40", "--anisotropy", "false", "--measures", "false"]
    assert analyze_ep.main(["--run_id", trained, *cheap]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == (
        f"tc analyze: logged to run {trained}; open `mlflow ui` and look under its Metrics and Artifacts > "
        f"{analyses.analysis_dir(trained)}/"
    )
    assert printed[-2].startswith("tc analyze: tc_test ") and printed[-2].endswith("s]")  # tc_train: no train split
    summary = json.loads(Path(MlflowClient().download_artifacts(_runs()[0].info.run_id, "summary.json")).read_text())
    assert summary["metrics"]["tc_test"] == MlflowClient().get_run(trained).data.metrics["tc_test"]


@pytest.mark.slow  # 50 s: the quick start in process, end to end (the fast suite stays near 10 minutes)
def test_the_quick_start_runs_both_jobs_in_its_own_run(mlflow_store, capsys):
    """`mlflow run .` (entry point main): the train and analyze jobs, in process, as children of its run."""
    from entrypoints import main as quick

    assert quick.main(["--epochs", "1", "--train_size", "256", "--width", "4", "--max_samples", "40"]) == 0
    out = capsys.readouterr().out
    (parent,) = [r for r in _runs() if r.info.run_name == "quick start"]
    train_id = parent.data.tags["tc.train_run_id"]
    children = MlflowClient().search_runs(["0"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    (analyze_run,) = [r for r in children if r.info.run_id != train_id]
    assert {r.info.run_id for r in children} == {train_id, analyze_run.info.run_id}
    assert {r.info.status for r in children} == {"FINISHED"} and analyze_run.data.tags["tc.source_run_id"] == train_id
    train = MlflowClient().get_run(train_id)
    assert train.data.params["model"] == "resnet20" and train.data.params["checkpoint_every"] == "1"
    assert parent.data.metrics["tc_test"] == train.data.metrics["tc_test"]
    assert f"tc train: done; run {train_id}" in out and f"tc analyze: logged to run {train_id};" in out
    assert out.index("tc analyze: logged to run") < out.index("=== tc quick start ===")


def test_a_sweep_trials_surrogates_and_seed_spread_land_in_its_analysis_and_summary(mlflow_store):
    """Issue 20: the trial analyzes by the analyze job; its cheap surrogates and its seed spread are part of
    the analysis result, so the training run's current summary.json holds them (not only its metric list),
    and each is the function of the inputs it names."""
    from dataclasses import replace

    from tc.sweep.summary import measure_columns
    from tc.sweep.trial import analyze_trial, seed_spread

    with mlflow.start_run() as sweep_run, mlflow.start_run(nested=True) as trial_run:
        first = jobs.train_job(TINY, run_id=trial_run.info.run_id)  # still RUNNING, as in a sweep
        second = jobs.train_job(replace(TINY, seed=1), tags={"tc.seed_of": first})
        cfg = AnalyzeConfig(run_id=first, reference_run_id=second, **CHEAP)
        analyze_trial(cfg, sweep_run.info.run_id, second)
    _, summary = analyses.current_analysis(first)
    _, other = analyses.current_analysis(second)
    cheap = {k for k in summary if k.startswith("tc_test_cheap_k")}
    assert {"tc_test_cheap_k1_n100", "tc_test_cheap_k1_n100_seconds"} <= cheap  # k2: the window is too short
    spread = seed_spread(summary, other, measure_columns([k for k in summary if not k.endswith("_seed_sd")]))
    assert spread and all(summary[k] == pytest.approx(v) for k, v in spread.items())
    assert summary["tc_test_seed_sd"] == pytest.approx(abs(summary["tc_test"] - other["tc_test"]) / 2**0.5)
    logged = MlflowClient().get_run(first).data.metrics
    assert all(logged[k] == pytest.approx(summary[k]) for k in cheap | set(spread))
    for run_id in (first, second):  # made by the sweep run, as every trial's analysis
        tag = json.loads(MlflowClient().get_run(run_id).data.tags["tc.analysis"])
        assert tag["analyze_run_id"] == sweep_run.info.run_id and tag["run_id"] == run_id


def test_the_analyze_jobs_own_run_carries_its_settings_as_params(trained):
    """In process (the quick start), no MLproject logs the analyze run's params: the job does, so analyses
    compare by their settings in the UI, as the command's runs do."""
    done = jobs.analyze_job(AnalyzeConfig(run_id=trained, **CHEAP))
    params = MlflowClient().get_run(done.analyze_run_id).data.params
    assert params["max_samples"] == "40" and params["splits"] == "test" and params["run_id"] == trained
    assert set(params) == set(AnalyzeConfig.__dataclass_fields__)


def test_two_analyses_with_different_windows_say_so_in_their_tags_and_descriptions(trained):
    """Issue 22: a re-analysis with window=0.3 moved κ more than an lr change did, and only a tag told the two
    apart. The run where the metrics land (the training run) and each analyze run carry the settings that change
    a score as a column (`tc.analysis_settings`, and one tag per setting) and in their descriptions."""
    seen = []
    for window in (0.5, 0.3):
        done = jobs.analyze_job(AnalyzeConfig(run_id=trained, window=window, **CHEAP))
        train, own = MlflowClient().get_run(trained), MlflowClient().get_run(done.analyze_run_id)
        for run in (train, own):
            assert run.data.tags["tc.analysis.window"] == str(window)
            assert (
                run.data.tags["tc.analysis_settings"] == f"window={window} checkpoints=all cuts=stages max_samples=40"
            )
            assert f"`window={window}`" in run.data.tags["mlflow.note.content"]
        seen.append((train.data.tags["tc.analysis_settings"], own.data.tags["mlflow.note.content"]))
    assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1]
