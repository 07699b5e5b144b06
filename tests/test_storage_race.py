"""Workers that start together on a fresh database race to create Optuna's tables: on PostgreSQL the loser got
`IntegrityError: duplicate key ... pg_type_typname_nsp_index` (CREATE TYPE studydirection) and its sweep
stopped with "cannot open this database" (found by tests/test_auth_server.py's two workers). `open_storage`
tries again on such an error, and only on such an error."""

from __future__ import annotations

import optuna
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from tc.sweep import study as studies


def _flaky(monkeypatch, error: Exception, failures: int) -> list[int]:
    calls: list[int] = []
    real = optuna.storages.RDBStorage.__init__

    def init(self, url, **kwargs):
        calls.append(1)
        if len(calls) <= failures:
            raise error
        real(self, url, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "__init__", init)
    monkeypatch.setattr(studies.time, "sleep", lambda s: None)
    return calls


def test_a_worker_that_lost_the_race_for_the_tables_opens_them_next_time(monkeypatch, tmp_path):
    race = IntegrityError("CREATE TYPE studydirection", {}, Exception("duplicate key value"))
    calls = _flaky(monkeypatch, race, failures=2)
    storage = studies.open_storage(f"sqlite:///{tmp_path}/optuna.db")
    assert len(calls) == 3
    assert optuna.create_study(storage=storage, study_name="s").study_name == "s"


def test_other_database_errors_are_not_retried(monkeypatch, tmp_path):
    refused = OperationalError("connect", {}, Exception("password authentication failed for user tc"))
    calls = _flaky(monkeypatch, refused, failures=99)
    with pytest.raises(ValueError, match="cannot open this database: OperationalError"):
        studies.open_storage("postgresql+psycopg2://tc:Zq9-pw@127.0.0.1:1/optuna")
    assert len(calls) == 1


class _PgError(Exception):
    """psycopg2's errors carry PostgreSQL's SQLSTATE as `pgcode`."""

    def __init__(self, message: str, pgcode: str | None):
        super().__init__(message)
        self.pgcode = pgcode


@pytest.mark.parametrize(
    "error, retried",
    [
        (ProgrammingError("CREATE TABLE studies", {}, _PgError('relation "studies" already exists', "42P07")), True),
        (ProgrammingError("CREATE TYPE", {}, _PgError('type "studydirection" already exists', "42710")), True),
        # not a race: a typo in the URL's options, a role that may not create tables in the schema
        (ProgrammingError("connect", {}, _PgError('invalid dsn: invalid connection option "sslmod"', None)), False),
        (ProgrammingError("CREATE TABLE", {}, _PgError("permission denied for schema public", "42501")), False),
    ],
)
def test_only_a_duplicate_table_or_type_is_a_race(monkeypatch, tmp_path, error, retried):
    calls = _flaky(monkeypatch, error, failures=1)
    if retried:
        studies.open_storage(f"sqlite:///{tmp_path}/optuna.db")
        assert len(calls) == 2
    else:
        with pytest.raises(ValueError, match="cannot open this database: ProgrammingError"):
            studies.open_storage(f"sqlite:///{tmp_path}/optuna.db")
        assert len(calls) == 1


def test_a_race_that_never_ends_is_reported(monkeypatch, tmp_path):
    race = IntegrityError("CREATE TYPE studydirection", {}, Exception("duplicate key value"))
    calls = _flaky(monkeypatch, race, failures=99)
    with pytest.raises(ValueError, match="cannot open this database: IntegrityError") as info:
        studies.open_storage("postgresql+psycopg2://tc:Zq9-pw@127.0.0.1:1/optuna")
    assert len(calls) == studies.TABLE_RACE_ATTEMPTS
    assert "Zq9-pw" not in str(info.value) and "tc:***@127.0.0.1" in str(info.value)  # masked (tc.tracking.secrets)
