"""Checkpoint schema, file names, safe loading and the index.

A checkpoint is plain data: `{"format", "step", "epoch", "model_spec", "state_dict"}` with tensors and
builtins only, so `torch.load(weights_only=True)` reads it and no code from an artifact store ever runs.
One integer, the global optimizer step, names the file and keys the index. `checkpoints/index.json` lists
every checkpoint with its epoch, file name and sha256, which `analyze` uses to verify downloads.

An artifact store is an attack surface: anyone who can log a run can write any index. So a name read from a
run becomes a path only if it is exactly what `filename` makes of the entry's step (`read_index` checks every
entry before anything is downloaded), and a payload must hold the step its index entry names.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import operator
import os
import pickle
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tc.core import names

FORMAT = "tc-checkpoint/1"
INDEX_FILE = "index.json"
ARTIFACT_DIR = "checkpoints"


StateDict = dict[str, torch.Tensor]

INIT_STEP = 0  # the initialisation θ_0: the weights before the first optimizer step


def init_index(steps: list[int]) -> int | None:
    """The one rule for "which checkpoint is θ_0": the position of step `INIT_STEP` in `steps`, None when the
    run (or the selection) has no such step. Never the first step listed: a selection may start later."""
    return steps.index(INIT_STEP) if INIT_STEP in steps else None


@dataclass
class Checkpoints:
    """A run's checkpoints in step order: `state_dicts[i]` was saved after `steps[i]` optimizer steps.

    Example:

    >>> import torch, tc
    >>> ckpts = tc.Checkpoints(steps=[0, 10], state_dicts=[{"w": torch.zeros(2)}, {"w": torch.ones(2)}])
    >>> ckpts.steps[-1], ckpts.state_dicts[-1]["w"].tolist()
    (10, [1.0, 1.0])
    """

    steps: list[int]
    state_dicts: list[StateDict]


class CheckpointError(ValueError):
    """A checkpoint file that is missing, tampered with, not plain data, or of another format."""


_SHA256 = re.compile(r"[0-9a-f]{64}")


def filename(step: int) -> str:
    """The one rule for checkpoint names: `step_<step>.pt`, the global optimizer step zero padded to 8 digits
    so that lexical order equals step order. A step is an integer >= 0."""
    if isinstance(step, bool) or not hasattr(type(step), "__index__") or operator.index(step) < 0:
        raise ValueError(f"step={step!r}: a checkpoint's step is an integer >= 0 (the global optimizer step)")
    return f"step_{operator.index(step):08d}.pt"


@dataclass(frozen=True)
class IndexEntry:
    step: int
    epoch: float  # fractional when checkpoint_every does not divide an epoch
    file: str
    sha256: str


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a file under `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    tmp.replace(path)


def save_checkpoint(
    directory: str | Path, step: int, epoch: float, model_spec: dict, state_dict: dict[str, torch.Tensor]
) -> IndexEntry:
    """Write the checkpoint for `step` into `directory`; returns its index entry."""
    path = Path(directory) / filename(step)
    payload = {
        "format": FORMAT,
        "step": int(step),
        "epoch": float(epoch),
        "model_spec": dict(model_spec),
        "state_dict": {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()},
    }
    atomic_save(payload, path)
    return IndexEntry(step=int(step), epoch=float(epoch), file=path.name, sha256=sha256(path))


def safe_load(path: str | Path) -> Any:
    """torch.load with weights_only=True, never falling back to unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load, it holds more than tensors and builtins ({e})") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable torch file (truncated or corrupted?): {e}") from e


def load_checkpoint(path: str | Path, expected_sha256: str | None = None) -> dict:
    """Load and check one checkpoint. With `expected_sha256`, the file's hash must match first."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if expected_sha256 is not None and (actual := sha256(path)) != expected_sha256:
        raise CheckpointError(f"{path}: sha256 {actual[:12]}… does not match the index ({expected_sha256[:12]}…)")
    payload = safe_load(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    return payload


def write_index(directory: str | Path, entries: list[IndexEntry]) -> Path:
    path = Path(directory) / INDEX_FILE
    body = {"format": FORMAT, "checkpoints": [asdict(e) for e in sorted(entries, key=lambda e: e.step)]}
    path.write_text(json.dumps(body, indent=1))
    return path


def read_index(path: str | Path) -> list[IndexEntry]:
    """The entries of an index file, each checked by `check_entry` (a name that is not `filename(step)` is
    refused here, before any caller can make it a path), with no step listed twice."""
    if not Path(path).is_file():  # e.g. a run that logged a directory named index.json
        raise CheckpointError(f"{path}: is a directory or missing, not an index file")
    try:
        body = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} index")
    if not isinstance(body.get("checkpoints"), list):
        raise CheckpointError(f"{path}: malformed {FORMAT} index (no list of checkpoints)")
    entries, seen = [], set()
    for i, raw in enumerate(body["checkpoints"]):
        try:
            entry = check_entry(raw)
        except ValueError as e:
            raise CheckpointError(f"{path}: entry {i} {e}") from None
        if entry.step in seen:
            raise CheckpointError(f"{path}: entry {i} is for step {entry.step} again: the index lists a step twice")
        seen.add(entry.step)
        entries.append(entry)
    return entries


def check_entry(raw: Any) -> IndexEntry:
    """An index entry from its JSON object, or ValueError saying what is wrong (the message starts with a verb,
    to follow "entry <i>"). Its file must be `filename(step)` exactly: the only names tc reads or writes.
    Unknown extra keys (a newer writer's) are ignored: they never become paths or anything else."""
    fields = sorted(IndexEntry.__dataclass_fields__)
    if not isinstance(raw, dict):
        raise ValueError(f"is not an object with the fields {fields}: {str(raw)[:200]!r}")
    if missing := [f for f in fields if f not in raw]:
        raise ValueError(f"lacks the field(s) {missing} (an entry has {fields}): {str(raw)[:200]!r}")
    step, epoch, file, digest = raw["step"], raw["epoch"], raw["file"], raw["sha256"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= names.MAX_NUMBER:
        raise ValueError(f"has step {str(step)[:100]!r}: a step is an integer from 0 to {names.MAX_NUMBER}")
    if file != filename(step):
        raise ValueError(
            f"names the file {str(file)[:300]!r}, but the checkpoint of step {step} is {filename(step)!r} "
            "(checkpoint names follow one rule, step_<step, at least 8 digits>.pt, and are never paths)"
        )
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise ValueError(f"({file}) has sha256 {str(digest)[:100]!r}: not 64 lowercase hex digits")
    if isinstance(epoch, bool) or not isinstance(epoch, int | float) or not (math.isfinite(epoch) and epoch >= 0):
        raise ValueError(f"({file}) has epoch {epoch!r}: an epoch is a finite number >= 0")
    return IndexEntry(step=step, epoch=float(epoch), file=file, sha256=digest)


def check_payload_step(where: str, entry: IndexEntry, payload: dict) -> int:
    """The step a loaded checkpoint `payload` holds, which must be its index entry's step itself: an int (not a
    float, and not a bool, though False == 0 and 3.0 == 3), else an analysis would select by one step and
    report the other. CheckpointError names `where` (the run, or the dir) and the file."""
    step = payload.get("step")
    if type(step) is not int or step != entry.step:
        raise CheckpointError(f"{where}: {entry.file} is listed as step {entry.step} but holds step {step!r}")
    return step


def load_series(files: list[tuple[IndexEntry, Path]]) -> tuple[list[int], list[dict], dict]:
    """Load verified checkpoints in step order: (steps, state dicts, the common model spec)."""
    steps, state_dicts, spec = [], [], None
    for entry, path in sorted(files, key=lambda f: f[0].step):
        payload = load_checkpoint(path, entry.sha256)
        check_payload_step(str(Path(path).parent), entry, payload)
        if spec is None:
            spec = payload["model_spec"]
        elif payload["model_spec"] != spec:
            raise CheckpointError(f"{path}: its model_spec {payload['model_spec']} differs from the run's ({spec})")
        steps.append(entry.step)
        state_dicts.append(payload["state_dict"])
    if len(steps) < 2:
        raise CheckpointError(f"need at least two checkpoints to analyze, found {len(steps)}")
    return steps, state_dicts, spec


def check_architecture(label: str, checkpoints: Checkpoints, spec: dict, model: torch.nn.Module) -> None:
    """Refuse checkpoints whose `model_spec` is not `model.spec` or whose state dicts do not fit `model`
    (`label` names the run in the message)."""
    expected = model.spec.to_dict()
    if spec != expected:
        raise CheckpointError(f"{label}: checkpoints are of architecture {spec}, its config says {expected}")
    m = copy.deepcopy(model)
    for step, sd in zip(checkpoints.steps, checkpoints.state_dicts, strict=True):
        try:
            m.load_state_dict(sd)
        except RuntimeError as e:
            raise CheckpointError(
                f"{label}: checkpoint at step {step} does not fit {model.spec.model}: {str(e)[:300]}"
            ) from e
