"""The tracking server's refusals as tc's one line (`tc.tracking.access`): which errors are refusals, what the
line says for no credentials, wrong ones and a missing permission, and that the commands, the own-loop API, the
run lookups and a sweep worker all report it so. tests/test_auth_server.py (slow) does it against a real server."""

from __future__ import annotations

import os

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, UNAUTHENTICATED
from mlflow.tracking import MlflowClient

from tc.tracking import access, client
from tc.tracking.access import ServerRefusal, exit_on_refusal, one_line_refusals, refusal
from tests.conftest import ROOT

URL = "http://alice:Zq9-pw@mlflow.example.org:5000"  # a password in the URL itself: never shown


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A tracking URI like a team's, and no credentials anywhere (environment or ~/.mlflow/credentials)."""
    import mlflow

    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: URL)
    return URL


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Client Error", response=response)


def _chained(inner: BaseException) -> Exception:
    """`inner` buried as MLflow and tc bury it: the cause of one exception, the context of another."""
    try:
        try:
            raise inner
        except BaseException as e:
            raise MlflowException("Failed to download artifacts") from e
    except MlflowException:
        try:
            raise ValueError("run x has no checkpoints/index.json")
        except ValueError as outer:
            return outer


@pytest.mark.parametrize(
    "error, status",
    [
        (MlflowException("401 != 200", error_code=UNAUTHENTICATED), 401),
        (RestException({"error_code": "PERMISSION_DENIED", "message": "Permission denied"}), 403),
        (_http_error(401), 401),
        (_http_error(403), 403),
        (_chained(_http_error(403)), 403),
        (_chained(MlflowException("x", error_code=UNAUTHENTICATED)), 401),
        (MlflowException("no run", error_code=RESOURCE_DOES_NOT_EXIST), None),
        (_http_error(404), None),
        (_chained(OSError("disk full")), None),
    ],
)
def test_refusals_are_found_anywhere_in_the_chain(server, error, status):
    r = refusal(error)
    assert (r.status if r else None) == status


def test_the_line_says_what_to_set_and_never_shows_a_password(server, monkeypatch, tmp_path):
    none = access.refusal_message(401)
    assert "got none: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in none
    assert "http://alice:***@mlflow.example.org:5000" in none and "Zq9-pw" not in none
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-Zq9")
    wrong = access.refusal_message(401)
    assert "refused the credentials of user 'bob'" in wrong and "wrong-Zq9" not in wrong
    denied = access.refusal_message(403)
    assert "denied user 'bob' permission" in denied and "grant that user EDIT on the experiment" in denied
    # the credentials file counts as credentials too
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(k)
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text("[mlflow]\nmlflow_tracking_username = carol\n")
    assert "user 'carol'" in access.refusal_message(401)
    assert all("\n" not in m for m in (none, wrong, denied))


def test_a_command_prints_one_line_and_exits_1(server, capsys):
    @exit_on_refusal("tc analyze")
    def main(argv=None) -> int:
        raise _chained(MlflowException("401 != 200", error_code=UNAUTHENTICATED))

    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tc analyze: the tracking server") and "Traceback" not in err

    @exit_on_refusal("tc analyze")
    def broken(argv=None) -> int:
        raise KeyError("a bug")

    with pytest.raises(KeyError):  # anything else is not swallowed
        broken([])


def test_the_api_raises_the_line_without_mlflows_chain(server):
    @one_line_refusals
    def log_something() -> None:
        raise _chained(RestException({"error_code": "PERMISSION_DENIED", "message": "Permission denied"}))

    with pytest.raises(ServerRefusal, match="denied user None permission") as info:
        log_something()
    assert info.value.status == 403 and info.value.__suppress_context__ and info.value.__cause__ is None


def test_a_refused_lookup_is_not_reported_as_a_missing_run(mlflow_store, monkeypatch):
    def refuse(self, run_id):
        raise MlflowException("401 != 200", error_code=UNAUTHENTICATED)

    monkeypatch.setattr(MlflowClient, "get_run", refuse)
    with pytest.raises(ServerRefusal, match="asks for credentials"):
        client.get_run("0" * 32)
    monkeypatch.setattr(MlflowClient, "get_run", lambda self, run_id: (_ for _ in ()).throw(MlflowException("gone")))
    with pytest.raises(client.RunNotFoundError):  # a plain MLflow error still is a missing run
        client.get_run("0" * 32)


def test_a_sweep_worker_refused_in_a_trial_stops_at_once_with_one_line(mlflow_store, tmp_path, monkeypatch, capsys):
    from entrypoints import sweep as sweep_ep
    from tc.tracking import jobs

    calls = []

    def refused_train(*args, **kwargs):
        calls.append(1)
        raise RestException({"error_code": "PERMISSION_DENIED", "message": "Permission denied"})

    monkeypatch.setattr(jobs, "train_job", refused_train)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    argv = ["--n_trials", "4", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--seeds", "1"]
    argv += ["--search_space", str(ROOT / "examples" / "digits_space.yaml"), "--storage", str(tmp_path / "j.log")]
    assert sweep_ep.main(argv) == 1
    assert calls == [1]  # not three crashed trials before giving up: every trial would be refused
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("tc sweep: the tracking server") and "denied user 'bob'" in err[-1]
    assert not any("crashed" in line for line in err)
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "bob"


def test_a_trial_refused_by_the_server_is_recorded_as_a_crash_and_optuna_prints_no_traceback(
    mlflow_store, tmp_path, monkeypatch, capsys
):
    """A trial the server refuses (permission revoked mid-sweep) stops the worker with tc's line (above); the
    trial itself is no answer about its configuration: recorded as crashed with why (not counted, and its grid
    point queued to run again once the permission is back, as for any crash), and Optuna's log of it is one line,
    not the refusal's traceback."""
    import logging

    import optuna

    from entrypoints import sweep as sweep_ep
    from tc.sweep.budget import CRASH_ATTR, counts_toward_budget
    from tc.sweep.outcomes import classify
    from tc.sweep.study import open_storage
    from tc.sweep.trial import GRID_RERUN_ATTR
    from tc.tracking import jobs

    def refused_train(*args, **kwargs):
        print("tc train: mlp (depth 3, width 32) on digits")  # a trial's output before the refusal
        raise RestException({"error_code": "PERMISSION_DENIED", "message": "Permission denied"})

    monkeypatch.setattr(jobs, "train_job", refused_train)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    records: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = records.append  # Optuna's logger does not propagate to pytest's caplog
    logging.getLogger("optuna").addHandler(catcher)
    journal = tmp_path / "j.log"
    argv = ["--n_trials", "4", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--seeds", "1"]
    argv += ["--search_space", str(ROOT / "examples" / "digits_space.yaml"), "--storage", str(journal)]
    try:
        assert sweep_ep.main([*argv, "--sampler", "grid", "--study_name", "refused-grid"]) == 1
    finally:
        logging.getLogger("optuna").removeHandler(catcher)
    assert capsys.readouterr().err.splitlines()[-1].startswith("tc sweep: the tracking server")
    study = optuna.load_study(study_name="refused-grid", storage=open_storage(str(journal)))
    first, *queued = study.get_trials(deepcopy=False)
    assert first.user_attrs[CRASH_ATTR].startswith("ServerRefusal: the tracking server")
    assert classify(first.state.name, first.user_attrs)[0] == "crashed"
    assert not counts_toward_budget(first.state.name, first.user_attrs)
    assert [(t.state.name, t.user_attrs.get(GRID_RERUN_ATTR)) for t in queued] == [("WAITING", 0)]
    logged = [r for r in records if "Trial 0 failed" in r.getMessage()]
    assert logged and not any(r.exc_info for r in logged), [r.getMessage() for r in logged]
