"""How tc's runs read in the MLflow UI: run names, Markdown descriptions and filterable tags.

Pure functions (configs and metric dicts in, strings out); `tc.tracking.ui` writes them to MLflow. MLflow shows
the tag `mlflow.runName` as the run's name and `mlflow.note.content` as its Markdown description.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

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
SWEEP_HEADLINE = ("test_acc", "tc_kappa_test", "tc_test", "tc_full_test", "tc_excess_test", "gen_gap")

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


def run_name(cfg: Any) -> str:
    """Name of a training run: `resnet20-w16 fashion-mnist seed0` (plus the settings that change the task)."""
    parts = [model_label(cfg), cfg.dataset, f"seed{cfg.seed}"]
    if getattr(cfg, "label_noise", 0):
        parts.append(f"noise{cfg.label_noise:g}")
    if getattr(cfg, "freeze_cut", 0):
        parts.append(f"freeze{cfg.freeze_cut}@{cfg.freeze_epoch}")
    return " ".join(parts)


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


def describe_train(cfg: Any, metrics: Mapping[str, float], analysis: Mapping[str, float] | None = None) -> str:
    """Markdown description of a training run: what was trained, final accuracies, and (once analyzed) the
    consistency headline."""
    lines = [f"**{run_name(cfg)}**: {cfg.model} on {cfg.dataset}, {cfg.epochs} epoch(s), seed {cfg.seed}.", ""]
    lines += _table(metrics, TRAIN_HEADLINE) or ["No accuracy logged yet."]
    if analysis:
        lines += ["", "Temporal consistency (latest `analyze`; files under *Artifacts > analysis/*):", ""]
        lines += _table(analysis, tuple(r for r in ANALYSIS_HEADLINE if r[0].startswith(("tc_", "half"))))
    return "\n".join(lines)


def describe_analysis(train_run_name: str, train_link: str, metrics: Mapping[str, float]) -> str:
    """Markdown description of an analyze run: the training run it analyzed (a link) and the headline."""
    lines = [f"Analysis of training run [{train_run_name}]({train_link}); metrics and figures are logged there.", ""]
    lines += _table(metrics, ANALYSIS_HEADLINE)
    return "\n".join(lines)


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


def train_tags(cfg: Any) -> dict[str, str]:
    """One tag per thing a user filters training runs by: `tags.\\`tc.dataset\\` = 'digits'` in the UI."""
    return {
        "tc.dataset": cfg.dataset,
        "tc.model": cfg.model,
        "tc.model_label": model_label(cfg),
        "tc.seed": str(cfg.seed),
    }


def analysis_tags(cfg: Any) -> dict[str, str]:
    """One `tc.analysis.<setting>` tag per analysis setting (not the run id itself), each filterable alone."""
    return {f"tc.analysis.{k}": _spell(v) for k, v in asdict(cfg).items() if k != "run_id"}


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
