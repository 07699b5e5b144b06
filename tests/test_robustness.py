"""Issue 12: nothing lost, nothing mixed. Atomic, versioned analysis write-back; sweeps that restart and
scale (distinct parameters, dead workers' trials failed); refusals that touch nothing; kill -9 leaves no
temporary files; messages; two writers; the cache. Kill tests use real subprocesses and SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from entrypoints import analyze as analyze_ep
from entrypoints import sweep as sweep_ep
from entrypoints import train as train_ep
from tc.config import AnalyzeConfig
from tc.core import checkpoints as ck
from tc.sweep import budget
from tc.sweep import study as studies
from tc.sweep.budget import counts_toward_budget
from tc.sweep.space import check_space_values
from tc.sweep.study import open_storage
from tc.tracking import analyses, cache, checkpoints, resume, writers
from tests.conftest import ROOT

TINY = ["--dataset", "digits", "--model", "mlp", "--width", "16", "--epochs", "2", "--batch_size", "256"]
TINY += ["--train_size", "600"]


def _train(*extra) -> str:
    assert train_ep.main([*TINY, *extra]) == 0
    return MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])[0].info.run_id


def _new_run(status: str | None = None) -> str:
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    if status:
        c.set_terminated(run_id, status)
    return run_id


def _artifact_root(run_id) -> Path:
    return Path(MlflowClient().get_run(run_id).info.artifact_uri.removeprefix("file://"))


# ---- items 3 and 4: the analysis write-back ------------------------------------------------------------


def _analysis(tmp: Path, tag: str, files: list[str], metrics: dict[str, float]) -> tuple[Path, dict]:
    """A fake analysis: files holding `tag`, and a summary.json listing the metrics (as write_outputs does)."""
    d = tmp / tag
    d.mkdir()
    for f in files:
        (d / f).write_text(tag)
    (d / "summary.json").write_text(json.dumps({"metrics": metrics, "tag": tag}))
    return d, metrics


def _current(run_id: str, tmp: Path) -> tuple[dict, dict[str, float]]:
    """What a reader sees: the current analysis's summary.json, and the run's latest metric values."""
    where = analyses.analysis_dir(run_id) if hasattr(analyses, "analysis_dir") else "analysis"
    summary = json.loads(Path(MlflowClient().download_artifacts(run_id, f"{where}/summary.json", str(tmp))).read_text())
    return summary, MlflowClient().get_run(run_id).data.metrics


KILL_AT_UPLOAD = """
import os, signal, sys, json
from pathlib import Path
from mlflow.tracking import MlflowClient
from tc.tracking import analyses, checkpoints, resume, writers
real = MlflowClient.log_artifacts
def killed_after_upload(self, run_id, local_dir, artifact_path=None):
    real(self, run_id, local_dir, artifact_path)
    os.kill(os.getpid(), signal.SIGKILL)  # the files are stored; nothing after them happens
MlflowClient.log_artifacts = killed_after_upload
real_batch = MlflowClient.log_batch
def killed_after_first_batch(self, *a, **k):  # the old code logs metrics first: let them land, then die
    real_batch(self, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
MlflowClient.log_batch = killed_after_first_batch
run_id, local = sys.argv[1], Path(sys.argv[2])
metrics = json.loads((local / "summary.json").read_text())["metrics"]
analyses.log_analysis(run_id, local, metrics, 10, {"name": "B"})
"""


def test_analysis_killed_mid_write_leaves_the_previous_one_whole(mlflow_store, tmp_path):
    """A SIGKILL during the write-back of analysis B (after its files are stored, and after the first
    log_batch) leaves analysis A visible whole: A's metrics, A's summary. A clean analysis C then shows
    only C: B's metrics never appear, A's metrics that C lacks are NaN, and no file of A or B is in C's dir."""
    run_id = _new_run("FINISHED")
    a_dir, a = _analysis(tmp_path, "A", ["fig_a.png", "table.csv"], {"m1": 1.0, "m2": 2.0})
    analyses.log_analysis(run_id, a_dir, a, 10, {"name": "A"})
    b_dir, _ = _analysis(tmp_path, "B", ["table.csv"], {"m1": 10.0, "m2": 20.0, "only_b": 5.0})
    proc = subprocess.run([sys.executable, "-c", KILL_AT_UPLOAD, run_id, str(b_dir)], env=os.environ, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    summary, metrics = _current(run_id, tmp_path / "r1")
    assert summary["tag"] == "A" and metrics == {"m1": 1.0, "m2": 2.0}  # A, whole; nothing of B

    c_dir, c = _analysis(tmp_path, "C", ["table.csv"], {"m1": 100.0})
    analyses.log_analysis(run_id, c_dir, c, 10, {"name": "C"})
    summary, metrics = _current(run_id, tmp_path / "r2")
    assert summary["tag"] == "C" and metrics["m1"] == 100.0 and math.isnan(metrics["m2"])
    assert "only_b" not in metrics
    where = analyses.analysis_dir(run_id)
    assert {Path(f.path).name for f in MlflowClient().list_artifacts(run_id, where)} == {"table.csv", "summary.json"}
    local = Path(MlflowClient().download_artifacts(run_id, where, str(tmp_path / "r3")))
    assert all(p.read_text() != "A" and p.read_text() != "B" for p in local.glob("*.csv"))
    assert json.loads(MlflowClient().get_run(run_id).data.tags["tc.analysis"])["name"] == "C"


def test_reanalysis_replaces_the_files_and_older_versions_are_removed(mlflow_store, tmp_path):
    """Item 4: figures of an earlier analysis do not stay beside the new one; the version before is kept
    (for a reader that looked the pointer up just before the switch), older ones are deleted."""
    run_id = _new_run("FINISHED")
    for i, files in enumerate((["aniso.png", "heat.png"], ["heat.png"], ["lag.png"])):
        d, m = _analysis(tmp_path, f"v{i}", files, {"m": float(i)})
        assert analyses.log_analysis(run_id, d, m, 5, {}) == i + 1
    assert analyses.analysis_dir(run_id) == "analysis/v3"
    names = {f.path for f in MlflowClient().list_artifacts(run_id, "analysis/v3")}
    assert names == {"analysis/v3/lag.png", "analysis/v3/summary.json"}
    assert {f.path for f in MlflowClient().list_artifacts(run_id, "analysis")} == {"analysis/v2", "analysis/v3"}


def test_the_version_pointer_goes_last_after_the_files_and_metrics(mlflow_store, tmp_path, monkeypatch):
    """Files, then a marker that the metrics are in transition, then the metrics, then the pointer (issue 19
    item 7: tests/test_writeback.py checks a reader at every store call, past 1,000 metrics)."""
    run_id = _new_run("FINISHED")
    d, m = _analysis(tmp_path, "A", ["x.csv"], {"m1": 1.0, "m2": 2.0})
    analyses.log_analysis(run_id, d, m, 3, {})
    calls = []
    real_batch, real_upload = MlflowClient.log_batch, MlflowClient.log_artifacts
    monkeypatch.setattr(
        MlflowClient, "log_batch", lambda self, *a, **k: calls.append(("batch", k)) or real_batch(self, *a, **k)
    )
    monkeypatch.setattr(
        MlflowClient, "log_artifacts", lambda self, *a, **k: calls.append(("files", a)) or real_upload(self, *a, **k)
    )
    monkeypatch.setattr(MlflowClient, "set_tag", lambda *a, **k: pytest.fail("a tag outside the batch"))
    monkeypatch.setattr(MlflowClient, "log_metric", lambda *a, **k: pytest.fail("a metric outside the batch"))
    d, m = _analysis(tmp_path, "B", ["x.csv"], {"m1": 5.0})
    analyses.log_analysis(run_id, d, m, 3, {})
    assert [c[0] for c in calls] == ["files", "batch", "batch", "batch"]
    marker, values, pointer = (c[1] for c in calls[1:])
    assert [t.key for t in marker["tags"]] == ["tc.analysis_writing"] and not marker.get("metrics")
    assert {x.key for x in values["metrics"]} == {"m1", "m2"}  # the new one, and NaN for the old one
    assert {t.key: t.value for t in pointer["tags"]}["tc.analysis_version"] == "2" and not pointer.get("metrics")


# ---- item 5: unfinished runs ---------------------------------------------------------------------------


def test_analyze_refuses_an_unfinished_run_unless_allowed(mlflow_store, capsys):
    run_id = _train()
    MlflowClient().set_terminated(run_id, "FAILED")
    argv = ["--run_id", run_id, "--max_samples", "40", "--splits", "test", "--anisotropy", "false"]
    argv += ["--measures", "false", "--matrix", "final"]
    assert analyze_ep.main(argv) == 2  # refused
    err = capsys.readouterr().err
    assert "FAILED, not FINISHED" in err and "allow_unfinished=true" in err
    assert "tc.analysis" not in MlflowClient().get_run(run_id).data.tags  # nothing logged to it
    assert analyze_ep.main([*argv, "--allow_unfinished", "true"]) == 0
    tags = MlflowClient().get_run(run_id).data.tags
    assert tags["tc.analysis_allow_unfinished"] == "true" and tags["tc.analysis_run_status"] == "FAILED"
    assert tags["tc.analysis_last_step"] == "6"  # 600 examples / 256 per step = 3 steps per epoch, 2 epochs


# ---- item 7: a checkpoint missing from the store -------------------------------------------------------


def test_missing_checkpoint_artifact_is_one_message_and_a_tag(mlflow_store, capsys, cache_dir):
    run_id = _train()
    (_artifact_root(run_id) / "checkpoints" / ck.filename(3)).unlink()
    for f in (cache_dir / "checkpoints" / run_id).glob("*"):
        f.unlink()
    assert analyze_ep.main(["--run_id", run_id, "--max_samples", "40"]) == 2  # refused
    err = capsys.readouterr().err
    assert "checkpoints/step_00000003.pt is listed in index.json but missing from the artifact store" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    (analysis_run,) = MlflowClient().search_runs(["0"], "tags.`tc.source_run_id` != ''")
    assert "missing from the artifact store" in analysis_run.data.tags["tc.error"]
    assert analysis_run.info.status == "FAILED"


# ---- items 8 and 11: refusals touch nothing; two writers -----------------------------------------------


def test_refusing_to_resume_a_finished_run_does_not_touch_it(mlflow_store, capsys):
    run_id = _new_run("FINISHED")
    before = MlflowClient().get_run(run_id)
    assert train_ep.main(["--resume_run_id", run_id]) == 2  # refused
    assert "already FINISHED" in capsys.readouterr().err
    after = MlflowClient().get_run(run_id)
    assert after.data.tags == before.data.tags and after.info.status == "FINISHED"
    assert after.info.end_time == before.info.end_time


def _popen_train(tmp_path, *extra) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "PYTHONPATH": str(ROOT)}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    cmd = [sys.executable, str(ROOT / "entrypoints" / "train.py"), *TINY, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)


def _wait_for_checkpoint(proc, step: int, timeout=120) -> str:
    """The run id of the training subprocess, once checkpoint `step` and its resume state are stored."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        runs = MlflowClient().search_runs(["0"])
        for r in runs:
            root = _artifact_root(r.info.run_id)
            if (root / "checkpoints" / ck.filename(step)).is_file() and (root / "resume" / "state.pt").is_file():
                return r.info.run_id
        time.sleep(0.2)
    raise AssertionError("no checkpoint in time")


def test_resume_is_refused_while_the_writer_lives_and_the_run_is_untouched(mlflow_store, capsys, monkeypatch):
    """Item 11, in process: the writer is this very process (alive), or a process on another host that
    logged recently; a dead writer on this host does not block."""
    c = MlflowClient()
    run_id = _new_run()
    writers.claim_run(run_id)
    before = c.get_run(run_id)
    assert train_ep.main(["--resume_run_id", run_id]) == 2  # refused
    assert f"process {os.getpid()}" in capsys.readouterr().err
    after = c.get_run(run_id)
    assert after.data.tags == before.data.tags and after.info.status == "RUNNING"
    c.set_tag(run_id, writers.WRITER_TAG, json.dumps({"host": "elsewhere", "pid": 1, "start": "1"}))
    assert "another host" in writers.live_writer(c.get_run(run_id))
    monkeypatch.setattr(writers, "WRITER_LEASE_S", 0.0)
    assert writers.live_writer(c.get_run(run_id)) is None  # its heartbeat is older than the lease
    c.set_tag(run_id, writers.WRITER_TAG, json.dumps(_sleeper_identity()))
    assert writers.live_writer(c.get_run(run_id)) is None


def test_staging_dirs_of_dead_writers_are_cleaned_and_the_resume_state_goes_at_the_end(mlflow_store, cache_dir):
    """Items 9 and 12 in process: files wait in the cache (not /tmp); a dead writer's dir is removed by the
    next start, a live one's is not; a finished run has no resume state left."""
    dead, live = cache_dir / "staging" / "dead-run", cache_dir / "staging" / "live-run"
    for d, who in ((dead, _sleeper_identity()), (live, writers.writer_identity())):
        d.mkdir(parents=True, exist_ok=True)
        (d / writers.WRITER_FILE).write_text(json.dumps(who))
    run_id = _train()
    assert not dead.exists() and live.is_dir()
    assert not (cache_dir / "staging" / run_id).exists()
    assert "resume" not in {f.path for f in MlflowClient().list_artifacts(run_id)}
    assert "checkpoints" in {f.path for f in MlflowClient().list_artifacts(run_id)}


@pytest.mark.slow
def test_kill_9_train_live_writer_refused_then_resumed_without_leftovers(mlflow_store, tmp_path, capsys, cache_dir):
    """Item 11: a RUNNING run whose writer process is alive is not resumed (and is not touched). Item 9: a
    kill -9 leaves no /tmp/tc-ckpt-* dir; its staging dir in the cache is removed by the next start. Item 12:
    the resume state is deleted when the run finishes. Item 10: the resuming run says whose config it used."""
    proc = _popen_train(tmp_path, "--epochs", "400", "--checkpoint_every", "1")
    try:
        run_id = _wait_for_checkpoint(proc, 2)
        before = MlflowClient().get_run(run_id).data.tags
        assert train_ep.main(["--resume_run_id", run_id]) == 2  # refused
        assert "has a live writer" in capsys.readouterr().err
        tags = MlflowClient().get_run(run_id).data.tags
        assert "tc.error" not in tags and tags.get("tc.writer") == before.get("tc.writer")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list((tmp_path / "tmp").glob("tc-ckpt-*")) == []
    assert (cache_dir / "staging" / run_id).is_dir()  # left by the kill, in the run's own place ...

    proc2 = _popen_train(tmp_path, "--epochs", "20", "--checkpoint_every", "1", "--seed", "1")
    try:
        run2 = _wait_for_checkpoint_of_new_run(proc2, exclude={run_id})
    finally:
        proc2.send_signal(signal.SIGKILL)
        proc2.wait()
    assert not (cache_dir / "staging" / run_id).exists()  # ... which the next start of train removed
    assert (cache_dir / "staging" / run2).is_dir()
    assert train_ep.main(["--resume_run_id", run2, "--epochs", "3"]) == 0  # epochs ignored: the run's own config
    resuming = MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])[0].data.tags
    assert MlflowClient().get_run(run2).info.status == "FINISHED"
    assert max(m.step for m in MlflowClient().get_metric_history(run2, "epoch")) == 60  # 20 epochs x 3 steps
    assert not (cache_dir / "staging" / run2).exists()
    assert "resume" not in {f.path for f in MlflowClient().list_artifacts(run2)}  # item 12: deleted at the end
    assert resuming["tc.resumed_run_id"] == run2
    assert f"Resumes training run {run2}" in resuming["mlflow.note.content"]
    assert list((tmp_path / "tmp").glob("tc-ckpt-*")) == []


def _wait_for_checkpoint_of_new_run(proc, exclude: set, timeout=120) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        for r in MlflowClient().search_runs(["0"]):
            if r.info.run_id in exclude:
                continue
            root = _artifact_root(r.info.run_id)
            if (root / "checkpoints" / ck.filename(2)).is_file() and (root / "resume" / "state.pt").is_file():
                return r.info.run_id
        time.sleep(0.1)
    raise AssertionError("no checkpoint in time")


# ---- item 10: messages ---------------------------------------------------------------------------------


def test_checkpoints_every_abc_names_the_parameter():
    with pytest.raises(ValueError, match=r"checkpoints='every:abc' is not valid: need an integer >= 1"):
        AnalyzeConfig(run_id="x", checkpoints="every:abc")
    with pytest.raises(ValueError, match=r"checkpoints='1,x'"):
        AnalyzeConfig(run_id="x", checkpoints="1,x")
    AnalyzeConfig(run_id="x", checkpoints="every:2")
    AnalyzeConfig(run_id="x", checkpoints="0, 3")


def test_garbage_index_names_the_file(mlflow_store, tmp_path):
    run_id = _new_run()
    (tmp_path / "index.json").write_text("{not json")
    MlflowClient().log_artifact(run_id, str(tmp_path / "index.json"), "checkpoints")
    with pytest.raises(ck.CheckpointError, match=rf"run {run_id}: checkpoints/index.json .*not valid JSON"):
        checkpoints.download_checkpoints(run_id, tmp_path / "cache")


def test_truncated_resume_state_is_named_as_the_artifact(mlflow_store, tmp_path):
    run_id = _new_run()
    torch.save({"step": 3, "x": torch.zeros(1000)}, tmp_path / "state.pt")
    (tmp_path / "state.pt").write_bytes((tmp_path / "state.pt").read_bytes()[:300])
    MlflowClient().log_artifact(run_id, str(tmp_path / "state.pt"), "resume")
    with pytest.raises(ck.CheckpointError) as e:
        resume.load_resume_state(run_id)
    assert f"run {run_id}: resume/state.pt" in str(e.value) and "truncated or corrupted" in str(e.value)
    assert "/tmp" not in str(e.value) and "tmp" not in str(e.value).split("resume/state.pt", 1)[1][:5]


# ---- item 12: the cache --------------------------------------------------------------------------------


def test_cache_prune_deletes_least_recently_used_runs_to_the_cap(tmp_path, monkeypatch, cache_dir):
    root = tmp_path / "c" / "checkpoints"
    for i, name in enumerate(("old", "mid", "new")):
        d = root / name
        d.mkdir(parents=True)
        (d / "step_00000000.pt").write_bytes(b"x" * 1000)
        os.utime(d / "step_00000000.pt", (1000 + i, 1000 + i))
        os.utime(d, (1000 + i, 1000 + i))
    assert cache.prune(root, 2000) == [root / "old"]
    assert sorted(p.name for p in root.iterdir()) == ["mid", "new"]
    env = {**os.environ, "TC_CACHE_DIR": str(tmp_path / "c"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "tc.tracking.cache", "prune", "--max-gb", "0.0000015"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "deleted 1 run dir(s)" in out.stdout and [p.name for p in root.iterdir()] == ["new"]


def test_env_cap_prunes_other_runs_after_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TC_CACHE_DIR", str(tmp_path))
    for name in ("a", "b", "current"):
        (cache.checkpoint_root() / name).mkdir(parents=True)
        (cache.checkpoint_root() / name / "step_00000000.pt").write_bytes(b"x" * 1000)
    assert cache.apply_env_cap(("current",)) == []  # no cap set: nothing happens
    monkeypatch.setenv("TC_CACHE_MAX_GB", "0.0000015")
    cache.apply_env_cap(("current",))
    assert "current" in [p.name for p in cache.checkpoint_root().iterdir()]
    assert len(list(cache.checkpoint_root().iterdir())) == 1  # the current run is kept, even over the cap
    monkeypatch.setenv("TC_CACHE_MAX_GB", "lots")
    with pytest.raises(ValueError, match="TC_CACHE_MAX_GB='lots'"):
        cache.apply_env_cap(())


# ---- item 6: the search space against TrainConfig ------------------------------------------------------


@pytest.mark.parametrize(
    "space, words",
    [
        ({"label_noise": {"type": "float", "low": 1.2, "high": 1.5}}, "label_noise=1.2 is not a valid training value"),
        ({"lr": {"type": "float", "low": "abc", "high": 0.1}}, "lr.low must be a number, got 'abc'"),
        ({"batch_size": {"type": "categorical", "choices": [64, -1]}}, "batch_size=-1 is not a valid"),
        ({"width": {"type": "int", "low": 4.5, "high": 8}}, "width.low must be an integer"),
    ],
)
def test_bad_search_space_values_exit_2_before_any_trial(mlflow_store, tmp_path, capsys, space, words):
    (tmp_path / "s.json").write_text(json.dumps(space))
    argv = ["--search_space", str(tmp_path / "s.json"), "--storage", str(tmp_path / "j.log"), "--dataset", "digits"]
    assert sweep_ep.main([*argv, "--model", "mlp", "--n_trials", "1"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    (run,) = MlflowClient().search_runs(["0"])  # no trial: the one run is the refusal's (tc.tracking.refusals)
    assert run.info.run_name.startswith("refused: ") and words in run.data.tags["tc.error"]
    assert not (tmp_path / "j.log").exists()
    check_space_values({"lr": {"type": "float", "low": 0.01, "high": 0.5}}, {"dataset": "digits", "model": "mlp"})


# ---- items 1 and 2: sweeps that restart and scale ------------------------------------------------------

SPACE = {
    "lr": {"type": "float", "low": 0.01, "high": 0.4, "log": True},
    "width": {"type": "categorical", "choices": [8, 16, 32]},
}


def _draw(study, k):
    params = []

    def objective(t):
        params.append((t.number, t.suggest_float("lr", 0.01, 0.4, log=True), t.suggest_categorical("width", [8, 16])))
        return params[-1][1]

    for _ in range(k):  # one trial per optimize call, as tc.sweep.study.run_worker does
        study.optimize(objective, n_trials=1)
    return params


@pytest.mark.parametrize("sampler", ["qmc", "tpe", "random", "grid"])
def test_restarted_and_parallel_workers_draw_distinct_parameters(tmp_path, sampler):
    """Each 'process' gets a fresh sampler with the same seed (a restart, or a second worker)."""
    storage = open_storage(str(tmp_path / "j.log"))
    space = {"lr": SPACE["lr"], "width": {"type": "categorical", "choices": [8, 16]}}
    draws = []
    for _ in range(3):  # the first process, its restart, and another worker: each a new sampler, same seed
        sampler_obj = studies.make_sampler(sampler, space, 0)
        study = optuna.create_study(study_name="s", storage=storage, sampler=sampler_obj, load_if_exists=True)
        draws += _draw(study, 2)
    if sampler == "grid":  # 3 lr points x 2 widths = 6 grid points over 6 trials: each exactly once
        assert len({(lr, w) for _, lr, w in draws}) == 6
    else:
        assert len({lr for _, lr, _ in draws}) == 6
    # the bug it replaces: a plain seeded sampler per process repeats its draws after a restart
    plain = []
    for i in range(2):
        s = optuna.create_study(study_name=f"p{i}", storage=storage, sampler=optuna.samplers.TPESampler(seed=0))
        plain += [lr for _, lr, _ in _draw(s, 2)]
    assert len(set(plain)) == 2


def _qmc_counters(study):
    """Optuna's QMC index counters: the study system attrs its QMCSampler reads, then writes."""
    attrs = studies.study_storage(study).get_study_system_attrs(study._study_id)
    return {k: v for k, v in attrs.items() if k.startswith("qmc:")}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # Optuna's own QMCSampler
@pytest.mark.parametrize("claimed", [True, False])
def test_two_workers_that_read_the_qmc_index_at_once_still_draw_distinct_points(tmp_path, claimed):
    """CI, PostgreSQL: two workers restarted together completed two trials with identical parameters.
    Optuna's QMCSampler takes its Sobol index with a read, then a write; a second worker that reads between
    the two takes the same index. The race is replayed exactly by rewinding the counter to what that worker
    read. Optuna's own sampler (claimed=False) repeats the point: the bug; tc's claims the next index."""
    storage = open_storage(str(tmp_path / "j.log"))
    space = {"lr": SPACE["lr"], "width": {"type": "categorical", "choices": [8, 16]}}

    def sampler():  # a fresh sampler per worker, same seed
        if claimed:
            return studies.make_sampler("qmc", space, 0)
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=0, warn_independent_sampling=False)

    study = optuna.create_study(study_name="s", storage=storage, sampler=sampler(), load_if_exists=True)
    draws = _draw(study, 2)  # trial 0 learns the space; trial 1 takes Sobol index 0
    read_by_second_worker = _qmc_counters(study)
    draws += _draw(study, 1)  # worker A: index 1
    for key, value in read_by_second_worker.items():  # worker B read the counter before A wrote it
        studies.study_storage(study).set_study_system_attr(study._study_id, key, value)
    other = optuna.create_study(study_name="s", storage=storage, sampler=sampler(), load_if_exists=True)
    draws += _draw(other, 1)  # worker B
    points = [(lr, w) for _, lr, w in draws]
    if not claimed:
        assert points[3] == points[2]  # the race, reproduced on Optuna's sampler
        return
    assert len(set(points)) == 4
    claims = [
        v for t in study.get_trials() for k, v in t.system_attrs.items() if k.startswith(studies.QMC_CLAIM_PREFIX)
    ]
    assert sorted(claims) == [0, 1, 2]  # trials 1-3 each hold one index (fails if Optuna drops the hook)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # Optuna's own QMCSampler
def test_qmc_claims_name_the_sequence_optuna_counts(tmp_path):
    """Unscrambled, Optuna ignores the seed: samplers with different seeds share one Sobol sequence and one
    index counter, so they must see each other's claims too (same race replay as above)."""
    storage = open_storage(str(tmp_path / "j.log"))

    def sampler(seed):
        return studies.ClaimedQMCSampler(scramble=False, seed=seed, warn_independent_sampling=False)

    study = optuna.create_study(study_name="s", storage=storage, sampler=sampler(0))
    draws = _draw(study, 2)
    read_by_second_worker = _qmc_counters(study)
    draws += _draw(study, 1)
    for key, value in read_by_second_worker.items():
        studies.study_storage(study).set_study_system_attr(study._study_id, key, value)
    draws += _draw(optuna.create_study(study_name="s", storage=storage, sampler=sampler(1), load_if_exists=True), 1)
    assert len({(lr, w) for _, lr, w in draws[1:]}) == 3  # trial 0 is drawn at random, the rest by Sobol
    (counter,) = _qmc_counters(study)
    claim_keys = {k for t in study.get_trials() for k in t.system_attrs if k.startswith(studies.QMC_CLAIM_PREFIX)}
    (claim_key,) = claim_keys  # one sequence, one claim key: Optuna's counter key, shortened
    assert counter.removeprefix("qmc:").startswith(claim_key.removeprefix(studies.QMC_CLAIM_PREFIX))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # Optuna's own QMCSampler
def test_one_qmc_worker_draws_optunas_sequence_point_for_point(tmp_path):
    """Claims change nothing for one worker: the report's single-worker sweeps draw what they drew before."""
    draws = []
    for kind in ("claimed", "optuna"):
        storage = open_storage(str(tmp_path / f"{kind}.log"))
        if kind == "claimed":
            sampler = studies.qmc_sampler(3)
        else:
            sampler = optuna.samplers.QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=3,
                independent_sampler=optuna.samplers.RandomSampler(seed=3),
                warn_independent_sampling=False,
            )
        draws.append(_draw(optuna.create_study(study_name="s", storage=storage, sampler=sampler), 9))
    assert draws[0] == draws[1]


def test_one_worker_on_a_fresh_study_is_reproducible(tmp_path):
    runs = []
    for i in range(2):
        storage = open_storage(str(tmp_path / f"j{i}.log"))
        study = optuna.create_study(study_name="s", storage=storage, sampler=studies.make_sampler("tpe", SPACE, 7))
        runs.append(_draw(study, 4))
    assert runs[0] == runs[1]


def _sleeper_identity():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ident = writers.writer_identity(p.pid)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return ident


@pytest.mark.parametrize("kind", ["journal", "rdb"])
@pytest.mark.parametrize("run_ended", [False, True])
def test_dead_workers_running_trials_are_failed_with_their_runs(mlflow_store, tmp_path, kind, run_ended):
    """run_ended: the worker was killed after its trial's run ended FINISHED but before Optuna recorded the trial
    (found by the PostgreSQL kill test): that run is FAILED too, as its trial does not count."""
    storage = open_storage(str(tmp_path / "j.log") if kind == "journal" else f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    dead_run, parent, live_run = _new_run(), _new_run(), _new_run()
    dead = study.ask()
    dead.suggest_float("lr", 0.01, 0.4)
    dead.set_user_attr(studies.WORKER_ATTR, json.dumps({**_sleeper_identity(), "at": time.time()}))
    dead.set_user_attr("mlflow_run_id", dead_run)
    dead.set_user_attr("tc.sweep_run_id", parent)
    if run_ended:
        MlflowClient().set_terminated(dead_run, "FINISHED")
    live = study.ask()
    live.set_user_attr(studies.WORKER_ATTR, json.dumps(writers.writer_identity()))
    live.set_user_attr("mlflow_run_id", live_run)
    assert budget.budget_used(study) == 2
    assert studies.fail_dead_trials(study) == [dead.number]
    trials = {t.number: t for t in study.get_trials()}
    assert (
        trials[dead.number].state == optuna.trial.TrialState.FAIL
        and "died" in trials[dead.number].user_attrs["tc.stale"]
    )
    assert trials[live.number].state == optuna.trial.TrialState.RUNNING
    for run_id in (dead_run, parent):
        run = MlflowClient().get_run(run_id)
        assert run.info.status == "FAILED" and "died" in run.data.tags["tc.error"]
    assert MlflowClient().get_run(live_run).info.status == "RUNNING"
    if kind == "rdb":  # RetryFailedTrialCallback re-queues the dead trial's parameters once
        (retry,) = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
        assert retry.params == trials[dead.number].params and retry.system_attrs["failed_trial"] == dead.number
        assert budget.budget_used(study) == 2  # the live one and the retry
        time.sleep(0.01)
        picked = study.ask()  # a worker takes the retry: until it writes its own tc.worker, it carries the
        assert picked.number == retry.number  # dead worker's, which must not get it failed again
        assert studies.fail_dead_trials(study) == []
    else:
        assert budget.budget_used(study) == 1  # the dead trial does not count


def test_budget_counts_finished_and_running_but_not_dead_or_surplus_trials():
    assert counts_toward_budget("COMPLETE", {}) and counts_toward_budget("RUNNING", {})
    assert counts_toward_budget("FAIL", {"fail_reason": "diverged"})
    assert not counts_toward_budget("FAIL", {"tc.stale": "died"}) and not counts_toward_budget("FAIL", {})


def test_rdb_storage_has_heartbeats_and_retries_stale_trials(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    assert storage.heartbeat_interval and storage.grace_period
    assert isinstance(storage.get_heartbeat_stale_trial_callback(), optuna.storages.RetryFailedTrialCallback)


# ---- the done-when: two workers, kill -9, restart ------------------------------------------------------


SWEEP = ["dataset=digits", "model=mlp", "epochs=2", "max_samples=40", "bootstrap=100", "anisotropy=false"]
SWEEP += ["target_loss=0", "seeds=1"]  # 2 epochs, one seed: the restart machinery, not the stopping criterion


def _sweep(tmp_path, storage, study, seed=0, n_trials=4):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": SPACE["lr"], "width": SPACE["width"]}))
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "-e", "sweep"]
    for p in [*SWEEP, f"n_trials={n_trials}", f"study_name={study}", f"storage={storage}", f"seed={seed}"]:
        cmd += ["-P", p]
    cmd += ["-P", f"search_space={space}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_group(proc):
    os.killpg(proc.pid, signal.SIGKILL)  # `mlflow run` and the sweep process under it
    proc.wait()


def _restart_after_kill(tmp_path, storage, name, n_trials=4):
    """Two workers with the SAME seed; both killed -9 once the study has a finished trial and a running
    one; then both restarted. The study must end with exactly n_trials distinct COMPLETE trials."""
    store = open_storage(storage)
    workers = [_sweep(tmp_path, storage, name) for _ in range(2)]
    t0 = time.time()
    while time.time() - t0 < 300:
        try:
            trials = optuna.load_study(study_name=name, storage=store).get_trials()
        except KeyError:
            trials = []
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
        if done and running:
            break
        assert all(w.poll() is None for w in workers), workers[0].stdout.read()[-3000:]
        time.sleep(0.3)
    else:
        raise AssertionError("no finished trial in time")
    for w in workers:
        _kill_group(w)
    killed = {
        t.number for t in optuna.load_study(study_name=name, storage=store).get_trials() if t.state.name == "RUNNING"
    }
    assert killed
    workers = [_sweep(tmp_path, storage, name) for _ in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=600)
        assert w.returncode == 0, out[-3000:]
    study = optuna.load_study(study_name=name, storage=store)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == n_trials
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == n_trials  # distinct parameters, though every worker had seed 0
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    for t in study.trials:
        if t.number in killed:  # the killed trials ended FAILED, with their MLflow runs where they had one yet
            assert t.state.name == "FAIL"
            # a worker killed between starting the trial and creating its run leaves a trial with no run
            if "mlflow_run_id" in t.user_attrs:
                assert MlflowClient().get_run(t.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    # and no trial run of the killed workers is left RUNNING, whether or not its trial had recorded it (the
    # killed sweep runs themselves stay RUNNING: nothing outlives a kill -9 to end them)
    exp_ids = [e.experiment_id for e in MlflowClient().search_experiments()]
    running = MlflowClient().search_runs(exp_ids, f"attributes.status = 'RUNNING' and tags.`tc.study` = '{name}'")
    assert not [r for r in running if r.data.tags.get("tc.trial") is not None], [r.info.run_id for r in running]
    for t in complete:
        assert "tc_test" in MlflowClient().get_run(t.user_attrs["mlflow_run_id"]).data.metrics
    return study


@pytest.mark.slow
def test_two_workers_killed_and_restarted_complete_exactly_n_distinct_trials_journal(mlflow_store, tmp_path):
    _restart_after_kill(tmp_path, str(tmp_path / "journal.log"), "kill-study")


@pytest.mark.slow
def test_two_workers_killed_and_restarted_complete_exactly_n_distinct_trials_postgres(mlflow_store, tmp_path):
    url = os.environ.get("TC_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: set TC_TEST_POSTGRES_URL (scripts/start_postgres.sh prints one)")
    name = f"kill-study-{os.getpid()}"
    try:
        _restart_after_kill(tmp_path, url, name)
    finally:
        optuna.delete_study(study_name=name, storage=url)
