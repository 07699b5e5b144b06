"""The MLflow UI in a real browser: `mlflow server` on 127.0.0.1, Debian's `chromium` headless.

The MLflow UI is a React app, so the page is rendered with a virtual-time budget and its DOM dumped; the test
reads what a user would see on the run page (name, description, metrics) and on its artifact page (the
heatmap image, fetched by the browser as a blob)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tc.tracking import analyses
from tests.test_server import mlflow_server  # noqa: F401  (the fixture: a real server on a free port)

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(url: str, tmp_path, *args: str, budget_ms: int = 20000) -> str:
    """Render `url` headless (no network beyond 127.0.0.1 is used) and return the DOM or chromium's output."""
    cmd = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--virtual-time-budget={budget_ms}",
        "--window-size=1600,1000",
        *args,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup.sh installs it)")
def test_run_page_shows_tc_metrics_and_the_heatmap(mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    from mlflow.tracking import fluent

    from entrypoints import analyze as analyze_ep
    from entrypoints import train as train_ep

    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # the default experiment `tc` is part of the test
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    train = ["--dataset", "digits", "--model", "mlp", "--width", "16", "--epochs", "3", "--train_size", "300"]
    assert train_ep.main([*train, "--batch_size", "50"]) == 0
    client = MlflowClient()
    (exp,) = [e for e in client.search_experiments() if e.name == "tc"]
    (run,) = client.search_runs([exp.experiment_id], "tags.`tc.dataset` = 'digits'")
    rid = run.info.run_id
    args = ["--run_id", rid, "--max_samples", "60", "--splits", "train,test", "--anisotropy", "false"]
    assert analyze_ep.main([*args, "--measures", "false"]) == 0
    metrics = client.get_run(rid).data.metrics
    assert {"tc_test", "tc_kappa_test", "test_acc"} <= set(metrics)

    page = chromium(f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs/{rid}", tmp_path, "--dump-dom")
    assert "mlp3-w16 digits ep3 bs50 n300 seed0" in page  # the run's name, not `polite-horse-192`
    for key in ("tc_kappa_test", "tc_test", "tc_full_test", "test_acc"):
        assert key in page, f"{key} is not on the run page"
    assert "chance-corrected" in page  # the Markdown description with the headline numbers

    heatmap = f"{analyses.analysis_dir(rid)}/consistency_heatmaps.png"  # analysis/v1/...
    artifact = f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs/{rid}/artifacts/{heatmap}"
    page = chromium(artifact, tmp_path, "--dump-dom")
    assert f'alt="{heatmap}"' in page
    assert 'src="blob:' in page  # the browser fetched the image's bytes from the server


DASHBOARD = shutil.which("optuna-dashboard")


@pytest.mark.skipif(CHROMIUM is None or DASHBOARD is None, reason="needs chromium and optuna-dashboard (pip: .[ui])")
def test_optuna_dashboard_names_the_objective_and_shows_tc_measures(mlflow_store, tmp_path):
    """A one-trial sweep, then `optuna-dashboard <journal file>` in the browser: the objective reads `test_acc`
    (not "Objective 0") and the trial's user attributes carry tc's headline measures."""
    import os
    import signal
    import time
    import urllib.request

    from entrypoints import sweep as sweep_ep
    from tests.test_server import _free_port
    from tests.test_sweep import SPACE  # a space the 1438 digits training images can satisfy

    journal = tmp_path / "journal.log"
    argv = ["--n_trials", "1", "--study_name", "ui-demo", "--dataset", "digits", "--model", "mlp", "--epochs", "2"]
    argv += ["--max_samples", "60", "--bootstrap", "100", "--anisotropy", "false", "--storage", str(journal)]
    argv += ["--search_space", str(SPACE)]
    assert sweep_ep.main(argv) == 0
    client = MlflowClient()
    names = {r.info.run_name for r in client.search_runs(["0"])}
    assert {"sweep ui-demo", "trial 0"} <= names

    port = _free_port()
    proc = subprocess.Popen(
        [DASHBOARD, str(journal), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/api/studies", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        study = chromium(f"{url}/dashboard/studies/0", tmp_path, "--dump-dom")
        assert "test_acc" in study and "Objective 0" not in study
        trials = chromium(f"{url}/dashboard/studies/0/trials", tmp_path, "--dump-dom")
        assert "tc_kappa_test" in trials and "mlflow_run_id" in trials
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
