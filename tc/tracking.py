"""The only module in `tc/` that talks to MLflow: configs, metrics, checkpoints and resume state.

Everything here takes an explicit `run_id`, so the same code logs into the run `mlflow run` created, into
a training run being resumed, or (for `analyze`) into a finished training run.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tc import checkpoints as ck
from tc.config import TrainConfig, cast_field, from_strings

CONFIG_FILE = "config.json"
RESUME_FILE = "resume/state.pt"


class RunNotFoundError(LookupError):
    """No MLflow run with that id on the current tracking server."""


def client() -> MlflowClient:
    return MlflowClient()


def get_run(run_id: str) -> mlflow.entities.Run:
    try:
        return client().get_run(run_id)
    except MlflowException as e:
        raise RunNotFoundError(
            f"no MLflow run {run_id!r} at tracking URI {mlflow.get_tracking_uri()} (set MLFLOW_TRACKING_URI?)"
        ) from e


def param_str(value: Any) -> str:
    """How a config value is written as an MLflow param (as MLproject defaults spell them)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def log_config(run_id: str, cfg: Any) -> None:
    """Log the config as params (one batch) and as `config.json`.

    `mlflow run` has already logged the parameters as given, and MLflow params are immutable, so a value
    that was given in another spelling ("1e-1" for 0.1) is kept, and one that the config resolved
    (depth=0 -> the model's default) is logged beside it as `<name>_resolved`."""
    values = asdict(cfg)
    given = get_run(run_id).data.params
    params = []
    for key, value in values.items():
        if key not in given:
            params.append(Param(key, param_str(value)))
        elif cast_field(type(cfg), key, given[key]) != value:
            params.append(Param(f"{key}_resolved", param_str(value)))
    client().log_batch(run_id, params=params)
    client().log_dict(run_id, values, CONFIG_FILE)


def load_train_config(run_id: str) -> TrainConfig:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client().download_artifacts(run_id, CONFIG_FILE, tmp)
        except (MlflowException, OSError) as e:
            raise RunNotFoundError(f"run {run_id} has no {CONFIG_FILE}: was it made by `tc` train?") from e
        return from_strings(TrainConfig, json.loads(Path(path).read_text()))


def log_metrics(run_id: str, metrics: dict[str, float], step: int) -> None:
    client().log_batch(run_id, metrics=[Metric(k, float(v), int(time.time() * 1000), step) for k, v in metrics.items()])


def logged_steps(run_id: str, key: str) -> set[int]:
    return {m.step for m in client().get_metric_history(run_id, key)}


class CheckpointLogger:
    """Training callback: every checkpoint becomes an artifact under `checkpoints/`, `checkpoints/index.json`
    is re-logged after each one, and the resume state (which lists the index) is logged after it, so the
    resume state never names a checkpoint that is not yet stored."""

    def __init__(self, run_id: str, model_spec: dict, index: list[ck.IndexEntry] = ()):
        self.run_id = run_id
        self.model_spec = model_spec
        self.index = {e.step: e for e in index}
        self._tmp = tempfile.TemporaryDirectory(prefix="tc-ckpt-")
        self.dir = Path(self._tmp.name)

    def on_save(self, step: int, epoch: float, model: Any, state: dict, checkpoint: bool) -> None:
        if checkpoint:
            entry = ck.save_checkpoint(self.dir, step, epoch, self.model_spec, model.state_dict())
            client().log_artifact(self.run_id, str(self.dir / entry.file), ck.ARTIFACT_DIR)
            (self.dir / entry.file).unlink()
            self.index[step] = entry
            index_path = ck.write_index(self.dir, list(self.index.values()))
            client().log_artifact(self.run_id, str(index_path), ck.ARTIFACT_DIR)
        resume_path = self.dir / Path(RESUME_FILE).name
        ck.atomic_save({**state, "index": [asdict(e) for e in self.index.values()]}, resume_path)
        client().log_artifact(self.run_id, str(resume_path), str(Path(RESUME_FILE).parent))

    def on_epoch_end(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        log_metrics(self.run_id, metrics, step)


def load_resume_state(run_id: str) -> dict | None:
    """The last resume state of a run, or None if it was killed before its first checkpoint."""
    names = {f.path for f in client().list_artifacts(run_id, str(Path(RESUME_FILE).parent))}
    if RESUME_FILE not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return ck.safe_load(client().download_artifacts(run_id, RESUME_FILE, tmp))


def download_checkpoints(run_id: str, cache: Path) -> list[tuple[ck.IndexEntry, Path]]:
    """Fetch a run's checkpoints through MLflow (any tracking URI) into `cache/<run_id>/`, verifying every
    file against the sha256 in `checkpoints/index.json`. Files already cached with the right hash are not
    downloaded again; a cached file with the wrong hash is replaced."""
    get_run(run_id)
    target = Path(cache) / run_id
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            index_path = client().download_artifacts(run_id, f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}", tmp)
        except (MlflowException, OSError) as e:
            raise ck.CheckpointError(
                f"run {run_id} has no {ck.ARTIFACT_DIR}/{ck.INDEX_FILE}: it logged no checkpoints to analyze"
            ) from e
        entries = ck.read_index(index_path)
        out = []
        for e in entries:
            local = target / e.file
            if not (local.is_file() and ck.sha256(local) == e.sha256):
                fetched = Path(client().download_artifacts(run_id, f"{ck.ARTIFACT_DIR}/{e.file}", tmp))
                if ck.sha256(fetched) != e.sha256:
                    raise ck.CheckpointError(
                        f"run {run_id}: {e.file} does not match its sha256 in the index (tampered or truncated)"
                    )
                fetched.replace(local)
            out.append((e, local))
    return out


ANALYSIS_DIR = "analysis"


def previous_analysis_metrics(run_id: str) -> set[str]:
    """Metric names the last analysis of `run_id` logged (from its analysis/summary.json), if any."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client().download_artifacts(run_id, f"{ANALYSIS_DIR}/summary.json", tmp)
        except (MlflowException, OSError):
            return set()
        return set(json.loads(Path(path).read_text()).get("metrics", {}))


def log_analysis(run_id: str, local_dir: Path, metrics: dict[str, float], step: int, config: dict) -> None:
    """Log an analysis into `run_id` so that the run holds one coherent result: the files replace those of
    any earlier analysis (same names), its metrics become the latest values, and a metric an earlier
    analysis logged but this one does not (another cut, say) gets NaN as its latest value, not a stale one."""
    stale = previous_analysis_metrics(run_id) - set(metrics)
    log_metrics(run_id, {**metrics, **{k: float("nan") for k in stale}}, step)
    client().log_artifacts(run_id, str(local_dir), ANALYSIS_DIR)
    client().set_tag(run_id, "tc.analysis", json.dumps(config)[:5000])


def seconds_per_epoch(run_id: str) -> float | None:
    """Wall time of one training epoch, from the timestamps of the run's per-epoch metrics (the first epoch
    is timed from the run's start). None when the run logged no epoch."""
    history = sorted(client().get_metric_history(run_id, "epoch"), key=lambda m: m.step)
    if not history:
        return None
    start = get_run(run_id).info.start_time
    return (history[-1].timestamp - start) / 1000 / len(history)
