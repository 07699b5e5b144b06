"""`TrainConfig`: the `train` entry point's parameters (docs/train.md)."""

from __future__ import annotations

from dataclasses import dataclass

from tc.config.fields import check_range, opt, validate_choices
from tc.config.vocabulary import (
    DATASETS,
    DEVICES,
    OPTIMIZERS,
    SCHEDULES,
    default_depth,
    validate_depth,
    validate_model,
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. Same config + same seed on CPU = identical checkpoints.

    Example:

    >>> import tc
    >>> cfg = tc.TrainConfig(dataset="digits", model="mlp", epochs=2)
    >>> cfg.epochs, cfg.batch_size, cfg.lr
    (2, 128, 0.1)
    >>> tc.TrainConfig(lr=-1.0)
    Traceback (most recent call last):
        ...
    ValueError: lr=-1.0 is out of range; it must be > 0.0
    """

    dataset: str = opt("fashion-mnist", "data set name", DATASETS)
    model: str = opt(
        "resnet20",
        "architecture: resnet20, vgg, mlp, torchvision:<name> (e.g. torchvision:resnet18, no weights), or "
        "<module>:<function> (your own factory); optional @cut1,cut2 (module names to cut after)",
    )
    depth: int = opt(
        0,
        "model depth; 0 = the model's default (resnet: 6n+2 layers, 20; vgg: conv layers, 6; mlp: hidden layers, 3)"
        "; must be 0 for torchvision and user models",
    )
    width: int = opt(16, "base width: channels of the first stage (resnet, vgg) or hidden units (mlp)")
    epochs: int = opt(5, "passes over the training set (with target_loss: the cap)")
    target_loss: float = opt(
        0.0,
        "stop at the first epoch end where the cross-entropy on the whole training set, with the labels used "
        "(noisy ones included), eval mode, is <= target_loss; 0 = off (train all epochs)",
    )
    batch_size: int = opt(128, "examples per optimizer step")
    lr: float = opt(0.1, "peak learning rate")
    momentum: float = opt(0.9, "SGD momentum (Adam: beta1)")
    weight_decay: float = opt(5e-4, "L2 weight decay")
    optimizer: str = opt("sgd", "optimizer", OPTIMIZERS)
    schedule: str = opt("cosine", "learning-rate schedule over all steps (step: x0.1 at 50% and 75%)", SCHEDULES)
    label_noise: float = opt(0.0, "fraction of training labels replaced by uniformly random labels, in [0, 1]")
    augment: bool = opt(False, "random crop (+ horizontal flip where flips keep labels) on training batches")
    train_size: int = opt(0, "seeded subset of the training set; 0 = all of it")
    seed: int = opt(0, "seed for initialisation, subset, label noise, data order and augmentation")
    checkpoint_every: int = opt(0, "optimizer steps between checkpoints; 0 = once per epoch")
    test_every: int = opt(
        1,
        "epochs between evaluations on the whole test set (test_loss, test_acc), and always at the last epoch; "
        "0 = at the last epoch only (final test accuracy is the same, training is faster on small training sets)",
    )
    device: str = opt("auto", "where to train; auto = cuda when available", DEVICES)
    freeze_cut: int = opt(
        0, "freeze blocks [0, freeze_cut) from epoch freeze_epoch on (arXiv 2509.20334's freezing control); 0 = never"
    )
    freeze_epoch: int = opt(1, "the epoch (0-based) from which the shallow blocks are frozen")
    data_dir: str | None = opt(None, "directory with the data set files; none = $TC_DATA_DIR, then known places")
    download: bool = opt(False, "let torchvision download the data set when it is not found locally")

    def __post_init__(self) -> None:
        validate_choices(self)
        validate_model(self.model)  # syntax only: a run's stored config must never import code
        if self.depth == 0:
            object.__setattr__(self, "depth", default_depth(self.model))
        validate_depth(self.model, self.depth)
        for name in ("width", "epochs", "batch_size"):
            check_range(name, getattr(self, name), 1)
        check_range("lr", self.lr, 0.0, low_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("label_noise", self.label_noise, 0.0, 1.0)
        check_range("target_loss", self.target_loss, 0.0)
        check_range("train_size", self.train_size, 0)
        check_range("checkpoint_every", self.checkpoint_every, 0)
        check_range("test_every", self.test_every, 0)
        check_range("seed", self.seed, 0)
        check_range("freeze_cut", self.freeze_cut, 0)
        check_range("freeze_epoch", self.freeze_epoch, 0)
