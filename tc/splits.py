"""What an analysis evaluates: the cuts, the checkpoints and the sample splits, parsed from `AnalyzeConfig`.

Splits: `train` is a seeded subset of the training set with the labels the model was trained on (noisy
labels included); `test` a seeded subset of the test set; `corrupt` the same test subset with CIFAR-10-C-style
corruptions assigned round-robin (see `tc.corruptions.corrupted_set`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tc.config import AnalyzeConfig, CutSpec, check_two_steps, split_list
from tc.consistency import steps_at_fractions
from tc.corruptions import corrupted_set
from tc.data import DataBundle
from tc.models import BlockNet


@dataclass
class EvalSplit:
    name: str
    x: torch.Tensor  # uint8 images
    y: torch.Tensor
    corruption: list[str] | None = None
    severity: list[int] | None = None


def parse_cuts(spec: CutSpec | str, model: BlockNet) -> list[int]:
    """The cut indices `spec` (an `AnalyzeConfig.cut_spec`, or its text) names on `model`."""
    return (CutSpec.parse(spec) if isinstance(spec, str) else spec).resolve(model)


def select_steps(text: str, steps: list[int]) -> list[int]:
    """`all`, `every:K` (every K-th checkpoint counted from the first, plus the last), `fractions:N` (the
    checkpoints nearest the fractions 0, 1/(N-1), ..., 1 of the last step: `tc.consistency.steps_at_fractions`;
    fewer than N when the run has too few checkpoints to tell them apart), or a list of steps."""
    if text == "all":
        return list(steps)
    if text.startswith("fractions:"):
        n = int(text.split(":", 1)[1])
        if n < 2:
            raise ValueError(f"checkpoints={text!r}: N must be >= 2")
        return sorted(set(steps_at_fractions(steps, [i / (n - 1) for i in range(n)])))
    if text.startswith("every:"):
        k = int(text.split(":", 1)[1])
        if k < 1:
            raise ValueError(f"checkpoints={text!r}: K must be >= 1")
        return sorted(set(steps[::k]) | {steps[-1]})
    try:
        chosen = sorted({int(s) for s in split_list(text)})
    except ValueError:
        raise ValueError(f"checkpoints={text!r} is not valid; use all, every:K, or a list of steps") from None
    missing = sorted(set(chosen) - set(steps))
    if missing:
        raise ValueError(f"checkpoints: steps {missing} are not in the run; it has {steps}")
    check_two_steps(text, chosen)
    return chosen


def _subset(n: int, k: int, seed: int) -> torch.Tensor:
    if k == 0 or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def sample_count(data: DataBundle, cfg: AnalyzeConfig) -> int:
    """len(y) summed over `make_splits(data, cfg)`, without building the (corrupted) splits."""
    names = cfg.split_names
    n_test = len(_subset(len(data.test_y), cfg.max_samples, cfg.seed + 1))
    n_train = len(_subset(len(data.train_y), cfg.max_samples, cfg.seed)) if "train" in names else 0
    return n_train + n_test * (("test" in names) + ("corrupt" in names))


def make_splits(data: DataBundle, cfg: AnalyzeConfig) -> list[EvalSplit]:
    names = cfg.split_names
    out = []
    if "train" in names:
        idx = _subset(len(data.train_y), cfg.max_samples, cfg.seed)
        out.append(EvalSplit("train", data.train_x[idx], data.train_y[idx]))
    test_idx = _subset(len(data.test_y), cfg.max_samples, cfg.seed + 1)
    if "test" in names:
        out.append(EvalSplit("test", data.test_x[test_idx], data.test_y[test_idx]))
    if "corrupt" in names:
        x, cor, sev = corrupted_set(data.test_x[test_idx], cfg.corruption_names, cfg.severity_levels, cfg.seed)
        out.append(EvalSplit("corrupt", x, data.test_y[test_idx], cor, sev))
    return out


def split_named(splits: list[EvalSplit], name: str) -> EvalSplit | None:
    return next((s for s in splits if s.name == name), None)
