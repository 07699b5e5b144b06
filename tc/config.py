"""Typed, frozen configs for the entry points, and their round trip to command-line strings.

MLflow passes project parameters to the command as untyped strings, and an empty or spaced value keeps its
shell quotes (MLflow issue #6811). So every entry point declares one frozen dataclass; `from_strings` casts
and validates each value once, and a bad value raises a `ValueError` that names the field and the valid
choices. `dataclasses.asdict(cfg)` is what gets logged.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "digits")
MODELS = ("resnet20", "vgg", "mlp")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")

_NONE_WORDS = {"", "none", "null"}
_TRUE_WORDS = {"true", "1", "yes", "on"}
_FALSE_WORDS = {"false", "0", "no", "off"}

C = TypeVar("C")


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


def unquote(text: str) -> str:
    """Strip the shell quotes MLflow leaves around empty or spaced parameter values."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text


def _cast(name: str, raw: Any, annotation: Any) -> Any:
    """Cast one raw value (usually a string) to the field's declared type."""
    if not isinstance(raw, str):
        return raw
    text = unquote(raw)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if text.lower() in _NONE_WORDS:
            return None
        (annotation,) = [a for a in args if a is not type(None)]
    try:
        if annotation is bool:
            if text.lower() in _TRUE_WORDS:
                return True
            if text.lower() in _FALSE_WORDS:
                return False
            raise ValueError
        if annotation is int:
            as_float = float(text)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        if annotation is float:
            return float(text)
    except ValueError:
        kind = getattr(annotation, "__name__", str(annotation))
        raise ValueError(f"{name}={raw!r} is not a valid {kind}") from None
    return text


def from_strings(cls: type[C], values: dict[str, Any]) -> C:
    """Build config `cls` from a mapping of (possibly string) values; unknown keys are an error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _cast(k, v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def cast_field(cls: type, name: str, raw: Any) -> Any:
    """Cast one raw value to the type of field `name` of config class `cls` (no validation)."""
    return _cast(name, raw, typing.get_type_hints(cls)[name])


def build_parser(cls: type, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one `--name` option per field; values stay strings for `from_strings`."""
    parser = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            help_text += f" (one of {', '.join(f.metadata['choices'])})"
        parser.add_argument(f"--{f.name}", default=argparse.SUPPRESS, help=f"{help_text} [default: {f.default}]")
    return parser


def parse_args(cls: type[C], argv: list[str] | None, description: str | None = None) -> C:
    ns = build_parser(cls, description).parse_args(argv)
    return from_strings(cls, vars(ns))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _check_range(name: str, value: float, low: float, high: float | None = None, *, low_open=False) -> None:
    ok = math.isfinite(value) and (value > low if low_open else value >= low)
    ok = ok and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name}={value!r} is out of range; it must be {bound}")


def validate_choices(cfg: Any) -> None:
    """Check every field that declares `choices` in its metadata."""
    for f in dataclasses.fields(cfg):
        if f.metadata.get("choices"):
            _check_choice(f.name, getattr(cfg, f.name), f.metadata["choices"])


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. Same config + same seed on CPU = identical checkpoints."""

    dataset: str = _opt("fashion-mnist", "data set name", DATASETS)
    model: str = _opt("resnet20", "architecture", MODELS)
    depth: int = _opt(
        0, "model depth; 0 = the model's default (resnet: 6n+2 layers, 20; vgg: conv layers, 6; mlp: hidden layers, 3)"
    )
    width: int = _opt(16, "base width: channels of the first stage (resnet, vgg) or hidden units (mlp)")
    epochs: int = _opt(5, "passes over the training set")
    batch_size: int = _opt(128, "examples per optimizer step")
    lr: float = _opt(0.1, "peak learning rate")
    momentum: float = _opt(0.9, "SGD momentum (Adam: beta1)")
    weight_decay: float = _opt(5e-4, "L2 weight decay")
    optimizer: str = _opt("sgd", "optimizer", OPTIMIZERS)
    schedule: str = _opt("cosine", "learning-rate schedule over all steps (step: x0.1 at 50% and 75%)", SCHEDULES)
    label_noise: float = _opt(0.0, "fraction of training labels replaced by uniformly random labels, in [0, 1]")
    augment: bool = _opt(False, "random crop (+ horizontal flip for colour sets) on training batches")
    train_size: int = _opt(0, "seeded subset of the training set; 0 = all of it")
    seed: int = _opt(0, "seed for initialisation, subset, label noise, data order and augmentation")
    checkpoint_every: int = _opt(0, "optimizer steps between checkpoints; 0 = once per epoch")
    device: str = _opt("auto", "where to train; auto = cuda when available", DEVICES)
    data_dir: str | None = _opt(None, "directory with the data set files; none = $TC_DATA_DIR, then known places")
    download: bool = _opt(False, "let torchvision download the data set when it is not found locally")

    def __post_init__(self) -> None:
        validate_choices(self)
        from tc.models import default_depth, validate_depth  # models own the meaning of `depth`

        if self.depth == 0:
            object.__setattr__(self, "depth", default_depth(self.model))
        validate_depth(self.model, self.depth)
        for name in ("width", "epochs", "batch_size"):
            _check_range(name, getattr(self, name), 1)
        _check_range("lr", self.lr, 0.0, low_open=True)
        _check_range("momentum", self.momentum, 0.0, 1.0)
        _check_range("weight_decay", self.weight_decay, 0.0)
        _check_range("label_noise", self.label_noise, 0.0, 1.0)
        _check_range("train_size", self.train_size, 0)
        _check_range("checkpoint_every", self.checkpoint_every, 0)
        _check_range("seed", self.seed, 0)
