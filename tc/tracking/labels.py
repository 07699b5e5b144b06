"""How tc's runs read in the MLflow UI: run names, Markdown descriptions and filterable tags.

Pure functions (configs and metric dicts in, strings out); `tc.tracking.ui` writes them to MLflow. MLflow shows
the tag `mlflow.runName` as the run's name and `mlflow.note.content` as its Markdown description.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict
from typing import Any

from tc.config import AnalyzeConfig, TrainConfig

EXPERIMENT = "tc"  # the default experiment of tc's runs (MLFLOW_EXPERIMENT_NAME / --experiment-name override it)

# The measures a description shows, in this order, with their labels (absent ones are skipped).
TRAIN_HEADLINE = (("test_acc", "test accuracy"), ("train_acc", "train accuracy"), ("test_loss", "test loss"))
ANALYSIS_HEADLINE = (
    ("tc_kappa_test", "κ test (chance-corrected consistency)"),
    ("tc_test", "tc test"),
    ("tc_full_test", "tc full test"),
    ("tc_train", "tc train"),
    ("tc_corrupt", "tc corrupt"),
    ("half_life_test", "half-life test"),
    ("test_acc", "test accuracy"),
    ("acc_test", "test accuracy (analysis samples)"),
)
# tc_gain_test, not the ratio tc_excess_test: the convergence-adjusted score that stays stable as tc_full -> 1
SWEEP_HEADLINE = ("test_acc", "tc_kappa_test", "tc_test", "tc_full_test", "tc_gain_test", "gen_gap")

# MLflow's generated names look like `polite-horse-192`: those are the ones tc replaces.
_GENERATED = re.compile(r"^[a-z]+-[a-z]+-\d+$")


def is_generated_name(name: str | None) -> bool:
    """True for a name MLflow made up (adjective-noun-number) or no name: tc may replace it, a user's not."""
    return not name or bool(_GENERATED.match(name))


def model_label(cfg: Any) -> str:
    """`resnet20-w16`, `vgg6-w8`, `mlp3-w64`, `torchvision:resnet18`: depth and width where they apply."""
    model = cfg.model
    if ":" in model:  # torchvision or a user factory: depth/width are not its knobs
        return model
    depth = {"resnet20": "resnet", "vgg": "vgg", "mlp": "mlp"}.get(model)
    name = f"{depth}{cfg.depth}" if depth and cfg.depth else model
    return f"{name}-w{cfg.width}"


# How a training setting that differs from its `TrainConfig` default is spelled in a run name; the name lists
# them in TrainConfig's field order, between the data set and the seed. `model_label` holds model, depth and width;
# dataset and seed are always named; `freeze_epoch` is spelled with `freeze_cut` (alone it changes nothing).
_SPELLINGS: dict[str, Callable[[Any], str]] = {
    "epochs": lambda v: f"ep{v}",
    "target_loss": lambda v: f"loss{v:g}",
    "batch_size": lambda v: f"bs{v}",
    "lr": lambda v: f"lr{v:g}",
    "momentum": lambda v: f"mom{v:g}",
    "weight_decay": lambda v: f"wd{v:g}",
    "optimizer": str,
    "schedule": lambda v: f"{v}-lr",
    "label_noise": lambda v: f"noise{v:g}",
    "augment": lambda v: "aug" if v else "noaug",
    "train_size": lambda v: f"n{v}",
}
#: TrainConfig fields a run name never shows: named otherwise (model_label, dataset, seed, freeze) or not changing
#: what is trained (where it runs, where its data lies, how often its checkpoints are saved or the test set scored)
NAME_LEAVES_OUT = ("model", "depth", "width", "dataset", "seed", "freeze_cut", "freeze_epoch", "checkpoint_every")
NAME_LEAVES_OUT += ("device", "data_dir", "download", "test_every")
_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def run_name(cfg: Any, unknown: Collection[str] = ()) -> str:
    """Name of a training run: model label, data set, every setting that differs from its `TrainConfig` default
    (the dataclass is the one owner of the defaults), seed: `mlp3-w64 digits lr0.02 seed0`,
    `resnet20-w16 fashion-mnist ep30 n5000 noise0.2 freeze2@1 seed1`. Two runs that differ in a setting that changes
    what is trained get different names; device, data_dir, download and checkpoint_every do not. `unknown`: the
    settings an own-loop run did not log (`tc.log_run_info`): their defaults are not the run's, so the seed is
    left out (the other unknown settings are at their defaults, which the name never shows)."""
    parts = [model_label(cfg), cfg.dataset]
    for name, spell in _SPELLINGS.items():
        value = getattr(cfg, name, _TRAIN_DEFAULTS[name])
        if value != _TRAIN_DEFAULTS[name]:
            parts.append(spell(value))
    if getattr(cfg, "freeze_cut", 0):
        parts.append(f"freeze{cfg.freeze_cut}@{cfg.freeze_epoch}")
    return " ".join(parts if "seed" in unknown else [*parts, f"seed{cfg.seed}"])


#: the start of every refused command's run name (`refused_name`): `attributes.run_name LIKE 'refused:%'` finds them
REFUSED = "refused: "


def refused_name(message: str, width: int = 90) -> str:
    """Name of the run of a refused command: `refused: <what is wrong>`. tc's refusals read "what is wrong; how
    to fix it" (or its first line says what is wrong, the next ones how to fix it): the name keeps the first line
    up to the first "; ", cut at a word to about `width` characters (the whole message is the run's `tc.error`)."""
    lines = str(message).strip().splitlines() or [""]
    reason = " ".join(lines[0].split()).split("; ")[0] or "no reason given"
    if len(reason) > width:
        cut = reason[: width - 1]
        if " " in cut[width // 2 :]:
            cut = cut.rsplit(" ", 1)[0]
        reason = cut.rstrip(" ,:;") + "…"
    return REFUSED + reason


def analyze_name(train_run_name: str) -> str:
    return f"analyze {train_run_name}"


def sweep_name(study: str) -> str:
    return f"sweep {study}"


def trial_name(number: int, seed: int | None = None) -> str:
    """A sweep trial's run: "trial N"; its second seed's run (seeds=2): "trial N seedS"."""
    return f"trial {number}" if seed is None else f"trial {number} seed{seed}"


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def _table(metrics: Mapping[str, float], rows: tuple[tuple[str, str], ...]) -> list[str]:
    present = [(k, label) for k, label in rows if k in metrics]
    if not present:
        return []
    return ["| measure | metric | value |", "|---|---|---|"] + [
        f"| {label} | `{k}` | {_fmt(metrics[k])} |" for k, label in present
    ]


def describe_train(
    cfg: Any,
    metrics: Mapping[str, float],
    analysis: Mapping[str, float] | None = None,
    settings: Mapping[str, str] | None = None,
    unknown: Collection[str] = (),
) -> str:
    """Markdown description of a training run: what was trained, final accuracies, and (once analyzed) the
    consistency headline with `settings`, the analysis settings that changed its numbers (`score_settings`).
    `unknown`: settings the run did not log (an own loop's), said as such instead of tc's defaults."""
    said = [f"{cfg.epochs} epoch(s)" if "epochs" not in unknown else "epochs not logged"]
    said.append(f"seed {cfg.seed}" if "seed" not in unknown else "seed not logged")
    lines = [f"**{run_name(cfg, unknown)}**: {cfg.model} on {cfg.dataset}, {', '.join(said)}.", ""]
    lines += _table(metrics, TRAIN_HEADLINE) or ["No accuracy logged yet."]
    if analysis:
        lines += ["", "Temporal consistency (latest `analyze`; files under *Artifacts > analysis/*):", ""]
        lines += _table(analysis, tuple(r for r in ANALYSIS_HEADLINE if r[0].startswith(("tc_", "half"))))
        lines += _settings_lines(settings)
    return "\n".join(lines)


def describe_analysis(
    train_run_name: str, train_link: str, metrics: Mapping[str, float], settings: Mapping[str, str] | None = None
) -> str:
    """Markdown description of an analyze run: the training run it analyzed (a link), the headline, and
    `settings`, the analysis settings that changed its numbers (`score_settings`)."""
    lines = [f"Analysis of training run [{train_run_name}]({train_link}); metrics and figures are logged there.", ""]
    lines += _table(metrics, ANALYSIS_HEADLINE)
    lines += _settings_lines(settings)
    return "\n".join(lines)


def _settings_lines(settings: Mapping[str, str] | None) -> list[str]:
    if not settings:
        return []
    shown = " ".join(f"`{k}={v}`" for k, v in settings.items())
    return [
        "",
        f"Analysis settings: {shown}; the others that change a number are at their defaults (each setting is "
        "a `tc.analysis.<name>` tag, `tc.analysis_settings` all of these in one column).",
    ]


def describe_sweep(
    study: str, n_finished: int, best: Mapping[str, Any] | None, notes: list[str] | tuple[str, ...] = ()
) -> str:
    """Markdown description of a sweep run: its study, its finished (trained and analyzed) trials, `notes` (how
    every trial ended and what the correlations may say: `tc.sweep.outcomes`), and the best trial."""
    lines = [f"Optuna study **{study}**: {n_finished} finished trial(s); each is a nested run `trial N`."]
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    if best:
        lines += ["", "Best trial by test accuracy:", ""]
        lines += [f"- `{k}`: {_fmt(v) if isinstance(v, float) else v}" for k, v in best.items()]
    return "\n".join(lines)


def train_tags(cfg: Any, unknown: Collection[str] = ()) -> dict[str, str]:
    """One tag per thing a user filters training runs by: `tags.\\`tc.dataset\\` = 'digits'` in the UI (no
    `tc.seed` for a run that did not log its seed: `unknown`)."""
    tags = {"tc.dataset": cfg.dataset, "tc.model": cfg.model, "tc.model_label": model_label(cfg)}
    return tags if "seed" in unknown else {**tags, "tc.seed": str(cfg.seed)}


# The analysis settings that change the value of a score (not only which scores exist, as splits, matrix, phases,
# anisotropy, measures, costly_measures, controls and outputs do; nor only where or whether it runs, as device,
# data_dir, download, model and allow_unfinished do), in the order a description shows them. The first four are always
# shown, the others when they differ from their AnalyzeConfig default: the consistency window and checkpoints, the cuts
# and samples it averages over; BatchNorm in composites (and its recalibration batches, of batch_size examples); the
# corrupt split; bf16; the seed of every subset; the anisotropy test's k, null draws and gradient minibatches (of
# batch_size).
SCORE_SETTINGS = ("window", "checkpoints", "cuts", "max_samples", "bn_mode", "calibration_batches", "corruptions")
SCORE_SETTINGS += ("severities", "precision", "batch_size", "seed", "aniso_k", "null_draws", "grad_batches")
# reference_run_id is left out: it differs per run (a sweep trial's two seeds name each other), so it would split
# runs analysed alike into different values of the one column; its own tag `tc.analysis.reference_run_id` stays
ALWAYS_SHOWN = SCORE_SETTINGS[:4]
#: the tag that holds `settings_text` of an analysis (one column in the runs table)
SETTINGS_TAG = "tc.analysis_settings"


def analysis_tags(cfg: Any) -> dict[str, str]:
    """One `tc.analysis.<setting>` tag per analysis setting (not the run id itself), each filterable alone, and
    `tc.analysis_settings`: the settings that change a score, in one line (`settings_text`)."""
    tags = {f"tc.analysis.{k}": _spell(v) for k, v in asdict(cfg).items() if k != "run_id"}
    return {**tags, SETTINGS_TAG: settings_text(analysis_settings(cfg))}


def analysis_settings(cfg: Any) -> dict[str, str]:
    """`score_settings` of an analysis config."""
    return score_settings({k: _spell(v) for k, v in asdict(cfg).items()})


def settings_from_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The analysis settings of a run's `tc.analysis.<setting>` tags (setting -> value as spelled there)."""
    prefix = "tc.analysis."
    return {k[len(prefix) :]: v for k, v in tags.items() if k.startswith(prefix)}


def score_settings(values: Mapping[str, str]) -> dict[str, str]:
    """Of `values` (setting -> value, spelled as the tags and MLproject spell them), the settings that change a
    score: the four of `ALWAYS_SHOWN` and the other `SCORE_SETTINGS` that differ from their `AnalyzeConfig`
    default, in `SCORE_SETTINGS`' order. Settings absent from `values` are skipped."""
    defaults = {f.name: _spell(f.default) for f in dataclasses.fields(AnalyzeConfig)}
    return {k: values[k] for k in SCORE_SETTINGS if k in values and (k in ALWAYS_SHOWN or values[k] != defaults[k])}


def settings_text(settings: Mapping[str, str]) -> str:
    """`window=0.3 checkpoints=all cuts=stages max_samples=1000`: `score_settings` in one line."""
    return " ".join(f"{k}={v}" for k, v in settings.items())


def _spell(value: Any) -> str:
    """As MLproject parameters spell values (none, true/false), so a tag filter uses the command's words."""
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def gen_gap(metrics: dict[str, float]) -> float:
    """The generalization gap of a training run, the one definition tc uses (trials.csv, the correlations'
    `gen_gap` target, the Optuna dashboard's attribute via `trial_attrs`; `tc.sweep.summary.trials_table` calls
    this function, kept here so the light path needs no pandas or scipy): accuracy on the whole training set with
    its ORIGINAL (clean) labels minus `test_acc`, both of the final model in eval mode, both logged by
    `tc.core.train.train` at its last epoch (`train_acc_clean`, `test_acc`: the whole test set).

    SPEC 6.1 defines the gap as train_acc - test_acc of the model. Clean labels, because a noisy label is one
    the network should get wrong: trained to the same cross-entropy (target_loss), every trial fits its noisy
    labels about equally (train_acc near 1), so the gap on them would be test error again, the first target
    in disguise, and would score memorising noise as fitting. Whole sets, not the analysis samples (acc_train,
    acc_test): the target of a rank correlation should carry no subsampling noise. Without label noise,
    train_acc_clean is train_acc. Sampling unit: none (a difference of two full-set accuracies). NaN when a
    run lacks `train_acc_clean` or `test_acc` (never a proxy from other metrics)."""
    if "train_acc_clean" not in metrics or "test_acc" not in metrics:
        return math.nan
    return float(metrics["train_acc_clean"] - metrics["test_acc"])


def trial_attrs(metrics: Mapping[str, float]) -> dict[str, float]:
    """A trial's headline measures for the Optuna dashboard (user attributes), NaN-free (JSON-safe).
    `gen_gap` is `gen_gap` (above) of the trial run's metrics: the very number of the sweep's trials.csv."""
    metrics = {**metrics, "gen_gap": gen_gap(dict(metrics))}
    out = {}
    for k in SWEEP_HEADLINE:
        v = metrics.get(k)
        if v is not None and math.isfinite(float(v)):
            out[k] = float(v)
    return out
