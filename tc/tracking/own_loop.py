"""Logging from the user's own training loop (`tc.log_run_info`, `tc.CheckpointLogger`, `tc.log_checkpoint`).

A run logged this way holds what `analyze` needs: the settings the user gave (params and `config.json`, nothing
else: a setting the loop never stated stays unset), the name, tags and description, and checkpoints in tc's
format (`checkpoints/step_XXXXXXXX.pt`, `checkpoints/index.json`).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import mlflow
import torch

from tc.config import TrainConfig, from_strings
from tc.core import checkpoints as ck
from tc.core.data import load_for
from tc.core.fx_stages import block_state_dict
from tc.core.models import ModelSpec, build_model, factory_for
from tc.tracking import labels, ui
from tc.tracking.access import one_line_refusals
from tc.tracking.analyses import current_analysis_metrics
from tc.tracking.checkpoints import checkpoint_index
from tc.tracking.client import CONFIG_FILE, client, load_train_config, log_config

# Per run, in this process: the config, the architecture, a staged model to map state dicts onto, and the
# run's checkpoint index (as logged so far, also by an earlier process of a resumed loop). A user model's
# factory is imported only from the name the user passed to `log_run_info` here, never from what a run's
# artifacts say.
_OWN_RUNS: dict[str, dict] = {}


def _active_run_id(run_id: str | None) -> str:
    if run_id:
        return run_id
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: call this inside `with mlflow.start_run():` (or pass run_id=)")
    return run.info.run_id


@one_line_refusals  # a server's 401/403 as tc's one line (tc.tracking.access), here and below
def log_run_info(
    model: str, dataset: str, *, run_id: str | None = None, data: Any = None, **settings: Any
) -> TrainConfig:
    """Record in the active MLflow run what `analyze` needs to rebuild a run trained by your own loop.

    `model`: a tc zoo name (`resnet20`, `vgg`, `mlp`), `torchvision:<name>` or your `module:function` factory;
    `dataset`: a tc data set name (`digits`, `fashion-mnist`, ...); `settings`: any other `TrainConfig` field
    that describes your training (`epochs`, `batch_size`, `lr`, `seed`, `train_size`, `width`, `depth`, ...;
    analyze uses `train_size`, `seed` and `label_noise` to draw the same training subset, and `batch_size` for
    the gradient-noise minibatches). Logs `model`, `dataset` and the settings you give as params and
    `config.json`, and no other: a setting you did not give (an optimizer, a schedule your loop never had) stays
    unset, and analyze names each default it assumes where it needs one. A resumed loop's call keeps the
    settings an earlier call logged. Also the run's name, tags and description, as tc's own `train` logs them.
    `data`: the `tc.core.data.DataBundle` if you loaded it already (saves loading it again). Returns the
    `TrainConfig` (tc's defaults where you gave nothing: what builds tc's staged copy of the model).

    Example (inside a run; your own loop trains tc's `mlp`):

    >>> import mlflow, tc
    >>> with mlflow.start_run() as run:
    ...     cfg = tc.log_run_info(model="mlp", dataset="digits", width=16, train_size=96, epochs=1, batch_size=32)
    >>> cfg.model, cfg.width, cfg.batch_size
    ('mlp', 16, 32)
    >>> sorted(mlflow.get_run(run.info.run_id).data.params)  # what was given, no lr, momentum or schedule
    ['batch_size', 'dataset', 'epochs', 'model', 'train_size', 'width']
    """
    rid = _active_run_id(run_id)
    given = {**_earlier_settings(rid), "model": model, "dataset": dataset, **settings}
    cfg = from_strings(TrainConfig, given)
    # The staged copy's initial weights are drawn from a forked stream: the user's loop, seeded or restored
    # before this call, then draws exactly what it would without it (a restored loop stays exact). Only CUDA
    # devices already in use can hold a stream of the loop's, so an unused GPU is not initialised for this.
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        data = data if data is not None else load_for(cfg)
        spec = ModelSpec.of(cfg, data)
        staged = build_model(spec, factory_for(cfg.model, cfg.model))  # the name the user just passed us
    index = _logged_index(rid)  # a loop resumed in a new process continues the run's index, never restarts it
    log_config(rid, cfg, list(given))  # the settings given, and no other
    client().set_tag(rid, "tc.source", "own loop (tc.log_run_info)")
    unknown = [f.name for f in fields(TrainConfig) if f.name not in given]
    ui.label_train_run(rid, cfg, unknown)
    name = labels.run_name(cfg, unknown)
    _OWN_RUNS[rid] = {"cfg": cfg, "spec": spec, "staged": staged, "index": index, "name": name}
    return cfg


def _earlier_settings(run_id: str) -> dict[str, Any]:
    """The settings an earlier `log_run_info` logged into run `run_id` (its `config.json`: a loop resumed in a
    new process), {} when it has none (looked up first: a failing download prints MLflow's progress bars)."""
    if CONFIG_FILE not in {f.path for f in client().list_artifacts(run_id)}:
        return {}
    unlogged: list[str] = []
    earlier = load_train_config(run_id, unlogged)
    return {k: v for k, v in asdict(earlier).items() if k not in unlogged}


def _logged_index(run_id: str) -> dict[int, ck.IndexEntry]:
    """Run `run_id`'s `checkpoints/index.json` by step, {} when it has none yet. Read as data: every entry
    must be an integer step under the name the filename rule gives it, or the run is refused."""
    where = f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}"
    if not any(f.path == where for f in client().list_artifacts(run_id, ck.ARTIFACT_DIR)):
        return {}
    return {e.step: e for e in checkpoint_index(run_id)}  # the one reader: every entry by the filename rule


def _own_run(run_id: str) -> dict:
    own = _OWN_RUNS.get(run_id)
    if own is None:
        raise RuntimeError(
            f"run {run_id}: call tc.log_run_info(model=..., dataset=...) in this process before logging checkpoints"
        )
    return own


def _staged_state_dict(staged: Any, state_dict: dict, name: str) -> dict:
    """Your model's state dict under the keys of tc's staged copy of it (the keys checkpoints hold), checked
    by loading it into that copy: a model that is not the named architecture fails here, at the first
    checkpoint, not at analysis time."""
    sd = state_dict
    if set(sd) != set(staged.state_dict()):
        try:
            sd = block_state_dict(staged.blocks, sd)
        except ValueError as e:
            raise ValueError(f"this model's state dict does not fit {name}: {e}") from e
    try:
        staged.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"this model's state dict does not fit {name}: {str(e)[:500]}") from e
    return sd


@one_line_refusals
def log_checkpoint(model: Any, step: int, epoch: float, *, run_id: str | None = None) -> ck.IndexEntry:
    """Log `model`'s weights at global optimizer step `step` (and `epoch`, fractional if mid-epoch) into the
    active run in tc's format: `checkpoints/step_XXXXXXXX.pt` (tensors only) and a re-logged
    `checkpoints/index.json` with every checkpoint's step, epoch, file and sha256. Call `log_run_info` first.
    Log step 0 (before training) too: analyze needs the initialisation and at least two checkpoints
    (`tc.CheckpointLogger` logs step 0 itself when it is created). A step logged
    already is never overwritten: the same weights (and epoch) again return its entry; other ones raise
    `ValueError`.

    Example:

    >>> import mlflow, tc
    >>> data = tc.load_data("digits", train_size=64)
    >>> model = tc.build_model(tc.ModelSpec.of(tc.TrainConfig(dataset="digits", model="mlp", width=16), data))
    >>> with mlflow.start_run():
    ...     _ = tc.log_run_info(model="mlp", dataset="digits", data=data, width=16, train_size=64)
    ...     entry = tc.log_checkpoint(model, step=0, epoch=0.0)  # the initialisation
    >>> entry.step
    0
    """
    rid = _active_run_id(run_id)
    own = _own_run(rid)
    sd = _staged_state_dict(own["staged"], model.state_dict(), own["cfg"].model)
    with tempfile.TemporaryDirectory(prefix="tc-ckpt-") as tmp:
        entry = ck.save_checkpoint(tmp, step, epoch, own["spec"].to_dict(), sd)
        logged = own["index"].get(entry.step)
        if logged is not None:
            if logged.sha256 != entry.sha256:  # e.g. trained weights logged as a resumed run's step 0
                raise ValueError(
                    f"run {rid}: step {entry.step} is logged already with other weights or epoch (sha256 "
                    f"{logged.sha256[:12]}..., these {entry.sha256[:12]}...); a logged checkpoint is never "
                    "overwritten: log the weights under a new step"
                )
            return logged
        client().log_artifact(rid, str(Path(tmp) / entry.file), ck.ARTIFACT_DIR)
        own["index"][entry.step] = entry
        client().log_artifact(rid, str(ck.write_index(tmp, list(own["index"].values()))), ck.ARTIFACT_DIR)
    return entry


class CheckpointLogger:
    """`tc.CheckpointLogger(model, every=N)`: create it after `log_run_info` and before your first optimizer
    step. On a run with no checkpoint yet it logs the model's weights as they are then as step 0 (the
    initialisation: analyze needs it, e.g. for the early checkpoints and `gm_dist_init`), so a loop cannot
    forget it. On a run that has checkpoints (a loop resumed, in this process or a new one after
    `log_run_info`) it logs nothing: the weights are no longer the initialisation, and the run's step 0, if
    any, stays as it is. Call `.step(step, epoch)` after every optimizer step of your loop: every N-th step
    not in the run's index yet is logged with `log_checkpoint` (an explicit `.step(0, 0.0)` is not logged
    twice). Call `.close(step, epoch)` after the loop to log the final step too (if `every` did not land on
    it) and refresh the run's description. `.logged`: the steps in the run's index.

    Example (step 0 is logged when the logger is created, then every 2nd step and the last):

    >>> import mlflow, torch, tc
    >>> data = tc.load_data("digits", train_size=96)
    >>> model = tc.build_model(tc.ModelSpec.of(tc.TrainConfig(dataset="digits", model="mlp", width=16), data))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with mlflow.start_run() as run:
    ...     _ = tc.log_run_info(model="mlp", dataset="digits", data=data, width=16, train_size=96, batch_size=32)
    ...     ckpt = tc.CheckpointLogger(model, every=2)
    ...     for step in range(1, 4):
    ...         x, y = data.train_x[32 * (step - 1) : 32 * step], data.train_y[32 * (step - 1) : 32 * step]
    ...         loss = torch.nn.functional.cross_entropy(model(data.normalize(x)), y)
    ...         opt.zero_grad(); loss.backward(); opt.step()
    ...         _ = ckpt.step(step, epoch=step / 3)  # the entry it logged, or None
    ...     ckpt.close(3, epoch=1.0)
    >>> from tc.tracking.checkpoints import checkpoint_index
    >>> [entry.step for entry in checkpoint_index(run.info.run_id)]
    [0, 2, 3]
    """

    @one_line_refusals
    def __init__(self, model: Any, every: int = 1, *, run_id: str | None = None):
        if every < 1:
            raise ValueError(f"every={every}: log a checkpoint every >= 1 optimizer steps")
        self.model, self.every, self.run_id = model, int(every), _active_run_id(run_id)
        index = _own_run(self.run_id)["index"]
        if not index:
            log_checkpoint(self.model, 0, 0.0, run_id=self.run_id)
        elif 0 not in index:
            warnings.warn(
                f"run {self.run_id} has checkpoints but none at step 0 and the model is past its initialisation: "
                "no step 0 is logged, and analyze reports gm_dist_init as NaN",
                stacklevel=2,
            )

    @property
    def logged(self) -> list[int]:
        """The steps the run's checkpoint index holds, in order (those logged by earlier processes too)."""
        return sorted(_own_run(self.run_id)["index"])

    def step(self, step: int, epoch: float) -> ck.IndexEntry | None:
        """Log the weights after optimizer step `step` when it is a multiple of `every` not logged yet."""
        if step % self.every or step in _own_run(self.run_id)["index"]:
            return None
        return log_checkpoint(self.model, step, epoch, run_id=self.run_id)

    @one_line_refusals
    def close(self, step: int, epoch: float) -> None:
        """After the loop: log the final step `step` unless logged already, and refresh the description."""
        if step not in _own_run(self.run_id)["index"]:
            log_checkpoint(self.model, step, epoch, run_id=self.run_id)
        ui.describe_train_run(self.run_id, current_analysis_metrics(self.run_id))
