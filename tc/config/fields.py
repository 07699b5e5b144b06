"""Frozen dataclasses as command-line parameters: fields with help, casting from strings, validation helpers.

MLflow passes project parameters to the command as untyped strings, and an empty or spaced value keeps its
shell quotes (MLflow issue #6811). So every entry point declares one frozen dataclass (`tc.config.train`,
`.analyze`, `.sweep`, `.main`, `.report`, `.cache`); `from_strings` casts and validates each value once, and a
bad value raises a `ValueError` that names the field and the valid choices. `dataclasses.asdict(cfg)` is what
gets logged. A field is declared with `opt(default, help, choices)`; its help gives the units, and
`scripts/gen_docs.py` writes MLproject's parameters and the docs' tables from these declarations.

This module imports nothing from tc: the configs are tc's bottom layer.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any, TypeVar

NONE_WORDS = frozenset({"", "none", "null"})
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})

C = TypeVar("C")


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None, *, required: bool = False) -> Any:
    """A config field: its default, its help (with units), the valid `choices` of a string field, and whether
    the parameter is `required` (MLproject then declares no default; the config refuses the empty default)."""
    return field(default=default, metadata={"help": help, "choices": choices, "required": required})


def passed_on(cls: type, name: str, default: Any, to: str) -> Any:
    """A field of an entry point that passes its value on to field `name` of config `cls` (the entry point
    `to`): that field's help, so the meaning is written once, with its own `default`."""
    (source,) = [f for f in dataclasses.fields(cls) if f.name == name]
    return opt(default, f"{source.metadata['help']}; passed to `{to}`", source.metadata.get("choices"))


def unquote(text: str) -> str:
    """Strip the shell quotes MLflow leaves around empty or spaced parameter values."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text


def base_type(annotation: Any) -> Any:
    """`X` for `X | None`, else `annotation` itself."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        (annotation,) = [a for a in args if a is not type(None)]
    return annotation


def cast_value(name: str, raw: Any, annotation: Any) -> Any:
    """Cast one raw value (usually a string) of parameter `name` to the type `annotation`."""
    if not isinstance(raw, str):
        return raw
    text = unquote(raw)
    if base_type(annotation) is not annotation:  # optional: none words mean None
        if text.lower() in NONE_WORDS:
            return None
        annotation = base_type(annotation)
    try:
        if annotation is bool:
            if text.lower() in TRUE_WORDS:
                return True
            if text.lower() in FALSE_WORDS:
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
    kwargs = {k: cast_value(k, v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def cast_field(cls: type, name: str, raw: Any) -> Any:
    """Cast one raw value to the type of field `name` of config class `cls` (no validation)."""
    return cast_value(name, raw, typing.get_type_hints(cls)[name])


class _Parser(argparse.ArgumentParser):
    """argparse, but an unknown parameter or a missing value is a `ValueError` like every bad value, so that the
    entry point refuses it as it refuses those (`tc.tracking.refusals`), not by argparse's own exit."""

    def error(self, message: str) -> typing.NoReturn:
        raise ValueError(f"{message} (see --help)")


def build_parser(cls: type, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one `--name` option per field; values stay strings for `from_strings`. Its errors
    (an unknown parameter, a missing value) are `ValueError`s; `--help` prints and exits 0."""
    parser = _Parser(description=description)
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            help_text += f" (one of {', '.join(f.metadata['choices'])})"
        # argparse %-formats a help string (`%(default)s`): a literal `%` ("x0.1 at 50%") must be doubled
        text = f"{help_text} [default: {f.default}]".replace("%", "%%")
        parser.add_argument(f"--{f.name}", default=argparse.SUPPRESS, help=text)
    return parser


def parse_args(cls: type[C], argv: list[str] | None, description: str | None = None) -> C:
    """Config `cls` from command-line arguments `--name value` (None: `sys.argv`); a `ValueError` for a bad value."""
    ns = build_parser(cls, description).parse_args(argv)
    return from_strings(cls, vars(ns))


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")


def check_range(name: str, value: float, low: float, high: float | None = None, *, low_open: bool = False) -> None:
    """`value` of parameter `name` must be finite, >= `low` (> with `low_open`) and, if given, <= `high`."""
    ok = math.isfinite(value) and (value > low if low_open else value >= low)
    ok = ok and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name}={value!r} is out of range; it must be {bound}")


def validate_choices(cfg: Any) -> None:
    """Check every field that declares `choices` in its metadata."""
    for f in dataclasses.fields(cfg):
        if f.metadata.get("choices"):
            check_choice(f.name, getattr(cfg, f.name), f.metadata["choices"])


def split_list(text: str) -> list[str]:
    """A comma list's items, stripped, empty ones dropped (after `unquote`)."""
    return [t.strip() for t in unquote(text).split(",") if t.strip()]


def names_list(name: str, text: str, valid: tuple[str, ...], what: str, usage: str) -> tuple[str, ...]:
    """The comma list `text` of parameter `name`, in the order given: each one of `valid`, none repeated, at
    least one. An empty list (`-P corruptions=`, a lone comma) is refused here rather than parsed to ():
    downstream an empty list means an empty (or uninitialised) split, never "none"."""
    names = tuple(split_list(text))
    if not names:
        raise ValueError(f"{name}={text!r} names no {what}; {usage}")
    for n in names:
        if n not in valid:
            raise ValueError(f"{name}={text!r}: {n!r} is not valid; {usage}")
    for n in names:
        if names.count(n) > 1:  # a repeat would count its samples (or corruption pairs) twice
            raise ValueError(f"{name}={text!r} names {n!r} twice; {usage}")
    return names
