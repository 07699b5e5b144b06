"""Typed, frozen configs for the entry points, and their round trip to command-line strings: tc's bottom layer.

One frozen dataclass per entry point defines each of its parameters once (name, type, default, help with
units, valid choices); `scripts/gen_docs.py` writes MLproject's parameter blocks and the docs' tables from them.

- `tc.config.fields`: the library (a field with help, casting from strings, parsers, validation helpers);
- `tc.config.vocabulary`: the names tc accepts (data sets, models and their grammar, corruptions, choices);
- one module per entry point: `train` (`TrainConfig`), `analyze` (`AnalyzeConfig` and the grammars of its
  lists), `sweep` (`SweepConfig`), `main` (`MainConfig`), `report` (`ReportConfig`); and `cache` (`CacheConfig`),
  the parameters of `python -m tc.tracking.cache prune`, a command outside MLflow.

Nothing here imports another tc package: `tc.core` and everything above import the configs, never the reverse.
"""

from __future__ import annotations

from tc.config.analyze import (
    CHECKPOINTS_USAGE,
    CUT_USAGE,
    AnalyzeConfig,
    CheckpointSpec,
    CutSpec,
    check_two_steps,
    parse_corruptions,
    parse_severities,
    parse_splits,
)
from tc.config.cache import CacheConfig
from tc.config.fields import (
    build_parser,
    cast_field,
    cast_value,
    check_choice,
    check_range,
    from_strings,
    names_list,
    opt,
    parse_args,
    passed_on,
    split_list,
    unquote,
    validate_choices,
)
from tc.config.main import MainConfig
from tc.config.report import ReportConfig
from tc.config.sweep import SweepConfig
from tc.config.train import TrainConfig
from tc.config.vocabulary import (
    BN_MODES,
    CORRUPTION_NAMES,
    DATASETS,
    DEVICES,
    MATRICES,
    MODELS,
    OPTIMIZERS,
    PRECISIONS,
    PRUNERS,
    SAMPLERS,
    SCHEDULES,
    SPLITS,
)

# Every entry point's config, by its MLproject name (what `scripts/gen_docs.py` writes MLproject and the docs from).
# `CacheConfig` is no entry point: `python -m tc.tracking.cache` only touches local files, and an entry point would
# leave an empty MLflow run at each use (`mlflow run` creates its run before the command starts).
CONFIGS: dict[str, type] = {
    "train": TrainConfig,
    "main": MainConfig,
    "analyze": AnalyzeConfig,
    "sweep": SweepConfig,
    "report": ReportConfig,
}

__all__ = [
    "BN_MODES",
    "CHECKPOINTS_USAGE",
    "CONFIGS",
    "CORRUPTION_NAMES",
    "CUT_USAGE",
    "DATASETS",
    "DEVICES",
    "MATRICES",
    "MODELS",
    "OPTIMIZERS",
    "PRECISIONS",
    "PRUNERS",
    "SAMPLERS",
    "SCHEDULES",
    "SPLITS",
    "AnalyzeConfig",
    "CacheConfig",
    "CheckpointSpec",
    "CutSpec",
    "MainConfig",
    "ReportConfig",
    "SweepConfig",
    "TrainConfig",
    "build_parser",
    "cast_field",
    "cast_value",
    "check_choice",
    "check_range",
    "check_two_steps",
    "from_strings",
    "names_list",
    "opt",
    "parse_args",
    "parse_corruptions",
    "parse_severities",
    "parse_splits",
    "passed_on",
    "split_list",
    "unquote",
    "validate_choices",
]
