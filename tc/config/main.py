"""`MainConfig`: the quick start's parameters (`mlflow run .`, the `main` entry point; README).

The quick start trains ResNet-20 on Fashion-MNIST with `train` and analyzes it with `analyze`; each of its
parameters is passed on to one of them, so its meaning is that field's help (`passed_on`)."""

from __future__ import annotations

from dataclasses import dataclass

from tc.config.analyze import AnalyzeConfig
from tc.config.fields import passed_on
from tc.config.train import TrainConfig


@dataclass(frozen=True)
class MainConfig:
    """The quick start's run: its length, data, width and seed (to `train`) and the analysis's sample size (to
    `analyze`). Every other setting is the entry point's default, but the checkpoints, the test set evaluated at
    the last epoch only (`test_every` 0) and no measures gm_* (`measures` false): `entrypoints/main.py` says why."""

    epochs: int = passed_on(TrainConfig, "epochs", 5, "train")
    train_size: int = passed_on(TrainConfig, "train_size", 5000, "train")
    width: int = passed_on(TrainConfig, "width", 16, "train")
    seed: int = passed_on(TrainConfig, "seed", 0, "train")
    max_samples: int = passed_on(AnalyzeConfig, "max_samples", 500, "analyze")

    def __post_init__(self) -> None:
        # Each value is checked by the config it is passed to (its rules and messages, written once there), so a bad
        # value fails here, before the parent run starts. The analysis's run id is not known yet: a stand-in.
        TrainConfig(epochs=self.epochs, train_size=self.train_size, width=self.width, seed=self.seed)
        AnalyzeConfig(run_id="(the quick start's training run)", max_samples=self.max_samples)
