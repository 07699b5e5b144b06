"""The analysis write-back (`tc.tracking.analyses.log_analysis`) at more metrics than one MLflow store call holds.

MLflow's `log_batch` splits a batch into store calls of at most 1,000 entities, and its SQL store commits a
call's metrics and its tags in separate transactions. These tests intercept every store call of a real
sqlite store and, before and after each one, read the run the way a reader does: follow the pointer tag
`tc.analysis_version` to its version and check that what the reader is told it may trust is exactly that
version; then they kill the write at every store call and check that the previous analysis is still whole.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient

from tc.tracking import analyses

POINTER, MARKER = "tc.analysis_version", "tc.analysis_writing"


class Died(BaseException):
    """The write-back's process ends here (no `except Exception` in MLflow or tc catches it)."""


def _new_run() -> str:
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    client.log_batch(run_id, metrics=[])
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _analysis(root: Path, name: str, metrics: dict[str, float]) -> Path:
    d = root / name
    d.mkdir()
    (d / f"table_{name}.csv").write_text(name)
    (d / "summary.json").write_text(json.dumps({"metrics": metrics, "name": name}))
    return d


def _values(prefix: str, n: int, base: float) -> dict[str, float]:
    return {f"{prefix}{i:05d}": base + i / 1e4 for i in range(n)}


class Reader:
    """What a reader sees at one moment, read from the store alone (tags, latest metrics, artifacts)."""

    def __init__(self, run_id: str, versions: dict[str, dict[str, float]]):
        self.run_id, self.versions, self.seen = run_id, versions, []

    def check(self, tmp: Path) -> None:
        run = MlflowClient().get_run(self.run_id)
        pointer = run.data.tags.get(POINTER)
        expected = self.versions[pointer]
        # 1. following the pointer: the version's own files, complete
        where = f"analysis/v{pointer}"
        names = {Path(f.path).name for f in MlflowClient().list_artifacts(self.run_id, where)}
        assert names == {"summary.json", f"table_{expected['__name__']}.csv"}
        local = MlflowClient().download_artifacts(self.run_id, f"{where}/summary.json", str(tmp))
        assert json.loads(Path(local).read_text())["metrics"] == expected["metrics"]
        # 2. the run's latest metrics, whenever no write marker says they are in transition: every value of
        # the version the pointer names, and NaN for what earlier versions logged and this one lacks
        marker = run.data.tags.get(MARKER)
        settled = marker is None or str(json.loads(marker)["version"]) == pointer
        if settled:
            latest = run.data.metrics
            wrong = {k: latest.get(k) for k, v in expected["metrics"].items() if latest.get(k) != v}
            example = list(wrong.items())[:3]
            assert not wrong, f"pointer v{pointer}: {len(wrong)} values of another version, e.g. {example}"
            for k in expected["stale"]:
                assert math.isnan(latest[k]), f"pointer v{pointer}: {k} = {latest[k]}, expected NaN"
        # tc's own reader and predicate say the same
        assert analyses.current_analysis(self.run_id) == (where, expected["metrics"])
        assert analyses.analysis_metrics_settled(run.info.run_id) == settled
        self.seen.append((pointer, settled))


@pytest.fixture
def store_calls(monkeypatch):
    """Run a callback after every store-level log_batch (the state before a call is the state after the one
    before it); `die_after` ends the write after call k (0-based)."""
    state = {"calls": [], "hook": None, "die_after": None}
    real = SqlAlchemyStore.log_batch

    def log_batch(self, run_id, metrics, params, tags):
        real(self, run_id, metrics, params, tags)
        state["calls"].append((len(metrics), [t.key for t in tags]))
        if state["hook"]:
            state["hook"]()
        if state["die_after"] is not None and len(state["calls"]) > state["die_after"]:
            raise Died("the analysis died here")

    monkeypatch.setattr(SqlAlchemyStore, "log_batch", log_batch)
    return state


def _setup(tmp_path: Path) -> tuple[str, Reader, dict, dict]:
    """A run whose current analysis v1 (A) logged 1,100 metrics; B (2,300 metrics, 1,000 of them keys A
    also has, without A's key `only_a`) is the one about to be written."""
    run_id = _new_run()
    a = {**_values("m", 1100, 1.0), "only_a": 7.0}
    b = {**_values("m", 1000, 2.0), **_values("n", 1300, 3.0)}
    analyses.log_analysis(run_id, _analysis(tmp_path, "A", a), a, 10, {"name": "A"})
    versions = {"1": {"__name__": "A", "metrics": a, "stale": set()}}
    versions["2"] = {"__name__": "B", "metrics": b, "stale": set(a) - set(b)}
    return run_id, Reader(run_id, versions), a, b


def test_a_reader_following_the_pointer_sees_one_whole_version_at_every_store_call(mlflow_store, tmp_path, store_calls):
    run_id, reader, _, b = _setup(tmp_path)
    n = iter(range(10**6))
    store_calls["hook"] = lambda: reader.check(tmp_path / f"read{next(n)}")
    store_calls["calls"].clear()
    reader.check(tmp_path / "before")
    assert analyses.log_analysis(run_id, _analysis(tmp_path, "B", b), b, 20, {"name": "B"}) == 2
    # more than one store call of metrics, each within MLflow's limit; the pointer only in the last call
    metric_calls = [c for c in store_calls["calls"] if c[0]]
    assert len(metric_calls) >= 3 and all(k <= 1000 for k, _ in metric_calls)
    pointer_call = next(i for i, (_, tags) in enumerate(store_calls["calls"]) if POINTER in tags)
    assert pointer_call == len(store_calls["calls"]) - 1
    # the reader saw the old version, then (with metrics in transition) the old pointer, then the new one
    assert ("1", True) in reader.seen and ("1", False) in reader.seen and reader.seen[-1] == ("2", True)
    assert [p for p, _ in reader.seen] == sorted(p for p, _ in reader.seen)  # never back to an old pointer
    final = MlflowClient().get_run(run_id)
    assert MARKER not in final.data.tags  # removed once the pointer names the version
    assert json.loads(final.data.tags["tc.analysis"])["name"] == "B"


@pytest.mark.parametrize("die_after", [0, 2, 4])
def test_a_write_that_dies_midway_leaves_the_previous_version_whole(mlflow_store, tmp_path, store_calls, die_after):
    """Killed after store call k (0: the marker; 1-3: metric chunks; 4: the pointer): the pointer still names
    a complete version (the old one until the pointer call), and the next analysis C shows only C: B's values
    that reached the store are NaN where C lacks them, even though B logged at a later step than C."""
    run_id, reader, a, b = _setup(tmp_path)
    store_calls["calls"].clear()
    store_calls["die_after"] = die_after
    with pytest.raises(Died):
        analyses.log_analysis(run_id, _analysis(tmp_path, "B", b), b, 20, {"name": "B"})
    store_calls["die_after"] = None
    reader.check(tmp_path / "after")
    pointer = MlflowClient().get_run(run_id).data.tags[POINTER]
    assert pointer == ("2" if die_after == 4 else "1")

    c = {"m00000": 5.0, "c_only": 6.0}
    assert analyses.log_analysis(run_id, _analysis(tmp_path, "C", c), c, 5, {"name": "C"}) == 3
    run = MlflowClient().get_run(run_id)
    assert analyses.analysis_metrics_settled(run.info.run_id) and MARKER not in run.data.tags
    assert analyses.current_analysis(run_id) == ("analysis/v3", c)
    latest = run.data.metrics
    assert {k: latest[k] for k in c} == c
    others = {k: v for k, v in latest.items() if k not in c}
    assert set(others) >= set(a) - set(c) and all(math.isnan(v) for v in others.values()), {
        k: v for k, v in others.items() if not math.isnan(v)
    }
    # the died version's dir is gone; the previous pointed one is kept for a reader mid-switch
    kept = {Path(f.path).name for f in MlflowClient().list_artifacts(run_id, "analysis")}
    assert kept == {"v3", f"v{pointer}"}


KILL_MIDWAY = """
import os, signal, sys, json
from pathlib import Path
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from tc.tracking import analyses
real, calls = SqlAlchemyStore.log_batch, []
def log_batch(self, *a, **k):
    real(self, *a, **k)
    calls.append(1)
    if len(calls) == 2:  # the marker and a first chunk of metrics are stored: die without any cleanup
        os.kill(os.getpid(), signal.SIGKILL)
SqlAlchemyStore.log_batch = log_batch
run_id, local = sys.argv[1], Path(sys.argv[2])
metrics = json.loads((local / "summary.json").read_text())["metrics"]
analyses.log_analysis(run_id, local, metrics, 20, {"name": "B"})
"""


def test_sigkill_mid_write_leaves_the_old_pointer_on_a_whole_version(mlflow_store, tmp_path):
    run_id, reader, _, b = _setup(tmp_path)
    b_dir = _analysis(tmp_path, "B", b)
    proc = subprocess.run([sys.executable, "-c", KILL_MIDWAY, run_id, str(b_dir)], env=os.environ, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    run = MlflowClient().get_run(run_id)
    assert run.data.tags[POINTER] == "1" and not analyses.analysis_metrics_settled(run.info.run_id)
    assert any(v == b[k] for k, v in run.data.metrics.items() if k in b)  # B's values did reach the store
    reader.check(tmp_path / "after")  # and yet the pointer leads to A, whole


def _orphan(run_id: str, tmp_path: Path, version: int, summary: str) -> None:
    """A dir `analysis/v<version>` no pointer names, whose summary.json reads `summary`."""
    d = tmp_path / f"orphan{version}"
    d.mkdir()
    (d / "summary.json").write_text(summary)
    MlflowClient().log_artifacts(run_id, str(d), f"analysis/v{version}")


@pytest.mark.parametrize(
    "summary", ['{"metrics": {"m00001": 1.', "[1, 2]", '{"metrics": [1]}', '{"metrics": {"x": true}}']
)
def test_an_orphan_whose_summary_is_unreadable_is_skipped(mlflow_store, tmp_path, summary):
    """A write-back that died before its marker (truncated summary, or a dir no analysis of tc's wrote) logged
    no metric: the next analysis skips it instead of crashing after an hour of work."""
    run_id, _, _, _ = _setup(tmp_path)
    _orphan(run_id, tmp_path, 2, summary)
    c = {"m00000": 5.0}
    analyses.check_previous_analysis(run_id)
    assert analyses.log_analysis(run_id, _analysis(tmp_path, "C", c), c, 5, {"name": "C"}) == 3
    assert analyses.current_analysis(run_id) == ("analysis/v3", c)
    latest = MlflowClient().get_run(run_id).data.metrics
    assert latest["m00000"] == 5.0 and math.isnan(latest["only_a"])


@pytest.mark.parametrize(
    "summary", ['{"metrics": {"m": 1.', "[1, 2]", '{"metrics": {"m": "1"}}', '{"metrics": {"m": false}}']
)
def test_a_pointed_summary_that_is_not_one_is_refused_naming_it(mlflow_store, tmp_path, summary):
    run_id = _new_run()
    _orphan(run_id, tmp_path, 1, summary)
    MlflowClient().set_tag(run_id, POINTER, "1")
    for read in (analyses.current_analysis, analyses.previous_analysis_metrics, analyses.check_previous_analysis):
        with pytest.raises(ValueError, match=r"analysis/v1/summary\.json is not an analysis summary"):
            read(run_id)


def test_stale_keys_are_only_names_the_run_holds(mlflow_store, tmp_path):
    """An orphan's summary may name keys MLflow refuses (a NUL): they were never logged, so they are not sent
    (sending them failed after the first chunk, with the marker set)."""
    run_id, _, _, _ = _setup(tmp_path)
    _orphan(run_id, tmp_path, 2, json.dumps({"metrics": {"bad\x00key": 1.0, "m00001": 2.0}}))
    c = {"m00000": 5.0}
    assert analyses.log_analysis(run_id, _analysis(tmp_path, "C", c), c, 5, {"name": "C"}) == 3
    run = MlflowClient().get_run(run_id)
    assert MARKER not in run.data.tags and run.data.tags[POINTER] == "3"
    assert "bad\x00key" not in run.data.metrics and math.isnan(run.data.metrics["m00001"])


@pytest.mark.parametrize(
    "marker",
    [
        '{"version": 2, "step": 1e30}',
        '{"version": 2, "step": 100000000000000000000}',
        '{"version": 2.0, "step": 3}',
        '{"version": true, "step": 1}',
        '{"version": 2, "step": -1}',
        '{"version": 2}',
        "[2, 3]",
        '"2"',
        "not json",
    ],
)
def test_a_marker_that_is_not_tcs_is_refused_before_any_write(mlflow_store, tmp_path, marker):
    """A huge step reached SQLite as an integer overflow on every later write-back (the run bricked), a bool
    read as version 1, and a marker that was not an object silently gave step 0."""
    run_id, _, a, _ = _setup(tmp_path)
    MlflowClient().set_tag(run_id, MARKER, marker)
    assert not analyses.analysis_metrics_settled(run_id)
    with pytest.raises(ValueError, match=r"tc\.analysis_writing=.* is not an analysis marker"):
        analyses.check_previous_analysis(run_id)
    c = {"m00000": 5.0}
    with pytest.raises(ValueError, match=r"tc\.analysis_writing=.* is not an analysis marker"):
        analyses.log_analysis(run_id, _analysis(tmp_path, "C", c), c, 5, {"name": "C"})
    run = MlflowClient().get_run(run_id)
    assert run.data.tags[POINTER] == "1" and run.data.metrics["m00000"] == a["m00000"]  # nothing written
    assert {Path(f.path).name for f in MlflowClient().list_artifacts(run_id, "analysis")} == {"v1"}


def test_a_died_writes_marker_step_carries_to_the_next_analysis(mlflow_store, tmp_path):
    run_id, _, _, _ = _setup(tmp_path)
    MlflowClient().set_tag(run_id, MARKER, json.dumps({"version": 2, "step": 30}))
    assert not analyses.analysis_metrics_settled(run_id)
    c = {"m00000": 5.0}
    analyses.log_analysis(run_id, _analysis(tmp_path, "C", c), c, 5, {"name": "C"})
    (m,) = MlflowClient().get_metric_history(run_id, "m00000")[-1:]
    assert m.step == 30 and m.value == 5.0 and analyses.analysis_metrics_settled(run_id)


def test_current_analysis_reads_the_pointer_again_when_its_version_vanished(mlflow_store, tmp_path, monkeypatch):
    """A reader that looked up pointer N just before two later write-backs finds analysis/v<N> deleted."""
    run_id, _, a, _ = _setup(tmp_path)
    real = analyses.analysis_dir
    answers = iter(["analysis/v7"])  # the first look-up names a version since deleted
    monkeypatch.setattr(analyses, "analysis_dir", lambda r: next(answers, None) or real(r))
    assert analyses.current_analysis(run_id) == ("analysis/v1", a)
    MlflowClient().set_tag(run_id, POINTER, "7")  # a pointer that stays on a missing version: said clearly
    with pytest.raises(ValueError, match=r"analysis/v7 has no summary\.json"):
        analyses.current_analysis(run_id)


def test_the_run_description_reads_the_pointed_version(mlflow_store, tmp_path):
    run_id, _, a, _ = _setup(tmp_path)
    MlflowClient().log_metric(run_id, "m00000", 99.0, step=40)  # a write-back in flight changed one value
    assert analyses.current_analysis_metrics(run_id) == a


def test_every_write_back_call_is_synchronous_and_the_tags_fit_one(mlflow_store, tmp_path, monkeypatch):
    """With MLFLOW_ENABLE_ASYNC_LOGGING the calls would be queued: the order (pointer last) is the point. Too
    many tags for one store call are refused before anything is written."""
    run_id, _, _, _ = _setup(tmp_path)
    calls = []
    real = MlflowClient.log_batch
    monkeypatch.setattr(
        MlflowClient, "log_batch", lambda self, *args, **k: calls.append(k.get("synchronous")) or real(self, *args, **k)
    )
    c = {"m00000": 5.0}
    too_many = {f"t{i}": "x" for i in range(98)}
    with pytest.raises(ValueError, match=r"101 analysis tags do not fit one store call"):
        analyses.log_analysis(run_id, _analysis(tmp_path, "C", c), c, 5, {"name": "C"}, too_many)
    assert calls == [] and {Path(f.path).name for f in MlflowClient().list_artifacts(run_id, "analysis")} == {"v1"}
    fits = {f"t{i}": "x" for i in range(97)}
    assert analyses.log_analysis(run_id, _analysis(tmp_path, "D", c), c, 5, {"name": "D"}, fits) == 2
    assert len(calls) == 4 and all(s is True for s in calls)  # marker, 2 metric chunks (1 + 1,100 NaN), pointer
    assert MlflowClient().get_run(run_id).data.tags["t96"] == "x"


def test_settled_compares_the_marker_and_the_pointer_as_numbers(mlflow_store, tmp_path):
    """The pointer is a number tag: "01" names version 1 as "1" does (`tc.core.names.NUMBER`), so a marker of version 1
    beside it is the pointed analysis's own, settled; a marker of another version is not."""
    run_id, _, _, _ = _setup(tmp_path)
    c = MlflowClient()
    c.set_tag(run_id, POINTER, "01")
    c.set_tag(run_id, MARKER, json.dumps({"version": 1, "step": 0}))
    assert analyses.analysis_metrics_settled(run_id)
    c.set_tag(run_id, MARKER, json.dumps({"version": 2, "step": 0}))
    assert not analyses.analysis_metrics_settled(run_id)
