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

What `import tc` offers (`tc.__all__`; each name's docstring has an example that `tests/test_api.py` runs):
- logging your own loop: `log_run_info`, `CheckpointLogger`, `log_checkpoint`;
- data and models: `load_data` (a `DataBundle`), `ModelSpec` and `build_model`;
- configs: `TrainConfig`, `AnalyzeConfig` (every parameter of `train` and `analyze`, validated);
- the analysis of checkpoints in memory, no MLflow: `analyze_run(Checkpoints, DataBundle, AnalyzeConfig,
  RunContext)` returns an `AnalysisResult`;
- the jobs on logged runs, as the commands run them: `train_job` (a run id) and `analyze_job` (an `AnalyzedRun`).

The names resolve lazily, so `import tc` stays cheap (no torch or mlflow until one is used). Everything else
lives in its layer (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

#: what a user scripts with, by where it lives (every name has a docstring with a runnable example;
#: tests/test_api.py runs them): the own-loop logging calls, data, models, configs, the pure analysis of
#: checkpoints in memory with its input and result types, and the two jobs on logged runs
_LAZY = {
    "log_run_info": ("tc.tracking.own_loop", "log_run_info"),
    "CheckpointLogger": ("tc.tracking.own_loop", "CheckpointLogger"),
    "log_checkpoint": ("tc.tracking.own_loop", "log_checkpoint"),
    "load_data": ("tc.core.data", "load_data"),
    "DataBundle": ("tc.core.data", "DataBundle"),
    "ModelSpec": ("tc.core.models", "ModelSpec"),
    "build_model": ("tc.core.models", "build_model"),
    "TrainConfig": ("tc.config", "TrainConfig"),
    "AnalyzeConfig": ("tc.config", "AnalyzeConfig"),
    "Checkpoints": ("tc.core.checkpoints", "Checkpoints"),
    "RunContext": ("tc.analysis.inputs", "RunContext"),
    "analyze_run": ("tc.analysis.run", "analyze_run"),
    "AnalysisResult": ("tc.analysis.result", "AnalysisResult"),
    "train_job": ("tc.tracking.jobs", "train_job"),
    "analyze_job": ("tc.tracking.jobs", "analyze_job"),
    "AnalyzedRun": ("tc.tracking.jobs", "AnalyzedRun"),
}
__all__ = list(_LAZY)


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
