"""scripts/team_server.sh (docs/scaling.md) without starting MLflow: a stand-in for `python` records the command
and the auth config it would run with, so the script's refusals and its generated setup are checked in a second.
tests/test_auth_server.py (slow) starts the real server through it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SECRET = "Zq9-not-a-real-password"
URL = "postgresql+psycopg2://tc@db-host:5432/mlflow"


def _script(tmp_path: Path, *args: str, key: str | None = "k" * 64) -> tuple[subprocess.CompletedProcess, Path]:
    fake = tmp_path / "python"
    record = tmp_path / "record"
    fake.write_text(f'#!/bin/sh\n{{ printf "%s\\n" "$@"; cat "$MLFLOW_AUTH_CONFIG_PATH"; }} > {record}\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TC_", "MLFLOW_"))}
    env |= {"PYTHON": str(fake), "HOME": str(tmp_path)}
    if key:
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = key
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "team_server.sh"), *args], env=env, capture_output=True, text=True, timeout=30
    )
    return proc, record


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg2://tc:{SECRET}@db-host/mlflow",
        f"postgresql+psycopg2://tc:a/b{SECRET}@db-host/mlflow",  # a raw "/" in the password
        f"postgresql+psycopg2://tc@db-host/mlflow?sslmode=require&password={SECRET}",
        f"postgresql+psycopg2://tc@db-host/mlflow?PASSWORD={SECRET}",
    ],
)
def test_a_database_url_with_a_password_is_refused_and_not_echoed(tmp_path, url):
    for args in (["--backend", url], ["--backend", URL, "--auth-db", url]):
        proc, record = _script(tmp_path, *args, "--artifacts", str(tmp_path / "a"))
        assert proc.returncode == 2 and "carries a password" in proc.stderr, proc.stderr
        assert SECRET not in proc.stderr + proc.stdout and not record.exists()


def test_a_missing_secret_key_or_setting_is_refused(tmp_path):
    proc, record = _script(tmp_path, "--backend", URL, "--artifacts", str(tmp_path / "a"), key=None)
    assert proc.returncode == 2 and "MLFLOW_FLASK_SERVER_SECRET_KEY" in proc.stderr and not record.exists()
    proc, _ = _script(tmp_path, "--artifacts", str(tmp_path / "a"))
    assert proc.returncode == 2 and "--backend URL is required" in proc.stderr
    proc, _ = _script(tmp_path, "--backend", URL)
    assert proc.returncode == 2 and "--artifacts DIR is required" in proc.stderr


def test_the_documented_command_runs_mlflows_basic_auth_app_on_loopback(tmp_path):
    """docs/scaling.md's commands: the defaults, and extra options after `--` for a TLS proxy's public name."""
    artifacts, config_dir = tmp_path / "artifacts", tmp_path / "cfg"
    extra = ["--allowed-hosts", "mlflow.example.org", "--cors-allowed-origins", "https://mlflow.example.org"]
    proc, record = _script(
        tmp_path, "--backend", URL, "--artifacts", str(artifacts), "--config-dir", str(config_dir), "--", *extra
    )
    assert proc.returncode == 0, proc.stderr
    lines = record.read_text().splitlines()
    args = lines[: lines.index("[mlflow]")]
    assert args == [
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        URL,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",  # other machines come through the TLS proxy
        "--port",
        "5000",
        "--workers",
        "2",
        *extra,
    ]
    config = lines[lines.index("[mlflow]") :]
    assert "default_permission = READ" in config and f"database_uri = {URL}" in config
    assert (config_dir / "basic_auth.ini").stat().st_mode & 0o077 == 0  # only the operator may change who may do what
    assert config_dir.stat().st_mode & 0o077 == 0 and artifacts.is_dir()
