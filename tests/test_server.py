"""End to end against a real `mlflow server` on 127.0.0.1: checkpoints travel over HTTP as for a team."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tc.core import checkpoints as ck
from tests.test_mlflow_run import mlflow_run

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK":
                break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("mlflow server did not answer /health within 120 s")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(tmp_path)
    import mlflow

    mlflow.set_tracking_uri(url)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_train_then_analyze_through_a_tracking_server(mlflow_server, cache_dir):
    proc = mlflow_run("train", "dataset=digits", "model=resnet20", "depth=8", "width=4", "epochs=3", "train_size=256")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = MlflowClient().search_runs(["0"])
    run_id = run.info.run_id
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied over HTTP, not a shared disk

    proc = mlflow_run("analyze", f"run_id={run_id}", "max_samples=50")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tc_test" in proc.stdout
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert {"tc_train", "tc_test", "tc_corrupt", "half_life_test"} <= set(metrics)
    cached = sorted(Path(cache_dir, "checkpoints", run_id).glob("*.pt"))
    assert [p.name for p in cached] == [ck.filename(s) for s in (0, 2, 4, 6)]
    files = MlflowClient().list_artifacts(run_id, "analysis/v1")
    assert any(f.path == "analysis/v1/consistency_heatmaps.png" for f in files)
