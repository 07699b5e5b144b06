"""The report's sweep environments: each a family of trainable configurations (a data set, a model family, a
search space) over which a measure's rank correlation with test accuracy is computed on its own (Dziugaite et
al., NeurIPS 2020: a measure is judged by its worst environment, not by an average over them). Pure: names and
sweep parameters out; `tc.report.produce` runs one sweep per environment.

Issue 23 fills this in (the Fashion-MNIST conv environment, the digits space without label noise); the interface
is `Environment` and `environments(quick, root)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Environment:
    """One environment: `name` (a short key, used in file and study names), `title` (in words, for the report)
    and `sweep`: sweep parameters (SweepConfig fields) on top of the report's own (`experiments.sweep_parameters`)."""

    name: str
    title: str
    sweep: dict = field(default_factory=dict)


def environments(quick: bool, root: Path) -> tuple[Environment, ...]:
    """The report's environments, in report order. Quick: toy scale (what tests/test_report.py runs)."""
    if quick:
        digits = {"search_space": str(root / "examples/digits_space.yaml"), "epochs": 150}
        return (Environment("digits-mlp", "MLP on 8x8 digits", digits),)
    return (Environment("digits-mlp", "MLP on 8x8 digits", {}),)
