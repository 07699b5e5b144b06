"""The tracking server's refusals, as one line that says what to do.

A team's server (MLflow's basic-auth app, docs/scaling.md) answers 401 to a client without credentials or with
wrong ones, and 403 to a user without permission on the experiment. MLflow turns these into an
`MlflowException` (error code UNAUTHENTICATED or PERMISSION_DENIED) for the REST API, or a
`requests.HTTPError` for proxied artifacts, often wrapped in further exceptions and always with a long
traceback. Where tc talks to the server itself, that becomes a `ServerRefusal` whose text is one line:

- the commands (`entrypoints/*.py`, `exit_on_refusal`): the line on stderr, no traceback, exit code 1;
- the own-loop API (`tc.log_run_info`, `tc.CheckpointLogger`, `tc.log_checkpoint`: `one_line_refusals`): a
  `ServerRefusal` raised from nothing, so the MLflow chain does not bury the line;
- where tc turns MLflow errors into its own ("no such run", "no checkpoints"), `raise_if_refused` first, so a
  refusal is never reported as a missing run.

What `mlflow run` does before tc starts (creating the run) is refused by MLflow itself, with its own message.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from tc.tracking.secrets import mask_url

F = TypeVar("F", bound=Callable[..., Any])

#: MLflow's error codes for HTTP 401 and 403
STATUS_OF_CODE = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}


class ServerRefusal(Exception):
    """The tracking server refused a request: `status` 401 (no or wrong credentials) or 403 (the user lacks
    permission). `str()` is one line naming what to set or whom to ask."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _status(e: BaseException) -> int | None:
    if isinstance(e, MlflowException):
        return STATUS_OF_CODE.get(e.error_code)
    response = getattr(e, "response", None)  # requests.HTTPError (proxied artifacts) carries the response
    code = getattr(response, "status_code", None)
    return code if code in (401, 403) else None


def _credentials() -> tuple[str | None, str | None]:
    """(user name, password) as MLflow's client sends them: MLFLOW_TRACKING_USERNAME/PASSWORD, else
    ~/.mlflow/credentials."""
    from mlflow.utils.credentials import read_mlflow_creds

    creds = read_mlflow_creds()
    return creds.username, creds.password


def refusal_message(status: int) -> str:
    """tc's line for a 401 or 403 from the current tracking server (its URL masked; never the password)."""
    uri = mask_url(mlflow.get_tracking_uri())
    user, password = _credentials()
    if status == 403:
        return (
            f"the tracking server {uri} denied user {user!r} permission for this: an admin of the server must "
            "grant that user EDIT on the experiment (to log runs into it) or READ (to analyze its runs); "
            "see docs/scaling.md"
        )
    if not user and not password:
        return (
            f"the tracking server {uri} asks for credentials and got none: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD in the environment (or write them to ~/.mlflow/credentials), never "
            "as -P parameters"
        )
    return (
        f"the tracking server {uri} refused the credentials of user {user!r}: check MLFLOW_TRACKING_USERNAME "
        "and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)"
    )


def refusal(e: BaseException) -> ServerRefusal | None:
    """The `ServerRefusal` that `e` is, or that an exception it was raised from or while handling is (MLflow
    wraps HTTP errors); None when nothing in its chain is a 401 or 403."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, ServerRefusal):
            return x
        if (status := _status(x)) is not None:
            return ServerRefusal(refusal_message(status), status)
        todo += [x.__cause__, x.__context__]
    return None


def raise_if_refused(e: BaseException) -> None:
    """Raise the `ServerRefusal` in `e`'s chain, if any (without the chain: the line says it all)."""
    if (r := refusal(e)) is not None:
        raise r from None


def one_line_refusals(func: F) -> F:
    """For the public API: a refusal raised inside `func` comes out as a `ServerRefusal` without MLflow's
    chain of exceptions behind it."""

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ServerRefusal:
            raise
        except Exception as e:
            raise_if_refused(e)
            raise

    return call  # type: ignore[return-value]


def exit_on_refusal(prog: str) -> Callable[[F], F]:
    """For a command's `main(argv) -> int`: a refusal anywhere in it prints `<prog>: <tc's line>` on stderr and
    returns 1, with no traceback; any other exception propagates as before."""

    def wrap(main: F) -> F:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return main(*args, **kwargs)
            except Exception as e:
                if (r := refusal(e)) is None:
                    raise
                print(f"{prog}: {r}", file=sys.stderr, flush=True)
                return 1

        return run  # type: ignore[return-value]

    return wrap
