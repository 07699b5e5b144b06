"""A training run's resume state (`resume/state.pt`): read, checked as the run data it is, and deleted.

The training callback (`tc.tracking.checkpoints.CheckpointCallback`) logs the state after every checkpoint; a
killed run is continued from it (`tc.tracking.jobs.train_job(resume_run_id=...)`), and a finished run's state
is deleted. Every field a resume uses is checked here before the run is claimed or written to.
"""

from __future__ import annotations

import math
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from mlflow.exceptions import MlflowException

from tc.core import checkpoints as ck
from tc.core.train import rng_streams
from tc.tracking.client import artifact_repo, client, get_run
from tc.tracking.writers import live_writer

RESUME_FILE = "resume/state.pt"
RESUME_NOT_EXACT_TAG = "tc.resume_not_exact"  # why a resumed run may differ from an uninterrupted one


def check_resumable(run_id: str) -> None:
    """Refuse (ValueError) to resume run `run_id` when it is FINISHED or still has a live writer."""
    run = get_run(run_id)
    if run.info.status == "FINISHED":
        raise ValueError(f"run {run_id} already FINISHED: nothing to resume")
    if why := live_writer(run):
        raise ValueError(f"run {run_id} is RUNNING and has a live writer ({why}): not resuming it")


def load_resume_state(run_id: str) -> dict | None:
    """The last resume state of a run, or None if it was killed before its first checkpoint."""
    names = {f.path for f in client().list_artifacts(run_id, str(Path(RESUME_FILE).parent))}
    if RESUME_FILE not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return ck.safe_load(client().download_artifacts(run_id, RESUME_FILE, tmp))
        except ck.CheckpointError as e:  # name the artifact, not the temporary copy
            raise ck.CheckpointError(f"run {run_id}: {RESUME_FILE} {str(e).replace(tmp, '').split(': ', 1)[-1]}") from e


def delete_resume_state(run_id: str) -> bool:
    """Remove `resume/` from a run that finished: it only serves to continue a killed run, a finished run
    cannot be resumed, and it is about a quarter of a small run's artifacts. Best effort: artifact stores
    without deletion (some object stores behind a proxy) keep it; returns whether it was deleted."""
    try:
        artifact_repo(run_id).delete_artifacts(str(Path(RESUME_FILE).parent))
        return True
    except (NotImplementedError, MlflowException, OSError):
        return False


def resume_index(run_id: str, raw: object) -> list[ck.IndexEntry]:
    """The index of a resume state, each entry checked as `checkpoints/index.json`'s are (`check_entry`): it is
    run data, written back as the run's index, whose names later become paths."""
    if not isinstance(raw, list):
        raise ck.CheckpointError(f"run {run_id}: {RESUME_FILE} holds no list of index entries")
    entries, seen = [], set()
    for i, e in enumerate(raw):
        try:
            entry = ck.check_entry(e)
        except ValueError as err:
            raise ck.CheckpointError(f"run {run_id}: {RESUME_FILE} index entry {i} {err}") from None
        if entry.step in seen:  # as `read_index` refuses it in checkpoints/index.json
            where = f"run {run_id}: {RESUME_FILE} index entry {i}"
            raise ck.CheckpointError(f"{where} is for step {entry.step} again")
        seen.add(entry.step)
        entries.append(entry)
    return entries


def check_rng_state(run_id: str, raw: object) -> None:
    """The `rng` of a resume state (`tc.core.train.rng_state`), checked before the run is claimed or written to: it
    is run data, and a malformed one would otherwise fail in `restore_rng_state` mid-resume. Each stream is
    set on a throwaway generator, so the values are checked as the resume will use them (the CUDA state only
    by type: no device is needed to check a run). None or empty (an older tc) is fine: the resume warns."""
    if raw is None or raw == {}:
        return
    try:
        torch_state, python_state, numpy_state, _ = rng_streams(raw)
        torch.Generator().set_state(torch_state)
        random.Random().setstate(python_state)
        np.random.RandomState().set_state(numpy_state)
    except (ValueError, TypeError, OverflowError, RuntimeError, IndexError) as e:  # the setters' refusals
        why = str(e)[:300] if str(e).startswith("rng ") else f"rng: {str(e)[:300]}"
        raise ck.CheckpointError(f"run {run_id}: {RESUME_FILE} {why}") from None


def check_train_seconds(run_id: str, raw: object) -> float:
    """The `train_seconds` of a resume state as a finite float >= 0 (absent: 0, an older tc), else
    CheckpointError: it becomes the run's logged training time."""
    if raw is None:
        return 0.0
    if type(raw) is bool or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw < 0:
        raise ck.CheckpointError(f"run {run_id}: {RESUME_FILE} train_seconds {str(raw)[:100]!r} is not a time")
    return float(raw)
