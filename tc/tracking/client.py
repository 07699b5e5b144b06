"""MLflow access for the rest of `tc.tracking`: the client, runs by id, a run's params, config and metrics,
child runs and how runs end, the default experiment.

Everything takes an explicit `run_id`, so the same code logs into the run `mlflow run` created, into a training
run being resumed, or (for `analyze`) into a finished training run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tc.config import TrainConfig, cast_field, from_strings
from tc.tracking import labels
from tc.tracking.access import raise_if_refused
from tc.tracking.secrets import mask_config, mask_text, mask_url

CONFIG_FILE = "config.json"  # the resolved config of a run, as `asdict(cfg)` (`log_config`)


class RunNotFoundError(LookupError):
    """No MLflow run with that id on the current tracking server."""


def client() -> MlflowClient:
    return MlflowClient()


def get_run(run_id: str) -> mlflow.entities.Run:
    try:
        return client().get_run(run_id)
    except MlflowException as e:
        raise_if_refused(e)  # a server that refuses us is not a missing run (tc.tracking.access)
        raise RunNotFoundError(
            f"no MLflow run {run_id!r} at tracking URI {mask_url(mlflow.get_tracking_uri())} (set MLFLOW_TRACKING_URI?)"
        ) from e


def artifact_repo(run_id: str):
    """The artifact repository of run `run_id`, for what `MlflowClient` cannot do: deleting artifacts."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(get_run(run_id).info.artifact_uri)


def param_str(value: Any) -> str:
    """How a config value is written as an MLflow param (as MLproject defaults spell them)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@contextlib.contextmanager
def nested_run(tags: dict[str, str] | None = None, run_name: str | None = None) -> Iterator[str]:
    """A child run of the active run (the run id), ended FINISHED, or FAILED when the block raises, unless
    `end_active_run` ended it already (a failed or pruned sweep trial). Without an active run it is a run of
    its own: the one `mlflow run` created (MLFLOW_RUN_ID), or a new one."""
    with mlflow.start_run(nested=True, run_name=run_name, tags=tags) as run:
        yield run.info.run_id


def log_config(run_id: str, cfg: Any, names: Sequence[str] | None = None) -> None:
    """Log the config as params (`log_params`) and as `config.json`: every field, or only the fields `names` (a
    run logged from a user's own loop holds the settings its user gave, `tc.log_run_info`); passwords masked
    (`tc.tracking.secrets`)."""
    log_params(run_id, cfg, names)
    values = asdict(cfg)
    client().log_dict(run_id, mask_config(values if names is None else {k: values[k] for k in names}), CONFIG_FILE)


def log_params(run_id: str, cfg: Any, names: Sequence[str] | None = None) -> None:
    """Log every field of the config (or only the fields `names`) as a param (one batch), so that runs compare by
    them in the UI.

    `mlflow run` has already logged the parameters as given, and MLflow params are immutable, so a value
    that was given in another spelling ("1e-1" for 0.1) is kept, and one that the config resolved
    (depth=0 -> the model's default) is logged beside it as `<name>_resolved`; so is one the run holds under
    the same name but that is no value of the field (a user's own param: its loop may log any).
    Passwords in values are masked."""
    values = asdict(cfg)
    given = get_run(run_id).data.params
    params = []
    for key in values if names is None else names:
        value = values[key]
        if key not in given:
            params.append(Param(key, mask_text(param_str(value))))
        elif _cast_or_none(type(cfg), key, given[key]) != value:
            params.append(Param(f"{key}_resolved", mask_text(param_str(value))))
    client().log_batch(run_id, params=params)


def _cast_or_none(cls: type, key: str, raw: str) -> Any:
    """`raw` cast to field `key` of `cls`; None (no match) when it is no value of that field."""
    try:
        return cast_field(cls, key, raw)
    except ValueError:
        return None


def load_train_config(run_id: str, unlogged: list[str] | None = None) -> TrainConfig:
    """The `TrainConfig` of training run `run_id`, from its `config.json`. tc's `train` logs every field; a run
    logged from a user's own loop (`tc.log_run_info`) only those its user gave: the others take their defaults
    here, and `unlogged`, when given, receives their names (so that an analysis can say what it assumed)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client().download_artifacts(run_id, CONFIG_FILE, tmp)
        except (MlflowException, OSError) as e:
            raise_if_refused(e)
            raise RunNotFoundError(f"run {run_id} has no {CONFIG_FILE}: was it made by `tc` train?") from e
        values = json.loads(Path(path).read_text())
    cfg = from_strings(TrainConfig, values)
    if unlogged is not None:
        unlogged += [name for name in asdict(cfg) if name not in values]
    return cfg


def log_metrics(run_id: str, metrics: dict[str, float], step: int) -> None:
    client().log_batch(run_id, metrics=[Metric(k, float(v), int(time.time() * 1000), step) for k, v in metrics.items()])


def logged_steps(run_id: str, key: str) -> set[int]:
    return {m.step for m in client().get_metric_history(run_id, key)}


def metric_curve(run_id: str, key: str) -> tuple[tuple[int, float], ...]:
    """Every (step, value) run `run_id` logged for metric `key`, by step (a step logged twice: the last value
    logged); () when it logged none."""
    history = sorted(client().get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return tuple(dict((m.step, m.value) for m in history).items())


def seconds_per_epoch(run_id: str) -> float | None:
    """Active training time of one epoch: the last `train_seconds` (time spent training, summed over every
    resumed part; `tc.core.train`) over the epochs logged, when every epoch logged it. Runs that lack it for some
    epoch (trained by an older tc, or resumed by a newer one from an older tc's state, whose time is lost)
    fall back to the timestamps of the per-epoch metrics, the first epoch timed from the run's start, which
    also counts any downtime before a resume. None when the run logged no epoch."""
    history = sorted(client().get_metric_history(run_id, "epoch"), key=lambda m: m.step)
    if not history:
        return None
    seconds = sorted(client().get_metric_history(run_id, "train_seconds"), key=lambda m: m.step)
    if {m.step for m in seconds} == {m.step for m in history}:
        return seconds[-1].value / len(history)
    start = get_run(run_id).info.start_time
    return (history[-1].timestamp - start) / 1000 / len(history)


def seed_runs(run_id: str) -> list[str]:
    """The runs of the same configuration at other seeds, tagged `tc.seed_of`: `run_id` (a sweep with
    seeds=2), in run `run_id`'s experiment."""
    experiment = get_run(run_id).info.experiment_id
    return [r.info.run_id for r in client().search_runs([experiment], f"tags.`tc.seed_of` = '{run_id}'")]


def end_active_run(status: str, tags: dict[str, str]) -> None:
    """Tag the active run and end it with `status` (FAILED, KILLED). A sweep trial's runs end by id
    (`end_run`): this one ends whichever run is active."""
    mlflow.set_tags(mask_config(tags))  # error texts can quote a URL
    mlflow.end_run(status)


def end_run(run_id: str, status: str, tags: dict[str, str]) -> None:
    """Tag run `run_id` and end it with `status` (FAILED, KILLED), and never another run: through
    `mlflow.end_run` only while it is the active run (so it leaves the stack of active runs), else by id.
    `mlflow.end_run` pops the run before marking it, so after a failed attempt the active run is the parent,
    and a second `end_active_run` would end that."""
    client().log_batch(run_id, tags=[mlflow.entities.RunTag(k, mask_text(v)) for k, v in tags.items()])
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:
        client().set_terminated(run_id, status)


def use_default_experiment() -> None:
    """Put new runs into the `tc` experiment unless the user chose one (MLFLOW_EXPERIMENT_NAME or _ID), or
    `mlflow run` already created the run (MLFLOW_RUN_ID: it is in the experiment its --experiment-name chose)."""
    if not any(os.environ.get(k) for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")):
        mlflow.set_experiment(labels.EXPERIMENT)
