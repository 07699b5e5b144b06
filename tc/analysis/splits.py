"""What an analysis evaluates: the cuts, the checkpoints and the sample splits, parsed from `AnalyzeConfig`.

Splits: `train` is a seeded subset of the training set with the labels the model was trained on (noisy
labels included); `test` a seeded subset of the test set; `corrupt` the same test subset with CIFAR-10-C-style
corruptions assigned round-robin (see `tc.core.corruptions.corrupted_set`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from tc.config import AnalyzeConfig, CheckpointSpec, CutSpec
from tc.core.consistency import steps_at_fractions
from tc.core.corruptions import corrupted_set
from tc.core.data import DataBundle
from tc.core.models import BlockNet


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


def select_steps(spec: CheckpointSpec | str, steps: list[int]) -> list[int]:
    """The run's `steps` that `spec` (an `AnalyzeConfig.checkpoint_spec`, or its text: `CheckpointSpec.parse`'s
    grammar) selects: `all`; `every:K` (every K-th checkpoint counted from the first, plus the last);
    `fractions:N` (the checkpoints nearest the fractions 0, 1/(N-1), ..., 1 of the last step:
    `tc.core.consistency.steps_at_fractions`; fewer than N when the run has too few checkpoints to tell them
    apart); or the steps listed, each of which the run must have."""
    spec = CheckpointSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.kind == "all":
        return list(steps)
    if spec.kind == "fractions":
        return sorted(set(steps_at_fractions(steps, [i / (spec.n - 1) for i in range(spec.n)])))
    if spec.kind == "every":
        return sorted(set(steps[:: spec.n]) | {steps[-1]})
    missing = sorted(set(spec.steps) - set(steps))
    if missing:
        raise ValueError(f"checkpoints: steps {missing} are not in the run; it has {steps}")
    return list(spec.steps)


# How a short run (the quick start, `entrypoints/main.py`) spreads its checkpoints so that tc's window holds enough
# of them without analyzing more than 6: see `checkpoint_interval` and `window_spread_steps`.
WINDOW_CHECKPOINTS = 4


def checkpoint_interval(total: int) -> int:
    """Optimizer steps between saved checkpoints for a run of `total` steps whose analysis will read
    `window_spread_steps`: total // 8 when 8 divides `total`, else max(1, total // 16).

    Why: `window_spread_steps` wants a saved step at each of 4/8, 5/8, 6/8, 7/8 of training. When 8 divides the
    total, saving every eighth puts one exactly there (9 checkpoints). Otherwise flooring an eighth drifts:
    for 2345 steps, every 293 saves ..., 2051, 2344, 2345, so the last eighth's checkpoint sits one step before
    the end. Saving every sixteenth (floored, e = total // 16 <= total / 16) keeps each chosen step within e of
    its target: the four are distinct, the window's spacing stays within total / 8 ± total / 16, and the last
    one is at least total / 16 before the final step. Runs shorter than 16 steps save every step."""
    if total < 1:
        raise ValueError(f"checkpoint_interval: a run needs at least 1 step, got {total}")
    return total // 8 if total % 8 == 0 else max(1, total // 16)


def window_spread_steps(
    steps: list[int], window: float = AnalyzeConfig.window, n: int = WINDOW_CHECKPOINTS
) -> list[int]:
    """The checkpoints to analyze out of a run's saved `steps`: the first saved one (step 0, the initialisation,
    when the run logged it; the distance-from-init measures read step 0 whatever is selected, see
    `tc.core.checkpoints.init_index`), the final one T, and the first saved step at or after each of the `n`
    fractions 1 - window + k * window / n (k = 0 .. n-1) of T: 4/8, 5/8, 6/8, 7/8 for the default window 0.5.

    Why: tc's window (`tc.core.consistency.window`: the checkpoints at or after (1 - window) * T, the final one
    excluded) then holds up to `n` checkpoints spread evenly over it, while the composite phase, whose cost grows
    with the square of the number of analyzed checkpoints, composes at most n + 2. With `checkpoint_interval`'s
    saves and the default window 0.5 the `n` are distinct for runs of 8 steps or more (a window under half of
    training can get fewer); shorter runs get the distinct ones there are."""
    if not steps:
        raise ValueError("window_spread_steps: the run has no checkpoints")
    steps = sorted(steps)
    last = steps[-1]
    start = (1 - window) * last  # the very expression `tc.core.consistency.window` compares against
    targets = [start + k * window * last / n for k in range(n)]
    chosen = {steps[0], last}  # the first saved step: the initialisation only when it is step 0
    for t in targets:
        chosen.add(steps[bisect.bisect_left(steps, t)] if t <= last else last)
    return sorted(chosen)


def _subset(n: int, k: int, seed: int) -> torch.Tensor:
    if k == 0 or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def sample_notes(data: DataBundle, cfg: AnalyzeConfig) -> tuple[dict[str, float], list[str]]:
    """({n_samples_<split>: examples `make_splits` gives that split}, warnings): `max_samples` each, or the whole
    set the split is drawn from when it holds fewer, which one warning per set says (the corrupt split is the
    test subset, corrupted), as one more does for a set that only the measures read (`cfg.measures` with no split
    drawn from it). Computed from the set sizes, without building the (corrupted) splits."""
    sizes = {"train": len(data.train_y), "test": len(data.test_y)}
    source = {"train": "train", "test": "test", "corrupt": "test"}
    used = {where: min(n, cfg.max_samples or n) for where, n in sizes.items()}  # as `_subset` draws them
    metrics = {f"n_samples_{name}": float(used[source[name]]) for name in cfg.split_names}
    short: dict[str, list[str]] = {}
    for name in cfg.split_names:
        if cfg.max_samples > sizes[source[name]]:
            short.setdefault(source[name], []).append(name)
    warnings = [
        f"the {where} set has {sizes[where]} examples, fewer than max_samples={cfg.max_samples}: split(s) "
        f"{', '.join(names)} analyze all {sizes[where]}"
        for where, names in short.items()
    ]
    # the measures read the train and test samples whatever `splits` says (`tc.analysis.run.measure_samples`): a
    # set no split reads is said here (no n_samples_<split>: it is no split, and `sample_count` counts splits)
    read = {source[name] for name in cfg.split_names}
    warnings += [
        f"the {where} set has {sizes[where]} examples, fewer than max_samples={cfg.max_samples}: the measures "
        f"(gm_*, tc_mmd) read all {sizes[where]}"
        for where in (("train", "test") if cfg.measures else ())
        if where not in read and cfg.max_samples > sizes[where]
    ]
    return metrics, warnings


def sample_count(data: DataBundle, cfg: AnalyzeConfig) -> int:
    """len(y) summed over `make_splits(data, cfg)`, without building the (corrupted) splits."""
    return int(sum(sample_notes(data, cfg)[0].values()))


MIN_CHECKPOINTS = 2  # an analysis compares checkpoints: with one, the tc window is empty and every score NaN


def checkpoint_notes(steps: list[int], cfg: AnalyzeConfig) -> tuple[dict[str, float], list[str]]:
    """({n_checkpoints: the checkpoints analyzed}, warnings): a warning when `checkpoints=fractions:N` gave fewer
    than N (the run's checkpoints are too few to tell the fractions apart: `select_steps`); a `ValueError` for
    fewer than `MIN_CHECKPOINTS`, stating the minimum."""
    if len(steps) < MIN_CHECKPOINTS:
        raise ValueError(
            f"checkpoints={cfg.checkpoints} selected {len(steps)} checkpoint(s) (steps {steps}): an analysis "
            f"compares checkpoints and needs at least {MIN_CHECKPOINTS}"
        )
    spec, warnings = cfg.checkpoint_spec, []
    if spec.kind == "fractions" and len(steps) < spec.n:
        warnings.append(
            f"checkpoints=fractions:{spec.n} selected {len(steps)} checkpoints (steps {steps}): the run's "
            f"checkpoints are too few to give {spec.n} distinct nearest ones; save more (checkpoint_every)"
        )
    return {"n_checkpoints": float(len(steps))}, warnings


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
