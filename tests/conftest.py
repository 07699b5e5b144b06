"""Shared fixtures: a private MLflow store per test (a copy of one migrated sqlite DB) and a private cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory) -> Path:
    """Migrating a fresh MLflow sqlite DB takes seconds; migrate once and copy it per test."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tc-cache")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, cache_dir):
    monkeypatch.setenv("TC_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("TC_DATA_DIR", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, _template_db) -> str:
    """MLFLOW_TRACKING_URI pointing at a private sqlite store; cwd is the test's tmp dir (artifacts land there)."""
    import mlflow

    db = tmp_path / "mlflow.db"
    shutil.copy(_template_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "0")  # tests look in Default; outside tests, tc's runs go to `tc`
    # and no experiment an earlier test activated (mlflow.set_experiment, in another store) outranks that variable
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """Every artifact path tc asks MLflow to download, in order (tests/test_security.py, tests/test_download.py)."""
    from mlflow.tracking import MlflowClient

    seen: list[str] = []
    original = MlflowClient.download_artifacts

    def spy(self, run_id, path, dst_path=None):
        seen.append(path)
        return original(self, run_id, path, dst_path)

    monkeypatch.setattr(MlflowClient, "download_artifacts", spy)
    return seen
