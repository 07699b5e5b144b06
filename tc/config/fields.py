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
    model: str = _opt(
        "resnet20",
        "architecture: resnet20, vgg, mlp, torchvision:<name> (e.g. torchvision:resnet18, no weights), or "
        "<module>:<function> (your own factory); optional @cut1,cut2 (module names to cut after)",
    )
    depth: int = _opt(
        0,
        "model depth; 0 = the model's default (resnet: 6n+2 layers, 20; vgg: conv layers, 6; mlp: hidden layers, 3)"
        "; must be 0 for torchvision and user models",
    )
    width: int = _opt(16, "base width: channels of the first stage (resnet, vgg) or hidden units (mlp)")
    epochs: int = _opt(5, "passes over the training set (with target_loss: the cap)")
    target_loss: float = _opt(
        0.0,
        "stop at the first epoch end where the cross-entropy on the whole training set, with the labels used "
        "(noisy ones included), eval mode, is <= target_loss; 0 = off (train all epochs)",
    )
    batch_size: int = _opt(128, "examples per optimizer step")
    lr: float = _opt(0.1, "peak learning rate")
    momentum: float = _opt(0.9, "SGD momentum (Adam: beta1)")
    weight_decay: float = _opt(5e-4, "L2 weight decay")
    optimizer: str = _opt("sgd", "optimizer", OPTIMIZERS)
    schedule: str = _opt("cosine", "learning-rate schedule over all steps (step: x0.1 at 50% and 75%)", SCHEDULES)
    label_noise: float = _opt(0.0, "fraction of training labels replaced by uniformly random labels, in [0, 1]")
    augment: bool = _opt(False, "random crop (+ horizontal flip where flips keep labels) on training batches")
    train_size: int = _opt(0, "seeded subset of the training set; 0 = all of it")
    seed: int = _opt(0, "seed for initialisation, subset, label noise, data order and augmentation")
    checkpoint_every: int = _opt(0, "optimizer steps between checkpoints; 0 = once per epoch")
    device: str = _opt("auto", "where to train; auto = cuda when available", DEVICES)
    freeze_cut: int = _opt(
        0, "freeze blocks [0, freeze_cut) from epoch freeze_epoch on (arXiv 2509.20334's freezing control); 0 = never"
    )
    freeze_epoch: int = _opt(1, "the epoch (0-based) from which the shallow blocks are frozen")
    data_dir: str | None = _opt(None, "directory with the data set files; none = $TC_DATA_DIR, then known places")
    download: bool = _opt(False, "let torchvision download the data set when it is not found locally")

    def __post_init__(self) -> None:
        validate_choices(self)
        from tc.core.models import default_depth, validate_depth, validate_model  # models own these meanings

        validate_model(self.model)  # syntax only: a run's stored config must never import code
        if self.depth == 0:
            object.__setattr__(self, "depth", default_depth(self.model))
        validate_depth(self.model, self.depth)
        for name in ("width", "epochs", "batch_size"):
            _check_range(name, getattr(self, name), 1)
        _check_range("lr", self.lr, 0.0, low_open=True)
        _check_range("momentum", self.momentum, 0.0, 1.0)
        _check_range("weight_decay", self.weight_decay, 0.0)
        _check_range("label_noise", self.label_noise, 0.0, 1.0)
        _check_range("target_loss", self.target_loss, 0.0)
        _check_range("train_size", self.train_size, 0)
        _check_range("checkpoint_every", self.checkpoint_every, 0)
        _check_range("seed", self.seed, 0)
        _check_range("freeze_cut", self.freeze_cut, 0)
        _check_range("freeze_epoch", self.freeze_epoch, 0)


BN_MODES = ("splice", "recalibrate")
PRECISIONS = ("fp32", "bf16")
MATRICES = ("full", "final")
SPLITS = ("train", "test", "corrupt")


def split_list(text: str) -> list[str]:
    return [t.strip() for t in unquote(text).split(",") if t.strip()]


CUT_USAGE = "use stages, all, or a comma list of block boundaries such as 1,4,7"


@dataclass(frozen=True)
class CutSpec:
    """`cuts` parsed: `stages` (the model's stage boundaries), `all` (every block boundary), or the
    `indices` listed (sorted, without repeats). Which indices exist depends on the model, so `resolve`
    finishes the job once the model is built."""

    kind: str  # "stages", "all" or "list"
    indices: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> CutSpec:
        """The spec `text` names; a `ValueError` naming the valid forms when it names none."""
        text = unquote(text)
        if text in ("stages", "all"):
            return cls(text)
        try:
            indices = tuple(sorted({int(c) for c in split_list(text)}))
        except ValueError:
            indices = ()
        if not indices or indices[0] < 1:
            raise ValueError(f"cuts={text!r} is not valid; {CUT_USAGE}")
        return cls("list", indices)

    def resolve(self, model: Any) -> list[int]:
        """The cut indices on `model` (a `tc.core.models.BlockNet`: `stage_cuts`, `cuts`); a `ValueError` when a
        listed index is not one of the model's cuts."""
        if self.kind == "stages":
            return list(model.stage_cuts)
        if self.kind == "all":
            return list(model.cuts)
        if not set(self.indices) <= set(model.cuts):
            text = ",".join(map(str, self.indices))
            raise ValueError(f"cuts={text!r} is not valid; use stages, all, or a comma list from {model.cuts}")
        return list(self.indices)


def _names(name: str, text: str, valid: tuple[str, ...], what: str, usage: str) -> tuple[str, ...]:
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


def parse_splits(text: str) -> tuple[str, ...]:
    """`splits` parsed: the split names in the order given, each one of `SPLITS`, at least one, no repeats."""
    return _names("splits", text, SPLITS, "split", f"use some of: {', '.join(SPLITS)}")


def parse_corruptions(text: str) -> tuple[str, ...]:
    """`corruptions` parsed: `all` (every corruption of `tc.core.corruptions.CORRUPTIONS`, in its order) or the
    names listed, each one of them, at least one, no repeats. To analyze no corrupted data, leave `corrupt`
    out of `splits`."""
    from tc.core.corruptions import CORRUPTIONS  # corruptions owns the names (and imports torchvision)

    if unquote(text) == "all":
        return tuple(CORRUPTIONS)
    usage = f"use all or a comma list of: {', '.join(CORRUPTIONS)} (no corrupt split: leave it out of splits)"
    return _names("corruptions", text, tuple(CORRUPTIONS), "corruption", usage)


def parse_severities(text: str) -> tuple[int, ...]:
    """`severities` parsed: the listed severities, each an integer 1..5, at least one, no repeats."""
    levels = _names("severities", text, ("1", "2", "3", "4", "5"), "severity", "use a comma list of 1..5")
    return tuple(int(s) for s in levels)


CHECKPOINTS_USAGE = "use all, every:K (K >= 1), fractions:N (N >= 2), or a comma list of at least two steps"


def check_two_steps(text: str, steps: list[int]) -> None:
    """The one check that `checkpoints=text`, which lists `steps`, names at least two distinct steps: an
    analysis compares checkpoints, one alone is no analysis. Used before a run is read (the config) and
    after (`tc.analysis.splits.select_steps`), with one message."""
    if len(set(steps)) < 2:
        raise ValueError(f"checkpoints={text!r} names fewer than two distinct steps; {CHECKPOINTS_USAGE}")


def check_checkpoints_spec(text: str) -> None:
    """The form of `checkpoints` (all, every:K, fractions:N, or a list of at least two distinct steps), before
    any run is read; whether the listed steps exist is checked against the run (`tc.analysis.splits.select_steps`)."""
    usage = CHECKPOINTS_USAGE
    if text == "all":
        return
    for prefix, least in (("every:", 1), ("fractions:", 2)):
        if text.startswith(prefix):
            k = text.split(":", 1)[1]
            if not k.strip().isdigit() or int(k) < least:
                raise ValueError(f"checkpoints={text!r} is not valid: need an integer >= {least}; {usage}")
            return
    steps = split_list(text)
    if not steps or not all(s.isdigit() for s in steps):
        raise ValueError(f"checkpoints={text!r} is not valid; {usage}")
    check_two_steps(text, [int(s) for s in steps])


@dataclass(frozen=True)
class AnalyzeConfig:
    """How `analyze` reads a training run's checkpoints and what it computes (SPEC sections 1-4)."""

    run_id: str = _opt("", "the training run to analyze (required)")
    cuts: str = _opt(
        "stages", "cuts: stages (the model's stage boundaries), all (every block boundary), or a list 1,4,7"
    )
    splits: str = _opt("train,test,corrupt", "comma list of splits among train, test, corrupt")
    max_samples: int = _opt(1000, "examples per split (seeded subset); 0 = the whole split")
    checkpoints: str = _opt(
        "all",
        "checkpoints to use: all, every:K (every K-th, always the last), fractions:N (the checkpoints nearest N "
        "evenly spaced fractions of training, 0 to 1: matched across runs of different lengths), or a list of steps",
    )
    bn_mode: str = _opt(
        "splice", "BatchNorm in composites: each part keeps its own statistics, or re-estimate", BN_MODES
    )
    corruptions: str = _opt("all", "comma list of corruptions for the corrupt split, or all")
    severities: str = _opt("3", "comma list of severities 1..5 for the corrupt split")
    reference_run_id: str | None = _opt(None, "a second run (another seed) for the cross-seed control; none = skip")
    batch_size: int = _opt(128, "examples per forward pass (per shallow checkpoint)")
    device: str = _opt("auto", "where to compute; auto = cuda when available", DEVICES)
    precision: str = _opt("fp32", "fp32, or bf16 autocast (faster where the hardware has bf16)", PRECISIONS)
    matrix: str = _opt("full", "full: every (t1, t2) pair (heatmaps, lag curves); final: only t2 = last", MATRICES)
    phases: bool = _opt(
        False, "also tc, tc_kappa and tc_full over the early, middle and late thirds of training (fractions)"
    )
    window: float = _opt(0.5, "fraction of training, before the final checkpoint, that the tc score averages over")
    calibration_batches: int = _opt(5, "training batches used to re-estimate BatchNorm (bn_mode=recalibrate)")
    seed: int = _opt(0, "seed for the sample subsets and the corruptions")
    anisotropy: bool = _opt(
        True, "also compute the SGD-noise anisotropy statistics (arXiv 2509.20334's anisotropic-noise claim)"
    )
    aniso_k: int = _opt(3, "top-k principal directions for the explained-variance test and perturbations")
    null_draws: int = _opt(1000, "Monte-Carlo draws of the isotropic Gaussian null")
    grad_batches: int = _opt(32, "training minibatches for the gradient-noise covariance")
    measures: bool = _opt(True, "also the baseline generalization measures gm_* of the final checkpoint")
    model: str | None = _opt(
        None, "a run of your own model (module:function): name it again here; tc never imports code a run names"
    )
    allow_unfinished: bool = _opt(
        False, "analyze a run that is not FINISHED (killed, failed, still running); recorded in the analysis tags"
    )
    data_dir: str | None = _opt(
        None,
        "directory with the run's data set files on this machine; none = $TC_DATA_DIR, then known places (the "
        "data_dir a run was trained with is a path on its trainer's machine: never read)",
    )
    download: bool = _opt(
        False, "let torchvision download the run's data set (into data_dir, else $TC_DATA_DIR or tc's cache)"
    )

    def __post_init__(self) -> None:
        from tc.core.models import validate_model

        validate_choices(self)
        if self.model is not None:
            validate_model(self.model)
        if not unquote(self.run_id):
            raise ValueError("run_id is required: the id of a training run (see `mlflow runs list`)")
        # The list-valued fields stay strings (the command-line form, and what is logged), parsed here once
        # into typed tuples (not fields, so `asdict` and the logged parameters are unchanged).
        object.__setattr__(self, "_splits", parse_splits(self.splits))
        object.__setattr__(self, "_cut_spec", CutSpec.parse(self.cuts))
        object.__setattr__(self, "_corruptions", parse_corruptions(self.corruptions))
        object.__setattr__(self, "_severities", parse_severities(self.severities))
        check_checkpoints_spec(self.checkpoints)
        _check_range("max_samples", self.max_samples, 0)
        _check_range("batch_size", self.batch_size, 1)
        _check_range("window", self.window, 0.0, 1.0, low_open=True)
        _check_range("calibration_batches", self.calibration_batches, 1)
        _check_range("aniso_k", self.aniso_k, 1, 10)
        _check_range("null_draws", self.null_draws, 100)
        _check_range("grad_batches", self.grad_batches, 3)

    @property
    def split_names(self) -> tuple[str, ...]:
        """`splits` parsed (`parse_splits`): the split names, in the order given."""
        return self._splits

    @property
    def cut_spec(self) -> CutSpec:
        """`cuts` parsed (`CutSpec.parse`); `CutSpec.resolve(model)` gives the indices."""
        return self._cut_spec

    @property
    def corruption_names(self) -> tuple[str, ...]:
        """`corruptions` parsed (`parse_corruptions`): the corruption names."""
        return self._corruptions

    @property
    def severity_levels(self) -> tuple[int, ...]:
        """`severities` parsed (`parse_severities`): the severities 1..5."""
        return self._severities


SAMPLERS = ("qmc", "random", "grid", "tpe")
PRUNERS = ("none", "median")


@dataclass(frozen=True)
class SweepConfig:
    """An Optuna study over training hyperparameters; every trial trains (every checkpoint logged) and is
    analyzed, as a nested MLflow run. Fixed training settings are the TrainConfig defaults unless set here."""

    n_trials: int = _opt(
        20,
        "trials in the whole study, counted over all workers (finished, pruned, or failed by their own doing; "
        "crashed trials do not count)",
    )
    timeout: float = _opt(0.0, "stop this worker after this many seconds; 0 = no limit")
    study_name: str = _opt("tc-sweep", "Optuna study name; workers with the same name and storage share it")
    storage: str | None = _opt(
        None, "an Optuna journal file path, or an SQLAlchemy URL (postgresql://...); none = optuna_journal.log"
    )
    search_space: str | None = _opt(None, "YAML/JSON file of parameter -> {type, low, high, log | choices}")
    sampler: str = _opt(
        "qmc",
        "Optuna sampler: qmc (scrambled Sobol, space-filling; the default, because the sweep measures and does not "
        "optimise), random, grid (exact groups for Ψ), or tpe (optimises test accuracy: correlations are then "
        "measured along an optimiser's path)",
        SAMPLERS,
    )
    pruner: str = _opt("none", "prune trials whose test accuracy lags the median at the same epoch", PRUNERS)
    seed: int = _opt(0, "sampler seed (reproducible only with one worker) and every trial's training seed")
    dataset: str = _opt("digits", "data set of every trial", DATASETS)
    model: str = _opt("mlp", "architecture of every trial", MODELS)
    depth: int = _opt(0, "model depth of every trial; 0 = the model's default")
    epochs: int = _opt(300, "epochs of every trial; with target_loss, the cap")
    target_loss: float = _opt(
        0.01,
        "train every trial until its training cross-entropy (own labels, whole training set) is <= this "
        "(Jiang et al. 2020: equal fit); 0 = off. Trials that reach the cap first are reported apart",
    )
    seeds: int = _opt(2, "training seeds per configuration (2: gm_disagreement and <measure>_seed_sd); 1 or 2")
    max_samples: int = _opt(500, "analysis: examples per split")
    analyze_matrix: str = _opt("final", "analysis: final (scores only, fast) or full", MATRICES)
    anisotropy: bool = _opt(True, "analysis: also the anisotropy statistics")
    bootstrap: int = _opt(1000, "bootstrap resamples for the confidence intervals")

    def __post_init__(self) -> None:
        validate_choices(self)
        _check_range("n_trials", self.n_trials, 1)
        _check_range("timeout", self.timeout, 0.0)
        _check_range("epochs", self.epochs, 1)
        _check_range("target_loss", self.target_loss, 0.0)
        _check_range("seeds", self.seeds, 1, 2)
        _check_range("max_samples", self.max_samples, 0)
        _check_range("bootstrap", self.bootstrap, 100)
        if not self.study_name.strip():
            raise ValueError("study_name must not be empty")
