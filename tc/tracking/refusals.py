"""What a refused command leaves behind: one FAILED run named `refused: <reason>` with the whole message in its
tag `tc.error`, one line on stderr, and exit code 2. The one owner of that policy: every entry point and both
jobs (`tc.tracking.jobs`) call it.

A command is *refused* when tc will not do what it was asked: a parameter it does not take or a value out of
range, a search space the data cannot satisfy, a run it cannot use (unknown, unfinished, not tc's, a checkpoint
that fails its check), a data set it cannot find. `mlflow run` creates the command's run before tc starts, so a
refusal cannot leave no run there; rather than a FAILED run with a random name and no word of why, that run
(or, when the command runs without `mlflow run`, one new run, so that both ways leave the same) becomes the
refusal's record, and one filter finds every one of them: `attributes.run_name LIKE 'refused:%'`.

A *failure* is another thing: the work started and did not finish (training diverged, a sweep stopped after
repeated crashes). Its run keeps its name, ends FAILED with `tc.error`, and the command exits 1. Anything else
(a bug) is a traceback and exit 1. A ValueError or LookupError raised once training has begun (a checkpoint
is logged) is not a refusal either: `tc.tracking.jobs.FailedDuringTraining`, a traceback and exit 1, the run
keeping its name.

Exit codes: 0 done; 1 failed; 2 refused. A tracking server that refuses the client (401/403) is not tc
refusing its input: one line and exit 1 (`tc.tracking.access`). `mlflow run` exits 1 whenever its command exits
non-zero; the run, its status, name and tags are the same both ways.
"""

from __future__ import annotations

import sys

import mlflow

from tc.core.data import DatasetNotFoundError
from tc.tracking import labels
from tc.tracking.client import client, use_default_experiment
from tc.tracking.secrets import mask_text

#: what tc raises for a request it will not carry out (a `CheckpointError` and a `CacheError` are ValueErrors,
#: a `RunNotFoundError` is a LookupError)
REFUSALS: tuple[type[BaseException], ...] = (ValueError, LookupError, DatasetNotFoundError)
REFUSED_EXIT = 2
FAILED_EXIT = 1
ERROR_TAG = "tc.error"
_MAX_TAG = 5000  # characters of `tc.error` (MLflow caps tag values; tc's messages are far shorter)


def is_refusal(e: BaseException) -> bool:
    return isinstance(e, REFUSALS)


def exit_code(e: BaseException) -> int:
    """2 for a refusal, 1 for a failure."""
    return REFUSED_EXIT if is_refusal(e) else FAILED_EXIT


def error_text(e: BaseException | str, expected: tuple[type[BaseException], ...] = REFUSALS) -> str:
    """The `tc.error` tag of a run: an expected error's own message (a refusal, or a failure the caller
    expects: `tc.tracking.jobs.TRAIN_REFUSALS`), anything else with its type; passwords masked."""
    if isinstance(e, str):
        text = e
    elif isinstance(e, expected):
        text = str(e) or type(e).__name__
    else:
        text = f"{type(e).__name__}: {e}"
    return mask_text(text)[:_MAX_TAG]  # a message can quote a storage URL: no password in a tag or a run name


def record_error(
    run_id: str, e: BaseException, expected: tuple[type[BaseException], ...] = REFUSALS, *, ours: tuple[str, ...] = ()
) -> None:
    """Say on run `run_id` why its job stopped: the tag `tc.error` (`error_text`), and for a refusal the name
    `refused: <reason>` (`tc.tracking.labels.refused_name`) in place of a name MLflow made up or one of `ours`
    (the name tc gave it, e.g. the training run's label); a name someone gave it (`--run-name`, a sweep's
    `trial N seedS`) is kept. The caller ends the run."""
    _say(run_id, error_text(e, expected), refused=is_refusal(e), ours=ours)


def _say(run_id: str, text: str, *, refused: bool, ours: tuple[str, ...] = ()) -> None:
    tags = {ERROR_TAG: text}
    if refused:
        name = client().get_run(run_id).info.run_name
        if labels.is_generated_name(name) or name in ours:
            tags["mlflow.runName"] = labels.refused_name(text)
    client().log_batch(run_id, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])


def refuse(command: str, e: BaseException | str) -> int:
    """A command refused before its run began (its parameters, its search space, ...): print `tc <command>:
    <message>` on stderr, record the refusal as one FAILED run named `refused: <reason>` (unless `--run-name`
    named it) with `tc.error` (the run `mlflow run` created, MLFLOW_RUN_ID, else a new one in tc's default
    experiment), and return the exit code 2. The record is best effort: a tracking store that cannot be reached
    is said in a second line, and the refusal stands."""
    text = error_text(e, (BaseException,))
    print(f"tc {command}: {text}", file=sys.stderr, flush=True)
    try:
        use_default_experiment()
        # resumes MLFLOW_RUN_ID under `mlflow run`; a child of a run active in this process (a caller's main())
        run = mlflow.start_run(nested=mlflow.active_run() is not None)
        try:
            _say(run.info.run_id, text, refused=True)
        finally:
            mlflow.end_run("FAILED")
    except Exception as err:  # a tracking store that is down must not hide the refusal itself
        not_recorded = mask_text(f"{type(err).__name__}: {err}")  # MLflow's error names the URL it requested
        print(f"tc {command}: (this refusal is not recorded in MLflow: {not_recorded})", file=sys.stderr)
    return REFUSED_EXIT
