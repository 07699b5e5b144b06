"""tc: temporal consistency of feature dynamics (arXiv 2509.20334), as an MLflow project.

Log your own training loop so that `mlflow run . --env-manager local -e analyze -P run_id=<run>` works on it:

    import mlflow, tc
    with mlflow.start_run():
        tc.log_run_info(model="torchvision:resnet18", dataset="digits", epochs=1, batch_size=16)
        ckpt = tc.CheckpointLogger(model, every=10)  # logs the initial weights as step 0 right away
        for step, (x, y) in enumerate(batches, start=1):
            ...  # your optimizer step
            ckpt.step(step, epoch=step / len(batches))  # every 10th step
        ckpt.close(step, epoch=step / len(batches))  # the last step too

Create the logger before the first optimizer step: the initialisation (step 0) is part of what `analyze`
reads. `tests/test_own_loop.py` runs this example as written.

The names resolve lazily, so `import tc` stays cheap (no torch or mlflow until one is used).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CheckpointLogger", "log_checkpoint", "log_run_info"]

_LAZY = {
    "CheckpointLogger": ("tc.tracking.own_loop", "CheckpointLogger"),
    "log_checkpoint": ("tc.tracking.own_loop", "log_checkpoint"),
    "log_run_info": ("tc.tracking.own_loop", "log_run_info"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
