"""`AnalyzeConfig`: the `analyze` entry point's parameters (docs/analyze.md), and the grammars of its list-valued
fields, each parsed here once: `cuts` (`CutSpec`), `checkpoints` (`CheckpointSpec`), `splits`, `corruptions`,
`severities`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tc.config.fields import check_range, names_list, opt, split_list, unquote, validate_choices
from tc.config.vocabulary import (
    BN_MODES,
    CORRUPTION_NAMES,
    DEVICES,
    MATRICES,
    PRECISIONS,
    SEVERITIES,
    SPLITS,
    validate_model,
)

#: What an analysis leaves behind (`AnalyzeConfig.outputs`): everything, or only its metrics.
ANALYSIS_OUTPUTS = ("full", "measures")

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


CHECKPOINTS_USAGE = "use all, every:K (K >= 1), fractions:N (N >= 2), or a comma list of at least two steps"


def check_two_steps(text: str, steps: list[int]) -> None:
    """The one check that `checkpoints=text`, which lists `steps`, names at least two distinct steps: an
    analysis compares checkpoints, one alone is no analysis."""
    if len(set(steps)) < 2:
        raise ValueError(f"checkpoints={text!r} names fewer than two distinct steps; {CHECKPOINTS_USAGE}")


def _is_count(text: str) -> bool:
    """ASCII digits only (`"²".isdigit()` is True, and `int("²")` fails)."""
    return text.isascii() and text.isdigit()


@dataclass(frozen=True)
class CheckpointSpec:
    """`checkpoints` parsed: `all`; `every` K-th checkpoint counted from the first (plus the last); the
    checkpoints nearest N evenly spaced `fractions` of training; or the `steps` listed (sorted, without repeats).
    Which steps exist depends on the run, so `tc.analysis.splits.select_steps` finishes the job once the run's
    checkpoints are known."""

    kind: str  # "all", "every", "fractions" or "list"
    n: int = 0  # K of every:K, N of fractions:N
    steps: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> CheckpointSpec:
        """The spec `text` names (all, every:K with K >= 1, fractions:N with N >= 2, or a comma list of at least
        two distinct steps); a `ValueError` naming the valid forms when it names none."""
        if text == "all":
            return cls("all")
        for prefix, least in (("every:", 1), ("fractions:", 2)):
            if text.startswith(prefix):
                k = text.split(":", 1)[1].strip()
                if not _is_count(k) or int(k) < least:
                    raise ValueError(
                        f"checkpoints={text!r} is not valid: need an integer >= {least}; {CHECKPOINTS_USAGE}"
                    )
                return cls(prefix[:-1], int(k))
        steps = split_list(text)
        if not steps or not all(_is_count(s) for s in steps):
            raise ValueError(f"checkpoints={text!r} is not valid; {CHECKPOINTS_USAGE}")
        check_two_steps(text, [int(s) for s in steps])
        return cls("list", steps=tuple(sorted({int(s) for s in steps})))


def min_spectrum_units(k: int) -> int:
    """The fewest independent units (training minibatches, pairs of samples) on which the anisotropy tests'
    top-k explained variance can mean anything: k + 2. The n rows are centred by their mean, so they span at most
    n - 1 directions; with n <= k + 1 the top k carry all the variance, in the data and in every null draw alike
    (topk_var = 1 whatever the noise: the p-value compares rounding errors, anywhere in (0, 1], even small). k + 2
    is the least n that leaves one direction outside the top k.
    A floor, not a recommendation: the test's power grows with n (the default grad_batches is 32)."""
    return k + 2


def parse_splits(text: str) -> tuple[str, ...]:
    """`splits` parsed: the split names in the order given, each one of `SPLITS`, at least one, no repeats."""
    return names_list("splits", text, SPLITS, "split", f"use some of: {', '.join(SPLITS)}")


def parse_corruptions(text: str) -> tuple[str, ...]:
    """`corruptions` parsed: `all` (every name of `tc.config.vocabulary.CORRUPTION_NAMES`, in its order) or the
    names listed, each one of them, at least one, no repeats. To analyze no corrupted data, leave `corrupt`
    out of `splits`."""
    if unquote(text) == "all":
        return CORRUPTION_NAMES
    usage = f"use all or a comma list of: {', '.join(CORRUPTION_NAMES)} (no corrupt split: leave it out of splits)"
    return names_list("corruptions", text, CORRUPTION_NAMES, "corruption", usage)


def parse_severities(text: str) -> tuple[int, ...]:
    """`severities` parsed: the listed severities, each an integer 1..5, at least one, no repeats."""
    valid = tuple(map(str, SEVERITIES))
    return tuple(int(s) for s in names_list("severities", text, valid, "severity", "use a comma list of 1..5"))


@dataclass(frozen=True)
class AnalyzeConfig:
    """How `analyze` reads a training run's checkpoints and what it computes (SPEC sections 1-4).

    Example:

    >>> import tc
    >>> cfg = tc.AnalyzeConfig(run_id="0123abcd", splits="test,corrupt", max_samples=100)
    >>> cfg.splits, cfg.max_samples
    ('test,corrupt', 100)
    >>> tc.AnalyzeConfig(run_id="")
    Traceback (most recent call last):
        ...
    ValueError: run_id is required: the id of a training run (see `mlflow runs list`)
    """

    run_id: str = opt("", "the training run to analyze (required)", required=True)
    cuts: str = opt(
        "stages", "cuts: stages (the model's stage boundaries), all (every block boundary), or a list 1,4,7"
    )
    splits: str = opt("train,test,corrupt", "comma list of splits among train, test, corrupt")
    max_samples: int = opt(1000, "examples per split (seeded subset); 0 = the whole split")
    checkpoints: str = opt(
        "all",
        "checkpoints to use: all, every:K (every K-th, always the last), fractions:N (the checkpoints nearest N "
        "evenly spaced fractions of training, 0 to 1: matched across runs of different lengths), or a list of steps",
    )
    bn_mode: str = opt(
        "splice", "BatchNorm in composites: each part keeps its own statistics, or re-estimate", BN_MODES
    )
    corruptions: str = opt("all", "comma list of corruptions for the corrupt split, or all")
    severities: str = opt("3", "comma list of severities 1..5 for the corrupt split")
    reference_run_id: str | None = opt(None, "a second run (another seed) for the cross-seed control; none = skip")
    batch_size: int = opt(128, "examples per forward pass (per shallow checkpoint)")
    device: str = opt("auto", "where to compute; auto = cuda when available", DEVICES)
    precision: str = opt("fp32", "fp32, or bf16 autocast (faster where the hardware has bf16)", PRECISIONS)
    matrix: str = opt("full", "full: every (t1, t2) pair (heatmaps, lag curves); final: only t2 = last", MATRICES)
    phases: bool = opt(
        False, "also tc, tc_kappa and tc_full over the early, middle and late thirds of training (fractions)"
    )
    window: float = opt(0.5, "fraction of training, before the final checkpoint, that the tc score averages over")
    calibration_batches: int = opt(5, "training batches used to re-estimate BatchNorm (bn_mode=recalibrate)")
    seed: int = opt(0, "seed for the sample subsets and the corruptions")
    anisotropy: bool = opt(
        True, "also compute the SGD-noise anisotropy statistics (arXiv 2509.20334's anisotropic-noise claim)"
    )
    aniso_k: int = opt(3, "top-k principal directions for the explained-variance test and perturbations")
    null_draws: int = opt(1000, "Monte-Carlo draws of the isotropic Gaussian null")
    grad_batches: int = opt(
        32, "training minibatches for the gradient-noise covariance; at least aniso_k + 2 (the test's minimum)"
    )
    measures: bool = opt(
        True,
        "also the baseline generalization measures gm_* of the final checkpoint and tc_mmd, on the training and test "
        "samples whatever splits says",
    )
    costly_measures: bool = opt(
        True,
        "with measures: also gm_sharpness (a σ search: about 16 forwards per training sample) and tc_mmd (every "
        "window checkpoint's features on two splits); false = the cheap measures only, as a sweep's core analysis",
    )
    controls: bool = opt(
        True,
        "also the controls: tc_test_crossseed with a reference run (its deep parts on this run's features), "
        "bf16_agreement with precision=bf16",
    )
    model: str | None = opt(
        None, "a run of your own model (module:function): name it again here; tc never imports code a run names"
    )
    allow_unfinished: bool = opt(
        False, "analyze a run that is not FINISHED (killed, failed, still running); recorded in the analysis tags"
    )
    data_dir: str | None = opt(
        None,
        "directory with the run's data set files on this machine; none = $TC_DATA_DIR, then known places (the "
        "data_dir a run was trained with is a path on its trainer's machine: never read)",
    )
    download: bool = opt(
        False, "let torchvision download the run's data set (into data_dir, else $TC_DATA_DIR or tc's cache)"
    )

    outputs: str = opt(
        "full",
        "full: metrics, tables (CSV) and figures; measures: only the metrics, as a sweep trial reads them (no "
        "tables or figures are written back)",
        ANALYSIS_OUTPUTS,
    )

    def __post_init__(self) -> None:
        validate_choices(self)
        if self.model is not None:
            validate_model(self.model)
        if not unquote(self.run_id):
            raise ValueError("run_id is required: the id of a training run (see `mlflow runs list`)")
        # The list-valued fields stay strings (the command-line form, and what is logged), parsed here once
        # into typed values (not fields, so `asdict` and the logged parameters are unchanged).
        object.__setattr__(self, "_splits", parse_splits(self.splits))
        object.__setattr__(self, "_cut_spec", CutSpec.parse(self.cuts))
        object.__setattr__(self, "_corruptions", parse_corruptions(self.corruptions))
        object.__setattr__(self, "_severities", parse_severities(self.severities))
        object.__setattr__(self, "_checkpoint_spec", CheckpointSpec.parse(self.checkpoints))
        check_range("max_samples", self.max_samples, 0)
        check_range("batch_size", self.batch_size, 1)
        check_range("window", self.window, 0.0, 1.0, low_open=True)
        check_range("calibration_batches", self.calibration_batches, 1)
        check_range("aniso_k", self.aniso_k, 1, 10)
        check_range("null_draws", self.null_draws, 100)
        check_range("grad_batches", self.grad_batches, 3)
        if self.anisotropy and self.grad_batches < min_spectrum_units(self.aniso_k):
            raise ValueError(
                f"grad_batches={self.grad_batches} is too few for aniso_k={self.aniso_k}: the gradient-noise test "
                f"needs at least aniso_k + 2 = {min_spectrum_units(self.aniso_k)} minibatches (n centred minibatches "
                "span n - 1 directions; with n <= k + 1 the top k carry all the variance whatever the noise)"
            )

    @property
    def split_names(self) -> tuple[str, ...]:
        """`splits` parsed (`parse_splits`): the split names, in the order given."""
        return self._splits

    @property
    def cut_spec(self) -> CutSpec:
        """`cuts` parsed (`CutSpec.parse`); `CutSpec.resolve(model)` gives the indices."""
        return self._cut_spec

    @property
    def checkpoint_spec(self) -> CheckpointSpec:
        """`checkpoints` parsed (`CheckpointSpec.parse`); `tc.analysis.splits.select_steps` gives the steps."""
        return self._checkpoint_spec

    @property
    def corruption_names(self) -> tuple[str, ...]:
        """`corruptions` parsed (`parse_corruptions`): the corruption names."""
        return self._corruptions

    @property
    def severity_levels(self) -> tuple[int, ...]:
        """`severities` parsed (`parse_severities`): the severities 1..5."""
        return self._severities
