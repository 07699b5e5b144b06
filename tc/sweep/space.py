"""The search space of a sweep: which training settings the trials vary, over which values, and which stay fixed.

A space is a plain dict mapping a TrainConfig field to a spec: {"type": "float" | "int", "low", "high",
"log"} or {"type": "categorical", "choices"}. It is read from YAML/JSON (`load_space`) or is the default
(`default_space`, fitted to the data set), and is checked before the first trial, so that a bad value is
refused naming the parameter, not a traceback in the middle of a sweep: its shape (`validate_space`), that
the data set can satisfy it (`check_space_fits`) and every value against its TrainConfig field
(`check_space_values`). `checked_space` does all of it for a sweep's config. Optuna draws a trial's values
with `suggest`; `grid_of` is the grid of sampler=grid.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import numpy as np

from tc.config import SweepConfig, TrainConfig
from tc.core.data import load_data

# The default space, for the sweep's default proxy (an MLP on digits trained to cross-entropy 0.01;
# docs/sweep.md, "The proxy"). `train_size` 0 is the whole training set; `default_space(n_train)` drops the
# choices a data set cannot satisfy, so the default space always fits the data (digits has 1438 training images).
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 0.02, "high": 0.2, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-4, "log": True},
    "width": {"type": "categorical", "choices": [32, 64, 128]},
    "label_noise": {"type": "categorical", "choices": [0.0, 0.1]},
    "train_size": {"type": "categorical", "choices": [500, 1000, 2000, 0]},
}


def load_space(path: str | None) -> dict[str, dict[str, Any]]:
    """The default space, or one read from a YAML or JSON file mapping parameter -> spec; validated."""
    if path is None:
        return DEFAULT_SPACE
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"search_space={path!r}: no such file")
    try:
        import yaml

        space = yaml.safe_load(p.read_text()) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text())
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"search_space={path!r} is not valid YAML/JSON: {e}") from e
    validate_space(space, path)
    return space


def default_space(n_train: int) -> dict[str, dict[str, Any]]:
    """DEFAULT_SPACE fitted to a data set with `n_train` training examples: `train_size` choices larger than
    the data set are dropped (0, the whole set, always stays)."""
    space = {k: dict(v) for k, v in DEFAULT_SPACE.items()}
    space["train_size"]["choices"] = [c for c in DEFAULT_SPACE["train_size"]["choices"] if c <= n_train]
    return space


def check_space_fits(space: dict[str, dict[str, Any]], n_train: int, dataset: str, where: str = "search space") -> None:
    """Refuse, before any trial, a space with a value the data set cannot satisfy: a `train_size` choice or
    upper bound above its `n_train` training examples (load_data would fail that trial)."""
    spec = space.get("train_size")
    if spec is None:
        return
    values = spec["choices"] if spec["type"] == "categorical" else [spec["high"]]
    too_big = [v for v in values if isinstance(v, (int, float)) and v > n_train]
    if too_big:
        raise ValueError(
            f"{where}: train_size {too_big} exceeds the {n_train} training examples of {dataset}; "
            f"use values <= {n_train} (0 = the whole training set)"
        )


def validate_space(space: Any, where: str = "search space") -> None:
    """Refuse (ValueError, naming `where`) a space that is not a non-empty mapping of tunable TrainConfig
    fields to well-formed specs: numeric low < high, or a non-empty `choices` list."""
    fields = set(TrainConfig.__dataclass_fields__) - {"seed", "device", "data_dir", "download", "dataset", "model"}
    if not isinstance(space, dict) or not space:
        raise ValueError(f"{where}: expected a non-empty mapping of parameter -> spec")
    for name, spec in space.items():
        if name not in fields:
            raise ValueError(f"{where}: {name!r} is not a tunable training parameter; valid: {sorted(fields)}")
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind in ("float", "int"):
            if not {"low", "high"} <= set(spec):
                raise ValueError(f"{where}: {name} needs low and high, got {spec}")
            number = int if kind == "int" else (int, float)
            for bound in ("low", "high"):
                if isinstance(spec[bound], bool) or not isinstance(spec[bound], number):
                    what = "an integer" if kind == "int" else "a number"
                    raise ValueError(f"{where}: {name}.{bound} must be {what}, got {spec[bound]!r}")
            if not spec["low"] < spec["high"]:
                raise ValueError(f"{where}: {name} needs low < high, got {spec}")
        elif kind == "categorical":
            if not spec.get("choices"):
                raise ValueError(f"{where}: {name} needs a non-empty `choices` list")
        else:
            raise ValueError(f"{where}: {name} has type {kind!r}; use float, int or categorical")


def _of_type(value: Any, kind: type) -> bool:
    """Whether `value` (as YAML/JSON gave it) is a value of a TrainConfig field of type `kind`: bools only for
    bool fields, integers (not 32.0, not True) for int fields, any number but a bool for float fields."""
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def check_space_values(space: dict[str, dict[str, Any]], fixed: dict[str, Any], where: str = "search space") -> None:
    """Check every bound and every choice of every parameter against its TrainConfig field: its type
    (`choices: [32.5]` for batch_size, or `type: float` for an integer field, is refused), then TrainConfig's
    own validation with the sweep's `fixed` settings (label_noise 1.2, lr -1), so that a bad value is reported
    here, naming the parameter, before the first trial, and not as a traceback in the middle of a sweep.
    Numeric ranges are checked at both ends (TrainConfig's ranges are intervals, so the values between pass
    too)."""
    hints = typing.get_type_hints(TrainConfig)
    for name, spec in space.items():
        kind = hints[name]
        if spec["type"] != "categorical" and kind not in (int, float):
            raise ValueError(f"{where}: {name} takes {kind.__name__} values: use type categorical")
        if spec["type"] == "float" and kind is int:
            raise ValueError(
                f"{where}: {name} takes integers, and type float samples fractions: use int or categorical"
            )
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in values:
            if not _of_type(value, kind):
                raise ValueError(
                    f"{where}: {name}={value!r} is not a valid training value: {name} takes {kind.__name__} values"
                )
            try:
                TrainConfig(**{**fixed, name: value})
            except (ValueError, TypeError) as e:
                raise ValueError(f"{where}: {name}={value!r} is not a valid training value: {e}") from None


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Values for one Optuna trial."""
    out = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            out[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
        elif spec["type"] == "int":
            out[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec.get("log", False))
        else:
            out[name] = trial.suggest_categorical(name, spec["choices"])
    return out


def grid_of(space: dict[str, dict[str, Any]], points: int = 3) -> dict[str, list]:
    """A grid for Optuna's GridSampler: categorical choices, and `points` values across numeric ranges."""
    grid = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            grid[name] = list(spec["choices"])
        elif spec.get("log"):
            grid[name] = list(np.geomspace(spec["low"], spec["high"], points))
        else:
            values = np.linspace(spec["low"], spec["high"], points)
            grid[name] = [round(v) for v in values] if spec["type"] == "int" else list(values)
    return grid


def fixed_settings(cfg: SweepConfig) -> dict:
    """The training settings every trial shares (the search space sets the rest)."""
    return {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "depth": cfg.depth,
        "epochs": cfg.epochs,
        "target_loss": cfg.target_loss,
        "test_every": cfg.test_every,
        "seed": cfg.seed,
    }


def fitted_space(cfg: SweepConfig) -> dict:
    """The search space checked against the data set before any trial: the default space fitted to it, or the
    user's space refused (ValueError) when a value exceeds it."""
    n_train = len(load_data(cfg.dataset).train_y)
    if cfg.search_space is None:
        return default_space(n_train)
    space = load_space(cfg.search_space)
    check_space_fits(space, n_train, cfg.dataset, cfg.search_space)
    return space


def checked_space(cfg: SweepConfig) -> dict[str, dict[str, Any]]:
    """The sweep's space, every check done before any trial (`fitted_space`, then `check_space_values` with
    the sweep's fixed settings); ValueError (or `tc.core.data.DatasetNotFoundError`) names what is wrong."""
    space = fitted_space(cfg)
    check_space_values(space, fixed_settings(cfg), cfg.search_space or "the default search space")
    return space
