"""`MainConfig`: the quick start's parameters (`mlflow run .`, the `main` entry point; README).

The quick start trains ResNet-20 on Fashion-MNIST with `train` and analyzes it with `analyze`; each of its
parameters is passed on to one of them, so its meaning is that field's help (`passed_on`)."""

from __future__ import annotations

from dataclasses import dataclass

from tc.config.analyze import AnalyzeConfig
from tc.config.fields import check_range, passed_on
from tc.config.train import TrainConfig


@dataclass(frozen=True)
class MainConfig:
    """The quick start's run: its length, data, width and seed (to `train`) and the analysis's sample size (to
    `analyze`). Every other setting is the entry point's default, but the checkpoints (`entrypoints/main.py`)."""

    epochs: int = passed_on(TrainConfig, "epochs", 5, "train")
    train_size: int = passed_on(TrainConfig, "train_size", 5000, "train")
    width: int = passed_on(TrainConfig, "width", 16, "train")
    seed: int = passed_on(TrainConfig, "seed", 0, "train")
    max_samples: int = passed_on(AnalyzeConfig, "max_samples", 500, "analyze")

    def __post_init__(self) -> None:
        # the ranges of the fields they are passed to: a bad value fails here, before the parent run starts
        for name in ("epochs", "width"):
            check_range(name, getattr(self, name), 1)
        for name in ("train_size", "seed", "max_samples"):
            check_range(name, getattr(self, name), 0)
