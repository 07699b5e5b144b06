"""A team's setup end to end on 127.0.0.1 (docs/scaling.md): MLflow's basic-auth server started by
scripts/team_server.sh with proxied artifacts, a PostgreSQL with a generated password for MLflow and Optuna,
two sweep workers with credentials, analyze against the same server; clients without credentials, with wrong
ones or without permission are refused and write nothing; no secret reaches a param, tag or artifact.

Every password is generated per run and travels in the environment only (PGPASSWORD, MLFLOW_AUTH_ADMIN_PASSWORD,
MLFLOW_TRACKING_USERNAME/PASSWORD). Without PostgreSQL (initdb, postgres, psycopg2) MLflow runs on sqlite and
Optuna on a journal file, and `test_postgresql_is_part_of_the_team_setup` says why it skipped.
Set TC_AUTH_MEASURE=<file> to write what the workers and the server cost (processes, memory) as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tc.sweep.study import open_storage
from tests.conftest import ROOT
from tests.loopback import LocalPostgres, Sampler, TeamServer, password, postgres_missing
from tests.test_sweep import TINY

pytestmark = pytest.mark.slow
pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs mlflow[auth]: pip install -e '.[auth]'")

EXPERIMENT = "tc-team"
WORKER, READER = "alice", "bob"  # alice may edit the experiment; bob has the server's default, READ


@dataclass
class Team:
    server: TeamServer
    pg: LocalPostgres | None
    storage: str  # the Optuna storage as the workers pass it: no password
    home: Path  # HOME of every client: no ~/.mlflow/credentials but the ones a test writes
    passwords: dict[str, str] = field(default_factory=dict)  # user -> password
    experiment_id: str = ""

    def secrets(self) -> dict[str, str]:
        out = {f"password of {u}": p for u, p in self.passwords.items()}
        out["flask secret key"] = self.server.secret_key
        if self.pg:
            out["database password"] = self.pg.password
        return out

    def env(self, user: str | None = None, pw: str | None = None, **extra: str) -> dict[str, str]:
        """A client's environment: this server, the database password, and `user`'s credentials (none: None)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG"))}
        env |= {"MLFLOW_TRACKING_URI": self.server.url, "HOME": str(self.home)}
        env |= {
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        if self.pg:
            env["PGPASSWORD"] = self.pg.password
        if user:
            env |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": pw or self.passwords[user]}
        return env | extra


@contextlib.contextmanager
def as_user(team: Team, user: str):
    """In this process, MLflow's client speaks as `user` to the team's server."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict(zip(keys, (team.server.url, user, team.passwords[user]), strict=True)))
    try:
        yield MlflowClient(team.server.url)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    root = tmp_path_factory.mktemp("team")
    (home := root / "home").mkdir()
    pg = None if postgres_missing() else LocalPostgres().start()
    saved = os.environ.get("PGPASSWORD")
    if pg:
        os.environ["PGPASSWORD"] = pg.password  # this process reads the study too
    try:
        backend = pg.url("mlflow") if pg else f"sqlite:///{root}/mlflow.db"
        server = TeamServer(
            backend, root / "artifacts", root / "server-config", {"PGPASSWORD": pg.password} if pg else {}
        )
        server.start()
        try:
            t = Team(server, pg, pg.url("optuna") if pg else str(root / "optuna_journal.log"), home)
            t.passwords = {"admin": server.admin_password, WORKER: password(), READER: password()}
            from mlflow.server import get_app_client

            with as_user(t, "admin") as admin:
                auth = get_app_client("basic-auth", tracking_uri=server.url)
                for user in (WORKER, READER):
                    auth.create_user(user, t.passwords[user])
                t.experiment_id = admin.create_experiment(EXPERIMENT)
                auth.grant_user_permission(WORKER, "experiment", t.experiment_id, "EDIT")
            yield t
        finally:
            server.stop()
    finally:
        if pg:
            pg.stop()
        if saved is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = saved


def mlflow_run(entry: str, *params: str) -> list[str]:
    """The documented command: `mlflow run` into the team's experiment, parameters without secrets."""
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local"]
    cmd += ["--experiment-name", EXPERIMENT, "-e", entry]
    for p in params:
        cmd += ["-P", p]
    return cmd


def run(cmd: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=env["HOME"], capture_output=True, text=True, timeout=timeout)


def snapshot(team: Team) -> dict:
    """Everything a refused client could have written: every run's status, params, tags and metrics, the
    experiments, and every file in the server's artifact store."""
    with as_user(team, "admin") as admin:
        experiments = admin.search_experiments(view_type=ViewType.ALL)
        runs = admin.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL)
        state = {
            # metrics as JSON text: a NaN metric is not equal to itself, its text is
            r.info.run_id: (
                r.info.status,
                r.data.params,
                r.data.tags,
                json.dumps(r.data.metrics, sort_keys=True),
                r.info.lifecycle_stage,
            )
            for r in runs
        }
    files = sorted(str(p.relative_to(team.server.artifacts)) for p in team.server.artifacts.rglob("*") if p.is_file())
    studies = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(open_storage(team.storage))}
    return {"experiments": sorted(e.name for e in experiments), "runs": state, "files": files, "studies": studies}


def test_two_workers_with_credentials_complete_a_study_and_analyze_reads_it(team, tmp_path):
    env = team.env(WORKER)
    procs = [
        subprocess.Popen(
            mlflow_run(
                "sweep",
                *TINY,
                "anisotropy=false",
                "n_trials=2",
                "study_name=team",
                f"storage={team.storage}",
                f"seed={i}",
            ),
            env=env,
            cwd=team.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    start = time.time()
    roots = {"worker0": procs[0].pid, "worker1": procs[1].pid, "server": team.server.proc.pid}
    if team.pg:
        roots["postgres"] = team.pg.proc.pid
    with Sampler(roots) as sampler:
        outs = [p.communicate(timeout=900) for p in procs]
    seconds = time.time() - start
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name="team", storage=open_storage(team.storage))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    with as_user(team, WORKER) as client:
        runs = client.search_runs([team.experiment_id])
        sweep_runs = [r for r in runs if "tc.storage" in r.data.tags]
        assert len(sweep_runs) == 2 and len(runs) == 4  # two workers' sweep runs, one trial run each
        trial_run = complete[0].user_attrs["mlflow_run_id"]
        assert client.get_run(trial_run).info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: no shared disk
    assert any(team.server.artifacts.rglob("step_*.pt"))  # the checkpoints went through the server to its disk

    proc = run(mlflow_run("analyze", f"run_id={trial_run}", "max_samples=50"), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tc_test" in proc.stdout

    # no secret in any param, tag or artifact of any run (the database and every user's password, the key)
    leaks = []
    with as_user(team, "admin") as admin:
        for r in admin.search_runs([team.experiment_id]):
            texts = {f"param {k}": v for k, v in r.data.params.items()}
            texts |= {f"tag {k}": v for k, v in r.data.tags.items()}
            local = Path(admin.download_artifacts(r.info.run_id, "", str(tmp_path / r.info.run_id)))
            texts |= {
                f"artifact {f.relative_to(local)}": f.read_bytes().decode("latin-1")
                for f in local.rglob("*")
                if f.is_file()
            }
            leaks += [
                (r.info.run_id, where, what)
                for where, text in texts.items()
                for what, s in team.secrets().items()
                if s in text
            ]
    assert not leaks
    if out := os.environ.get("TC_AUTH_MEASURE"):
        peaks = {k: asdict(v) for k, v in sampler.peaks.items()}
        Path(out).write_text(
            json.dumps({"sweep_seconds": seconds, "peaks": peaks, "postgres": bool(team.pg)}, indent=1)
        )


def _one_line(proc: subprocess.CompletedProcess, prog: str) -> str:
    """tc's refusal: exit code 1, its last stderr line from `prog`, and no traceback."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{prog}: the tracking server http://127.0.0.1:"), line
    return line


def test_clients_without_credentials_or_permission_are_refused_and_write_nothing(team, tmp_path):
    with as_user(team, WORKER) as client:
        trials = client.search_runs([team.experiment_id], "tags.`tc.trial` != ''")
    assert trials, "runs after test_two_workers_with_credentials_complete_a_study_and_analyze_reads_it"
    trial_run = trials[0].info.run_id
    before = snapshot(team)
    tiny = ["--dataset", "digits", "--model", "mlp", "--epochs", "1", "--train_size", "100"]

    # no credentials: `mlflow run` creates the run itself, so the refusal is MLflow's 401
    nobody = team.env(None)
    proc = run(mlflow_run("train", "dataset=digits", "model=mlp", "epochs=1"), nobody)
    assert proc.returncode != 0 and "401" in proc.stderr
    # ...where tc talks to the server itself, it is tc's line: a sweep worker, an analysis
    sweep = [sys.executable, str(ROOT / "entrypoints" / "sweep.py"), "--n_trials", "1", "--storage", team.storage]
    sweep += ["--study_name", "refused", "--search_space", str(ROOT / "examples" / "digits_space.yaml"), *tiny[:4]]
    line = _one_line(run(sweep, team.env(None, MLFLOW_EXPERIMENT_NAME=EXPERIMENT)), "tc sweep")
    assert "asks for credentials and got none: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line
    analyze = [sys.executable, str(ROOT / "entrypoints" / "analyze.py"), "--run_id", trial_run, "--max_samples", "50"]
    line = _one_line(run(analyze, team.env(None, MLFLOW_EXPERIMENT_NAME=EXPERIMENT)), "tc analyze")
    assert "asks for credentials and got none" in line

    # wrong credentials
    wrong = "pw-wrong-" + password()
    line = _one_line(run(analyze, team.env(WORKER, wrong, MLFLOW_EXPERIMENT_NAME=EXPERIMENT)), "tc analyze")
    assert f"refused the credentials of user '{WORKER}'" in line and wrong not in line
    # ...also from a credentials file instead of the environment
    creds = team.home / ".mlflow" / "credentials"
    creds.parent.mkdir(exist_ok=True)
    creds.write_text(f"[mlflow]\nmlflow_tracking_username = {WORKER}\nmlflow_tracking_password = {wrong}\n")
    try:
        line = _one_line(run(analyze, team.env(None, MLFLOW_EXPERIMENT_NAME=EXPERIMENT)), "tc analyze")
        assert f"refused the credentials of user '{WORKER}'" in line
    finally:
        creds.unlink()

    # a user without edit permission on the experiment: reads, but cannot log
    reader = team.env(READER, MLFLOW_EXPERIMENT_NAME=EXPERIMENT)
    with as_user(team, READER) as client:
        assert client.get_run(trial_run).info.run_id == trial_run  # READ works
    proc = run(mlflow_run("analyze", f"run_id={trial_run}", "max_samples=50"), reader)
    assert proc.returncode != 0 and "403" in proc.stderr  # MLflow's, creating the run
    train = [sys.executable, str(ROOT / "entrypoints" / "train.py"), *tiny]
    line = _one_line(run(train, reader), "tc train")
    assert f"denied user '{READER}' permission" in line and "grant that user EDIT on the experiment" in line
    own_loop = (
        f"import tc\ntc.log_run_info(model='mlp', dataset='digits', run_id='{trial_run}', width=16, train_size=100)\n"
    )
    proc = run([sys.executable, "-c", own_loop], reader)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("tc.tracking.access.ServerRefusal: the tracking server")
    assert "During handling" not in proc.stderr and "RestException" not in proc.stderr  # the line, not MLflow's chain

    after = snapshot(team)
    changed = {k: (before[k], after[k]) for k in before if k != "runs" and before[k] != after[k]}
    for rid in set(before["runs"]) | set(after["runs"]):
        was, now = before["runs"].get(rid), after["runs"].get(rid)
        if was != now:
            fields = ("status", "params", "tags", "metrics", "lifecycle")
            changed[rid] = [
                (f, a, b) for f, a, b in zip(fields, was or [None] * 5, now or [None] * 5, strict=True) if a != b
            ]
    assert not changed  # nothing written by any refused client


def test_postgresql_is_part_of_the_team_setup(team):
    if team.pg is None:
        pytest.skip(f"the team test ran on sqlite and a journal file: {postgres_missing()}")
    assert team.storage.startswith("postgresql+psycopg2://tc@") and team.server.backend.startswith("postgresql")
