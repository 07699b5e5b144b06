"""The search space of a sweep: which training settings the trials vary, over which values, and which stay fixed.

A space is a plain dict mapping a TrainConfig field to a spec: {"type": "float" | "int", "low", "high",
"log"} or {"type": "categorical", "choices"}. A numeric spec may instead be conditional on a categorical
parameter of the same space: {"type", "log", "given": <parameter>, "ranges": {<choice>: {"low", "high"}, ...}},
one range per choice (`validate_space`): e.g. a learning rate per optimizer, since one range rarely suits both
SGD and Adam. Its `low`/`high` are then the envelope of its ranges, filled in by `load_space` (`with_envelopes`),
so that what reads a numeric spec's bounds (Ψ's matching tolerance, the console) reads them unchanged.
It is read from YAML/JSON (`load_space`) or is the default
(`default_space`, fitted to the data set), and is checked before the first trial, so that a bad value is
refused naming the parameter, not a traceback in the middle of a sweep: its shape (`validate_space`), that
the data set can satisfy it (`check_space_fits`) and every value against its TrainConfig field
(`check_space_values`). `checked_space` does all of it for a sweep's config. Optuna draws a trial's values
with `suggest`; `grid_of` is the grid of sampler=grid.
"""

from __future__ import annotations

import itertools
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
# No label noise (issue 23): label_noise alone had τ = -0.72 with test accuracy over the report's trials, so any
# measure that detects noisy labels looked predictive; noisy labels are the report's own, separate experiment.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 0.02, "high": 0.2, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-4, "log": True},
    "width": {"type": "categorical", "choices": [32, 64, 128]},
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
    return with_envelopes(space)


def with_envelopes(space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A copy of the (valid) `space` in which every conditional spec also has `low`/`high`: the smallest low
    and the largest high of its ranges."""
    out = {}
    for name, spec in space.items():
        if "given" in spec:
            ranges = spec["ranges"].values()
            spec = {**spec, "low": min(r["low"] for r in ranges), "high": max(r["high"] for r in ranges)}
        out[name] = spec
    return out


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
    values = spec["choices"] if spec["type"] == "categorical" else [high for _, high in _ranges(spec)]
    too_big = [v for v in values if isinstance(v, (int, float)) and v > n_train]
    if too_big:
        raise ValueError(
            f"{where}: train_size {too_big} exceeds the {n_train} training examples of {dataset}; "
            f"use values <= {n_train} (0 = the whole training set)"
        )


def validate_space(space: Any, where: str = "search space") -> None:
    """Refuse (ValueError, naming `where`) a space that is not a non-empty mapping of tunable TrainConfig
    fields to well-formed specs: numeric low < high, or a non-empty `choices` list; a conditional spec names
    (`given`) an unconditional categorical parameter of the space and has exactly one range per choice of it,
    each low < high (and `low`/`high` of its own, if any, are the envelope of those ranges)."""
    fields = set(TrainConfig.__dataclass_fields__) - {"seed", "device", "data_dir", "download", "dataset", "model"}
    if not isinstance(space, dict) or not space:
        raise ValueError(f"{where}: expected a non-empty mapping of parameter -> spec")
    for name, spec in space.items():
        if name not in fields:
            raise ValueError(f"{where}: {name!r} is not a tunable training parameter; valid: {sorted(fields)}")
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind in ("float", "int") and "given" in spec:
            _validate_conditional(space, name, spec, where)
        elif kind in ("float", "int"):
            _validate_range(name, spec, kind, where)
        elif kind == "categorical":
            if not spec.get("choices"):
                raise ValueError(f"{where}: {name} needs a non-empty `choices` list")
            if "given" in spec:
                raise ValueError(f"{where}: {name}: only a float or int spec may be conditional (`given`)")
        else:
            raise ValueError(f"{where}: {name} has type {kind!r}; use float, int or categorical")


def _validate_range(name: str, spec: Any, kind: str, where: str) -> None:
    """Refuse a range that is not a mapping with numeric `low` < `high` (integers for an int spec)."""
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec):
        raise ValueError(f"{where}: {name} needs low and high, got {spec}")
    number = int if kind == "int" else (int, float)
    for bound in ("low", "high"):
        if isinstance(spec[bound], bool) or not isinstance(spec[bound], number):
            what = "an integer" if kind == "int" else "a number"
            raise ValueError(f"{where}: {name}.{bound} must be {what}, got {spec[bound]!r}")
    if not spec["low"] < spec["high"]:
        raise ValueError(f"{where}: {name} needs low < high, got {spec}")


def _validate_conditional(space: dict, name: str, spec: dict, where: str) -> None:
    """`_validate_range` for each range of a conditional spec, and that its ranges match the choices of the
    categorical parameter it is `given`."""
    given = spec["given"]
    parent = space.get(given)
    if given == name or not isinstance(parent, dict) or parent.get("type") != "categorical" or "given" in parent:
        raise ValueError(
            f"{where}: {name} is given {given!r}, which must be another, unconditional categorical parameter of "
            "the space"
        )
    ranges = spec.get("ranges")
    choices = parent.get("choices") or []
    if not isinstance(ranges, dict) or sorted(map(repr, ranges)) != sorted(map(repr, choices)):
        raise ValueError(
            f"{where}: {name} needs `ranges` with one range per choice of {given} ({choices}), got "
            f"{list(ranges) if isinstance(ranges, dict) else ranges!r}"
        )
    for choice, r in ranges.items():
        _validate_range(f"{name}[{given}={choice}]", r, spec["type"], where)
    for bound, pick in (("low", min), ("high", max)):
        if bound in spec and spec[bound] != pick(r[bound] for r in ranges.values()):
            raise ValueError(f"{where}: {name}.{bound} must be the envelope of its ranges or left out")


def _ranges(spec: dict[str, Any]) -> list[tuple[Any, Any]]:
    """A numeric spec's (low, high) ranges: its one range, or one per choice of a conditional spec."""
    if "given" in spec:
        return [(r["low"], r["high"]) for r in spec["ranges"].values()]
    return [(spec["low"], spec["high"])]


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
        if spec["type"] == "categorical":
            values = [({}, v) for v in spec["choices"]]
        elif "given" in spec:  # each range with its choice: a learning rate is checked with its optimizer
            values = [({spec["given"]: c}, v) for c, r in spec["ranges"].items() for v in (r["low"], r["high"])]
        else:
            values = [({}, spec["low"]), ({}, spec["high"])]
        for condition, value in values:
            if not _of_type(value, kind):
                raise ValueError(
                    f"{where}: {name}={value!r} is not a valid training value: {name} takes {kind.__name__} values"
                )
            try:
                TrainConfig(**{**fixed, **condition, name: value})
            except (ValueError, TypeError) as e:
                raise ValueError(f"{where}: {name}={value!r} is not a valid training value: {e}") from None


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Values for one Optuna trial. A conditional spec is drawn after the parameter it is given, within the
    range of the value drawn for it, under its own name (so a trial's `lr` is the learning rate it trains with).
    Its distribution then differs between trials, which Optuna allows; QMC's Sobol design covers it only where
    the trial's range is the study's first trial's (elsewhere Optuna draws it at random, seeded, within its
    range), as it assumes a fixed space; so under QMC its ranges must not overlap (`checked_space`)."""
    out = {}
    for name, spec in sorted(space.items(), key=lambda item: "given" in item[1]):  # stable: conditional last
        if spec["type"] == "categorical":
            out[name] = trial.suggest_categorical(name, spec["choices"])
            continue
        r = spec["ranges"][out[spec["given"]]] if "given" in spec else spec
        draw = trial.suggest_float if spec["type"] == "float" else trial.suggest_int
        out[name] = draw(name, r["low"], r["high"], log=spec.get("log", False))
    return out


def grid_of(space: dict[str, dict[str, Any]], points: int = 3) -> dict[str, list]:
    """A grid for Optuna's GridSampler: categorical choices, and `points` values across numeric ranges."""
    grid = {}
    for name, spec in space.items():
        if "given" in spec:
            raise ValueError(
                f"sampler=grid cannot draw {name}: its range depends on {spec['given']}; use qmc or random"
            )
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
    if cfg.sampler == "grid":
        grid_of(space)  # refuses a conditional spec now, not after the study is made
    if cfg.sampler == "qmc":
        _refuse_overlapping_ranges(space)
    return space


def _refuse_overlapping_ranges(space: dict[str, dict[str, Any]]) -> None:
    """Refuse a conditional spec whose ranges overlap, under QMC: Optuna's QMCSampler draws the Sobol point in
    the first trial's range and keeps it for any trial whose range also holds it, so an overlap would draw the
    other choices' values more often there than their ranges say (tests/test_environments.py measured 0.66 of
    draws in an overlap holding half the range). Disjoint (or touching) ranges are drawn as `suggest` says."""
    for name, spec in space.items():
        if "given" not in spec:
            continue
        ranges = sorted(spec["ranges"].items(), key=lambda item: item[1]["low"])
        for (a, ra), (b, rb) in itertools.pairwise(ranges):
            if rb["low"] < ra["high"]:
                raise ValueError(
                    f"sampler=qmc cannot draw {name}: its ranges overlap ({a} and {b}); make them disjoint or use "
                    "random"
                )
