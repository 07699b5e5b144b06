"""Passwords never reach what tc logs (`tc.tracking.secrets`): the masking itself against a table of cases, and a
whole sweep whose storage URL carries a password, every param, tag and text artifact of its runs scanned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tc.tracking.secrets import MASK, has_secret, mask_config, mask_text, mask_url
from tests.conftest import ROOT

SECRET = "Zq9-not-a-real-password"


@pytest.mark.parametrize(
    "text, masked",
    [
        ("postgresql+psycopg2://tc:tc@db-host/mlflow", "postgresql+psycopg2://tc:***@db-host/mlflow"),
        (f"http://alice:{SECRET}@mlflow.example.org:5000/", "http://alice:***@mlflow.example.org:5000/"),
        (f"redis://:{SECRET}@cache:6379/0", "redis://:***@cache:6379/0"),
        (f"postgresql://u:p@ss{SECRET}@h/db", "postgresql://u:***@h/db"),  # a raw "@" in the password
        (
            f"postgresql://db/optuna?sslmode=require&password={SECRET}&x=1",
            "postgresql://db/optuna?sslmode=require&password=***&x=1",
        ),
        (f"host=db PASSWORD={SECRET} dbname=optuna", "host=db PASSWORD=*** dbname=optuna"),  # libpq settings
        (f"storage='mysql://u:{SECRET}@h/d': cannot open", "storage='mysql://u:***@h/d': cannot open"),
        (f"a://u:{SECRET}@h and b://v:{SECRET}@k", "a://u:***@h and b://v:***@k"),
        # quotes in a password (SQLAlchemy takes them raw), in a URL and in a repr that quotes it
        (f"postgresql://u:it's-{SECRET}@h/db", "postgresql://u:***@h/db"),
        (f'storage="postgresql://u:a\'b"{SECRET}@h/db"', 'storage="postgresql://u:***@h/db"'),
        # libpq's quoted values, and any setting whose name ends in password (sslpassword, PGPASSWORD, ...)
        (f"host=db password='{SECRET} x' dbname=optuna", "host=db password=*** dbname=optuna"),
        (f"postgresql://db/optuna?sslpassword={SECRET}", "postgresql://db/optuna?sslpassword=***"),
        (f"PGPASSWORD={SECRET} mlflow_tracking_password = {SECRET}", "PGPASSWORD=*** mlflow_tracking_password = ***"),
        # nothing to mask: no password, a port, a user name alone, a path, an e-mail address
        ("http://127.0.0.1:5000/api", None),
        ("postgresql+psycopg2://tc@db-host:5432/optuna", None),
        ("sqlite:////home/me/mlflow.db", None),
        ("see http://host:5000/x, mail a@b.c", None),
        ("/data/optuna_journal.log", None),
    ],
)
def test_mask_text_hides_every_password_and_nothing_else(text, masked):
    want = text if masked is None else masked
    assert mask_text(text) == want and mask_url(text) == want
    assert has_secret(text) == (masked is not None)
    assert SECRET not in mask_text(text)
    assert mask_text(want) == want  # masking twice changes nothing


def test_mask_config_masks_every_string_and_keeps_the_shape():
    cfg = {"storage": f"postgresql://tc:{SECRET}@h/optuna", "n_trials": 4, "space": {"lr": [0.1, f"x://u:{SECRET}@h"]}}
    out = mask_config(cfg)
    assert out == {"storage": "postgresql://tc:***@h/optuna", "n_trials": 4, "space": {"lr": [0.1, "x://u:***@h"]}}
    assert SECRET in cfg["storage"]  # a new object: the caller's config is untouched
    assert mask_config(("a", 1, None)) == ("a", 1, None)


def _everything_logged(client: MlflowClient, experiment: str, tmp: Path) -> dict[str, str]:
    """{where: text} for every param, tag and artifact file of every run in `experiment`."""
    out = {}
    for run in client.search_runs([experiment]):
        rid = run.info.run_id
        out |= {f"{rid} param {k}": v for k, v in run.data.params.items()}
        out |= {f"{rid} tag {k}": v for k, v in run.data.tags.items()}
        local = Path(client.download_artifacts(rid, "", str(tmp / rid)))
        for f in local.rglob("*"):
            if f.is_file():
                out[f"{rid} artifact {f.relative_to(local)}"] = f.read_bytes().decode("utf-8", "replace")
    return out


@pytest.mark.filterwarnings("ignore:Query string argument")  # sqlite ignores ?password=, and says so
def test_a_sweep_with_a_password_in_its_storage_url_logs_it_nowhere(mlflow_store, tmp_path, capsys):
    from entrypoints import sweep as sweep_ep

    # SQLite ignores the password (with a warning): a password-carrying URL without a database server
    storage = f"sqlite:///{tmp_path}/optuna.db?password={SECRET}"
    argv = ["--n_trials", "1", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--max_samples", "40"]
    argv += ["--bootstrap", "100", "--search_space", str(ROOT / "examples" / "digits_space.yaml")]
    argv += ["--storage", storage, "--anisotropy", "false", "--target_loss", "0", "--seeds", "1"]
    assert sweep_ep.main(argv) == 0
    assert "storage carries a password: set PGPASSWORD or ~/.pgpass" in capsys.readouterr().err
    client = MlflowClient()
    logged = _everything_logged(client, "0", tmp_path / "artifacts")
    assert len({k.split()[0] for k in logged}) == 2  # the sweep run and its trial
    assert not [where for where, text in logged.items() if SECRET in text]
    (sweep_run,) = client.search_runs(["0"], "tags.`tc.storage` != ''")
    assert sweep_run.data.tags["tc.storage"] == mask_url(storage) and MASK in mask_url(storage)
    sweep_config = next(v for k, v in logged.items() if k.endswith("artifact sweep_config.json"))
    assert json.loads(sweep_config)["storage"] == mask_url(storage)


def test_a_failed_and_a_crashed_trial_record_their_reasons_masked(mlflow_store, tmp_path, monkeypatch):
    """Error texts can quote a URL: a trial's `fail_reason` and `tc.error` (user attributes, tags) are masked."""
    import optuna

    from entrypoints import sweep as sweep_ep
    from tc.core.train import TrainingFailure
    from tc.tracking import jobs

    errors = [RuntimeError(f"x://u:{SECRET}@h"), TrainingFailure(f"diverged at postgresql://tc:{SECRET}@db/optuna")]

    def failing_train(*args, **kwargs):
        raise errors.pop(0)

    monkeypatch.setattr(jobs, "train_job", failing_train)
    storage = str(tmp_path / "j.log")
    argv = ["--n_trials", "1", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--seeds", "1"]
    argv += ["--search_space", str(ROOT / "examples" / "digits_space.yaml"), "--storage", storage]
    assert sweep_ep.main(argv) == 0  # the crashed trial does not count, so a second one runs and fails
    study = optuna.load_study(
        study_name="tc-sweep",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)),
    )
    attrs = [json.dumps(t.user_attrs) for t in study.trials]
    assert len(attrs) == 2 and all(MASK in a and SECRET not in a for a in attrs)
    logged = _everything_logged(MlflowClient(), "0", tmp_path / "artifacts")
    assert not [where for where, text in logged.items() if SECRET in text]
    assert any("tc.error" in where and MASK in text for where, text in logged.items())


def test_tcs_own_lines_on_stderr_mask_passwords_too(mlflow_store, monkeypatch, capsys):
    """What tc prints when the tracking server cannot be reached quotes MLflow's error, which names the request's
    URL (`API request to http://user:password@host/api/... failed`); and a command's refusal line says what its
    `tc.error` tag says. Console output lands in CI logs and terminals: masked as the tags are."""
    import optuna

    from entrypoints import analyze as analyze_ep
    from entrypoints import train as train_ep
    from tc.sweep import trial as sweep_trial
    from tc.tracking import refusals

    down = ConnectionError(f"API request to http://alice:{SECRET}@mlflow.example.org/api/2.0/mlflow/runs failed")

    def unreachable(*args, **kwargs):
        raise down

    monkeypatch.setattr(refusals.mlflow, "start_run", unreachable)  # the refusal cannot be recorded
    assert refusals.refuse("train", ValueError(f"storage=postgresql://tc:{SECRET}@db/optuna is wrong")) == 2

    class Down:
        log_text = unreachable

    monkeypatch.setattr(sweep_trial.client, "client", lambda: Down())  # a trial's output cannot be logged
    with sweep_trial.kept_output("run0"):
        print("epoch 1/1")
    monkeypatch.setattr(sweep_trial, "_end_trial_runs", unreachable)  # nor can a crashed trial's run be marked
    sweep_trial._crash(optuna.create_study().ask(), RuntimeError("a bug"), "run0")

    refused = ValueError(f"run r: its data is at postgresql://tc:{SECRET}@db/x")
    for entry in (train_ep, analyze_ep):  # the refusal line of a job's refusal
        monkeypatch.setattr(entry, "train_job" if entry is train_ep else "analyze_job", unreachable)
        down = refused
        assert entry.main(["--dataset", "digits"] if entry is train_ep else ["--run_id", "r"]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err, err
    assert err.count(MASK) == 6, err  # the refusal and its record, the output, the run, the two commands' lines
