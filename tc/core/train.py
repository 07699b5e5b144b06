"""The training loop: short, deterministic on CPU, resumable; everything else is a callback.

Data order and augmentation come from generators rebuilt from (seed, epoch, batch) at every batch (see
`tc.core.data.batch_generator`: there is no running data-loader state to keep), and the learning rate is a pure
function of the step. What else draws random numbers during training (dropout and any other random layer of
a user's model) draws from the global streams: torch's CPU generator, the training GPU's CUDA generator, and
Python's `random` and NumPy's global stream for user code that uses them. So the whole state of a run at step
s is (model, optimizer, running sums of the current epoch, those streams' states); that is what
`resume_state` holds, as tensors and builtins that `torch.load(weights_only=True)` reads:

    {"step", "model", "optimizer", "sums", "pending_metrics", "train_seconds",
     "rng": {"torch", "python", "numpy", and "cuda" when training on a GPU}}

and why a resumed run reproduces an uninterrupted one bit for bit (same device and kernels). A state that
cannot promise it (one written before "rng" existed, or saved on another kind of device) is still resumed,
with a `ResumeNotExactWarning` that says why (callbacks get `on_resume(step, reason)`).

Time: `train_seconds` is the wall time spent inside `train` (steps, evaluations, callbacks) up to an epoch
end, summed over every resumed part of the run: the downtime between a kill and its resume is not in it.
It is logged with each epoch's metrics and is what the analysis's `*_cost_epochs` divide by.

Events, in order, after optimizer step s:
  1. at an epoch end: `metrics` = train sums of the epoch; the stopping criterion's metrics (below), which decide
     if this epoch is the last; the whole test set's `test_loss`, `test_acc` when the epoch is a multiple of
     `cfg.test_every` or the last (cap or criterion), else none (callbacks must not assume them). Evaluations
     draw no random numbers and change no weights: `test_every` changes no number but `train_seconds`;
  2. at a checkpoint step (s = 0, every `checkpoint_every` steps, the last step) or an epoch end:
     `callback.on_save(step, epoch, model, state, checkpoint)`: `state` is the resume state, carrying the
     epoch's metrics as `pending_metrics` so a crash between 2 and 3 loses nothing;
  3. at an epoch end: `callback.on_epoch_end(step, epoch, metrics)`.

Stopping criterion (`cfg.target_loss` > 0): at each epoch end the model is evaluated (eval mode, no
augmentation) on the WHOLE training set with the labels training uses (noisy ones included), and training stops
at the first epoch end where that cross-entropy is <= target_loss; `epochs` is the cap. The full pass, and not
the epoch's running mean, because the running mean averages over weights that changed during the epoch (and
BatchNorm in train mode), so it lags the model that is saved; the pass costs one forward sweep of the training
set per epoch. The epoch's metrics then also hold `train_eval_loss`, `train_eval_acc`, and at the last epoch
`converged` (1/0) and `epochs_trained`. The learning-rate schedule stays a function of the cap's total steps,
so a run that stops early is a prefix of the capped run. The last epoch of every run also logs `train_acc_clean`
(whole training set, original labels) for `tc.tracking.labels.gen_gap`.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tc.config import TrainConfig
from tc.core.data import DataBundle, iterate_batches, steps_per_epoch
from tc.core.device import guard_cpu_kernels, resolve_device
from tc.core.progress import Periodic


class TrainingFailure(Exception):
    """Training cannot produce a model for this configuration, by the configuration's own doing (it diverged,
    or it asks for what the model cannot give). Only these are a failed *trial* in a sweep (`tc.sweep.study`): the
    trial is recorded FAILED with this message and counts toward n_trials. Any other exception out of training
    is a fault of tc or of the environment, which a sweep reports as such and does not count."""


class UntrainableConfigError(TrainingFailure, ValueError):
    """A configuration that is valid field by field but cannot be trained as a whole (e.g. a `freeze_cut`
    that is not a cut of the model)."""


class DivergenceError(TrainingFailure, RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float):
        super().__init__(
            f"training diverged at step {step}: loss = {loss}. Lower lr (or raise batch_size) and try again."
        )
        self.step, self.loss = step, loss


class ResumeNotExactWarning(UserWarning):
    """A resumed run will not reproduce the uninterrupted run exactly; the message says why."""


def rng_state(device: torch.device) -> dict[str, Any]:
    """The state of every global random stream training may draw from, as tensors and builtins only (a
    resume state is loaded with `torch.load(weights_only=True)`): torch's CPU generator, the CUDA generator of
    `device` when it is a GPU, Python's `random` and NumPy's legacy global stream (for user models that use
    them). MT19937 words are below 2**32 and fit int64 tensors."""
    version, words, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


RNG_KEYS = frozenset({"torch", "python", "numpy", "cuda"})


def rng_streams(state: dict[str, Any]) -> tuple[torch.Tensor, tuple, tuple, torch.Tensor | None]:
    """A non-empty `rng_state` as (torch's state, `random.setstate`'s tuple, `np.random.set_state`'s tuple,
    the CUDA state or None), each checked to have the type and shape `rng_state` writes: a resume state is
    run data, so anything else raises ValueError naming the stream (not a TypeError deep in a setter)."""

    def tensor(x: object, dtype: torch.dtype, what: str, size: int | None = None) -> torch.Tensor:
        if not (isinstance(x, torch.Tensor) and x.dtype == dtype and x.dim() == 1):
            raise ValueError(f"rng {what} is not a 1-D {dtype} tensor")
        if size is not None and x.numel() != size:
            raise ValueError(f"rng {what} holds {x.numel()} values, not {size}")
        return x

    def number(x: object, kind: type, what: str):
        if type(x) is bool or not isinstance(x, kind):
            raise ValueError(f"rng {what} is not {kind.__name__ if kind is int else 'a number'}: {str(x)[:100]!r}")
        return x

    if not isinstance(state, dict) or not {"torch", "python", "numpy"} <= set(state) or set(state) - RNG_KEYS:
        keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"rng holds {keys}, not the streams torch, python, numpy (and cuda)")
    py, npy = state["python"], state["numpy"]
    if not (isinstance(py, dict) and set(py) == {"version", "state", "gauss"}):
        raise ValueError("rng python is not {version, state, gauss}")
    if not (isinstance(npy, dict) and set(npy) == {"keys", "pos", "has_gauss", "cached_gaussian"}):
        raise ValueError("rng numpy is not {keys, pos, has_gauss, cached_gaussian}")
    gauss = py["gauss"] if py["gauss"] is None else float(number(py["gauss"], (int, float), "python gauss"))
    python_state = (
        number(py["version"], int, "python version"),
        tuple(tensor(py["state"], torch.int64, "python state", 625).tolist()),
        gauss,
    )
    numpy_state = (
        "MT19937",
        tensor(npy["keys"], torch.int64, "numpy keys", 624).numpy().astype(np.uint32),
        number(npy["pos"], int, "numpy pos"),
        number(npy["has_gauss"], int, "numpy has_gauss"),
        float(number(npy["cached_gaussian"], (int, float), "numpy cached_gaussian")),
    )
    cuda = state.get("cuda")
    return (
        tensor(state["torch"], torch.uint8, "torch", torch.get_rng_state().numel()),
        python_state,
        numpy_state,
        None if cuda is None else tensor(cuda, torch.uint8, "cuda"),
    )


def restore_rng_state(state: dict[str, Any] | None, device: torch.device) -> str | None:
    """Set the global random streams to `state` (`rng_state`). Returns None when the resume is exact, else
    why a random layer will draw differently than in the uninterrupted run (the streams it could restore
    are restored all the same)."""
    if not state:
        return (
            "the resume state holds no random-number state (written by an older tc): dropout and other random "
            "layers will draw differently than in an uninterrupted run"
        )
    torch_state, python_state, numpy_state, cuda_state = rng_streams(state)
    torch.set_rng_state(torch_state)
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    saved_on_gpu = cuda_state is not None
    if saved_on_gpu and device.type == "cuda":
        torch.cuda.set_rng_state(cuda_state, device)
    elif saved_on_gpu or device.type == "cuda":
        where = ("a CUDA device", "the CPU") if saved_on_gpu else ("the CPU", "a CUDA device")
        return (
            f"the run trained on {where[0]} before it was interrupted and resumes on {where[1]}: random layers "
            "draw from another generator"
        )
    return None


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate after `step` optimizer steps: cosine to 0, x0.1 at 50% and 75%, or constant."""
    frac = step / max(total_steps, 1)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** ((frac >= 0.5) + (frac >= 0.75))
    return cfg.lr


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay
        )
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    # channels_last ran conv training steps ~1.5x faster on the 2-core CPU we develop on; no effect on results.
    return torch.channels_last if x.dim() == 4 else torch.contiguous_format


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: DataBundle,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of `model` (eval mode) on uint8 images `x` with labels `y`. Batches of 256:
    on the 2-core CPU a conv forward ran ~3x faster per image at 64-256 than at 1,000-2,000 (docs/benchmarks.md,
    "Analyze speed"), and batches of 1,000 made five per-epoch test passes about half the quick start's training."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        xb = data.normalize(x[i : i + batch_size].to(device))
        yb = y[i : i + batch_size].to(device)
        logits = model(xb.contiguous(memory_format=_memory_format(xb)))
        loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return {"loss": loss_sum / len(y), "acc": correct / len(y)}


@dataclass
class _EpochSums:
    loss: float = 0.0
    correct: int = 0
    count: int = 0


def train(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    callbacks: list[Any] = (),
    resume_state: dict | None = None,
) -> nn.Module:
    """Train `model` in place according to `cfg`, from scratch or from `resume_state` (see module doc). Seed
    torch's global RNG before building `model` (its initialisation and random layers draw from it)."""
    if cfg.freeze_cut >= len(model.blocks):
        raise UntrainableConfigError(
            f"freeze_cut={cfg.freeze_cut} is not a cut of this model; valid: 0 (none) or {model.cuts}"
        )
    device = resolve_device(cfg.device)
    model.to(device)
    guard_cpu_kernels(model, device)  # oneDNN's AVX2 strided-1x1 weight gradient is wrong (tc/core/device.py)
    if next(model.parameters()).dim() > 1:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    spe = steps_per_epoch(len(data.train_y), cfg.batch_size)
    total = cfg.epochs * spe
    every = cfg.checkpoint_every or spe
    sums = _EpochSums()
    step = 0
    stopped = False  # the stopping criterion was met (cfg.target_loss)
    started, seconds_before = time.perf_counter(), 0.0  # active training time: this call's, and earlier parts'

    def train_seconds() -> float:
        return seconds_before + (time.perf_counter() - started)

    def emit(name: str, *args: Any) -> None:
        for cb in callbacks:
            getattr(cb, name, lambda *a: None)(*args)

    def save(metrics: dict | None, checkpoint: bool) -> None:
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "sums": [sums.loss, sums.correct, sums.count],
            "pending_metrics": metrics,
            "train_seconds": train_seconds(),
            "rng": rng_state(device),  # after this step's draws: what the next step of an uninterrupted run sees
        }
        emit("on_save", step, step / spe, model, state, checkpoint)

    if resume_state is not None:
        step = int(resume_state["step"])
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        sums = _EpochSums(*resume_state["sums"])
        stopped = bool((resume_state.get("pending_metrics") or {}).get("converged"))  # it had stopped there
        # an older state has no time: its part is lost, and train_seconds then counts the resumed part only
        # (tc.tracking.client.seconds_per_epoch falls back to timestamps, as not every epoch has it)
        seconds_before = float(resume_state.get("train_seconds", 0.0))
        # last, after building the model and loading the state (which may draw): the streams as at the save
        reason = restore_rng_state(resume_state.get("rng"), device)
        if reason:
            warnings.warn(f"resuming at step {step}: not exact: {reason}", ResumeNotExactWarning, stacklevel=2)
        emit("on_resume", step, reason)
    else:
        save(None, checkpoint=True)

    while step < total and not stopped:
        epoch = step // spe
        frozen = list(model.blocks.values())[: cfg.freeze_cut] if epoch >= cfg.freeze_epoch else []
        for x, y in iterate_batches(data, cfg.batch_size, cfg.seed, epoch, cfg.augment, start_batch=step % spe):
            model.train()
            for block in frozen:  # frozen: no updates, and BatchNorm keeps its running statistics
                block.eval()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, cfg)
            xb = data.normalize(x.to(device))
            xb = xb.contiguous(memory_format=_memory_format(xb))
            y = y.to(device)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise DivergenceError(step + 1, loss_value)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for block in frozen:
                for p in block.parameters():
                    p.grad = None  # SGD and Adam skip a parameter without gradient: no decay, no momentum
            optimizer.step()
            step += 1
            sums.loss += loss_value * len(y)
            sums.correct += int((logits.argmax(1) == y).sum())
            sums.count += len(y)
            emit("on_step", step, loss_value)

            epoch_end = step % spe == 0
            metrics = None
            if epoch_end:
                metrics = {"train_loss": sums.loss / sums.count, "train_acc": sums.correct / sums.count}
                sums = _EpochSums()
                stopped = _stopping_metrics(model, data, cfg, device, step, criterion := {})
                if tests_at(cfg, step // spe, last=stopped or step >= total):
                    test = evaluate(model, data, data.test_x, data.test_y, device)
                    metrics |= {"test_loss": test["loss"], "test_acc": test["acc"]}
                metrics |= {"epoch": float(step // spe), "lr": lr_at(step - 1, total, cfg), **criterion}
                metrics["train_seconds"] = train_seconds()  # last: after every evaluation
            checkpoint = step % every == 0 or step == total or stopped
            if checkpoint or epoch_end:
                save(metrics, checkpoint)
            if epoch_end:
                emit("on_epoch_end", step, step // spe, metrics)
            if stopped:
                break
    return model


def tests_at(cfg: TrainConfig, epoch: int, last: bool) -> bool:
    """Whether epoch `epoch` (1-based) ends with a test evaluation: every `cfg.test_every`, and the `last` one."""
    return last or (cfg.test_every > 0 and epoch % cfg.test_every == 0)


def _stopping_metrics(model, data: DataBundle, cfg: TrainConfig, device, step: int, metrics: dict) -> bool:
    """Add the stopping criterion's metrics (module doc) to `metrics`; True when it is met here (training stops)."""
    spe = steps_per_epoch(len(data.train_y), cfg.batch_size)  # as in `train`
    total = cfg.epochs * spe
    met = False
    if cfg.target_loss > 0:
        fit = evaluate(model, data, data.train_x, data.train_y, device)
        metrics["train_eval_loss"], metrics["train_eval_acc"] = fit["loss"], fit["acc"]
        met = fit["loss"] <= cfg.target_loss
    if met or step >= total:
        metrics["train_acc_clean"] = evaluate(model, data, data.train_x, data.train_y_clean, device)["acc"]
        if cfg.target_loss > 0:
            metrics["converged"] = float(met)
            metrics["epochs_trained"] = float(step // spe)
    return met


class ProgressReporter:
    """A tqdm bar over optimizer steps when stderr is a terminal, else a line every few seconds (steps done and
    left, epoch, loss); and one concise line per epoch always."""

    def __init__(self, cfg: TrainConfig, n_train: int, start_step: int = 0):
        self.cfg = cfg
        self.total = cfg.epochs * steps_per_epoch(n_train, cfg.batch_size)
        self.bar = tqdm(total=self.total, initial=start_step, unit="step", disable=None, leave=False)
        self.lines = Periodic(self.total, "tc train", "steps", done=start_step)  # when stderr is no terminal
        self._t0 = time.perf_counter()

    def on_step(self, step: int, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        epoch = (step - 1) // (self.total // self.cfg.epochs) + 1  # `step` steps are done: this one's epoch
        self.lines.extra = f", epoch {epoch}/{self.cfg.epochs}, loss {loss:.3f}"
        self.lines.update(1)

    def on_epoch_end(self, step: int, epoch: int, m: dict[str, float]) -> None:
        test = "".join(f"  {k} {m[k]:.4f}" for k in ("test_loss", "test_acc") if k in m)
        self.bar.write(
            f"epoch {epoch}/{self.cfg.epochs}  step {step}/{self.total}  train_loss {m['train_loss']:.4f}  "
            f"train_acc {m['train_acc']:.4f}{test}  [{time.perf_counter() - self._t0:.1f}s]"
        )

    def close(self) -> None:
        self.bar.close()
