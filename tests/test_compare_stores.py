"""scripts/compare_stores.py, the before/after check of a refactor: it matches runs by role, hides run ids
and wall-clock times, and finds a single changed number anywhere in a metric's history or a table."""

import importlib.util
import sys

import mlflow
import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("compare_stores", ROOT / "scripts" / "compare_stores.py")
cs = importlib.util.module_from_spec(spec)
sys.modules["compare_stores"] = cs  # dataclasses look their module up there
spec.loader.exec_module(cs)


def _store(root, tmp_path, *, late_value=0.5, table_value=1.0, seconds=3.0):
    uri = f"sqlite:///{tmp_path}/{root}.db"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("tc", artifact_location=str(tmp_path / root / "artifacts"))
    with mlflow.start_run(experiment_id=exp, run_name="sweep") as parent:
        for n in range(2):
            with mlflow.start_run(experiment_id=exp, run_name="trial", nested=True) as child:
                mlflow.log_param("sweep_run_id", parent.info.run_id)  # an id: compared by role
                for step, value in enumerate([0.1, 0.2, late_value if n == 1 else 0.3]):
                    mlflow.log_metric("tc_test", value, step=step)
                mlflow.log_metric("train_seconds", seconds)
                mlflow.log_text(f"cut,rc,analysis_seconds\n1,{table_value if n else 1.0},{seconds}\n", "m.csv")
                mlflow.log_dict({"run": child.info.run_id, "tc": 0.9, "phase_seconds": seconds}, "s.json")
    mlflow.set_tracking_uri(None)
    return cs.open_store(uri)


@pytest.fixture
def same(tmp_path):
    return _store("a", tmp_path), _store("b", tmp_path, seconds=99.0)


def test_identical_runs_compare_equal_apart_from_times(same):
    report = cs.compare(*same)
    assert set(report) == {"sweep", "sweep / trial", "sweep / trial #2"}
    assert all(not line.startswith("metric") and not line.startswith("file") for v in report.values() for line in v)
    counts = report["sweep / trial #2"]
    assert "(1 tables equal but for volatile columns)" in counts and "(1 json equal but for volatile keys)" in counts
    assert "(1 identical params)" in counts and "(1 volatile metrics)" in counts  # the id param, train_seconds


def test_one_changed_value_late_in_a_history_is_found(tmp_path):
    report = cs.compare(_store("a", tmp_path), _store("b", tmp_path, late_value=0.51))
    assert [line for line in report["sweep / trial #2"] if not line.startswith("(")] == [
        "metric tc_test: 0.5 -> 0.51 (history differs)"
    ]
    assert [line for line in report["sweep / trial"] if not line.startswith("(")] == []


def test_one_changed_cell_in_a_table_is_found(tmp_path):
    report = cs.compare(_store("a", tmp_path), _store("b", tmp_path, table_value=1.5))
    assert [line for line in report["sweep / trial #2"] if not line.startswith("(")] == [
        "file m.csv: columns differ: ['rc']"
    ]


def test_nan_equals_nan_but_not_a_number():
    assert cs.same_history([(0, float("nan")), (1, 0.5)], [(0, float("nan")), (1, 0.5)])
    assert not cs.same_history([(0, float("nan"))], [(0, 0.5)])
    assert not cs.same_history([(0, 0.5)], [(1, 0.5)])


def test_a_run_that_ended_otherwise_is_found(tmp_path):
    """A run's status is behaviour (a trial FAILED, a pruned one KILLED): FINISHED -> FAILED is a difference."""
    before = _store("a", tmp_path)
    after = _store("b", tmp_path)
    (child, *_) = [i for i, role in after.roles.items() if role == "sweep / trial #2"]
    after.client.set_terminated(child, "FAILED")
    real = [line for line in cs.compare(before, after)["sweep / trial #2"] if not line.startswith("(")]
    assert real == ["status: 'FINISHED' -> 'FAILED'"]


def test_nan_in_a_json_file_equals_nan():
    """summary.json holds NaN metrics (json writes NaN): unchanged when both are NaN, changed against a number."""
    assert (
        cs._json_diff({"m": float("nan"), "l": [1.0, float("nan")]}, {"m": float("nan"), "l": [1.0, float("nan")]})
        == []
    )
    assert cs._json_diff({"m": float("nan")}, {"m": 0.5}) == ["/m: nan -> 0.5"]
    assert cs._json_diff([1.0, 2.0], [1.0]) == [": [1.0, 2.0] -> [1.0]"]


def test_a_changed_description_is_found(tmp_path):
    """A run's description (mlflow.note.content) shows its final metrics: a changed one is a difference."""
    before, after = _store("a", tmp_path), _store("b", tmp_path)
    (child,) = [i for i, role in after.roles.items() if role == "sweep / trial"]
    after.client.set_tag(child, "mlflow.note.content", "test accuracy 0.91")
    real = [line for line in cs.compare(before, after)["sweep / trial"] if not line.startswith("(")]
    assert real == ["tag mlflow.note.content: '<absent>' -> 'test accuracy 0.91'"]
