"""Cheap surrogates of tc_test for the sweep: the same analysis on fewer checkpoints and samples, computed
from the checkpoints the trial's full analysis already loaded (no second download, data load or config read)."""

from __future__ import annotations

from dataclasses import replace

from tc import consistency as C
from tc.analysis import analyze_run
from tc.checkpoints import Checkpoints, RunContext
from tc.config import AnalyzeConfig
from tc.data import DataBundle

KS = (1, 2)


def cheap_scores(
    ckpts: Checkpoints, data: DataBundle, cfg: AnalyzeConfig, run: RunContext, samples: int = 100
) -> dict[str, float]:
    """`tc_test_cheap_k<k>_n<samples>`: tc_test of the final deep part on k checkpoints subsampled evenly from
    the full analysis's window (`cfg.window` over `ckpts`; k = 1: the window's middle) and `samples` test
    examples, with its `_seconds`. A k larger than the window is skipped (it would be the full window again,
    on fewer samples)."""
    window_steps = [ckpts.steps[i] for i in C.window(ckpts.steps, cfg.window)]
    out = {}
    for k in KS:
        if len(window_steps) < k:
            continue
        chosen = [window_steps[int((j + 0.5) * len(window_steps) / k)] for j in range(k)]
        steps = sorted({*chosen, ckpts.steps[-1]})
        sub = Checkpoints(steps, [ckpts.state_dicts[ckpts.steps.index(s)] for s in steps])
        cheap = replace(
            cfg,
            splits="test",
            max_samples=samples,
            matrix="final",
            anisotropy=False,
            measures=False,
            checkpoints=",".join(map(str, steps)),
            window=1.0,  # every chosen checkpoint before the last is in the window
        )
        result = analyze_run(sub, data, cheap, run)
        out[f"tc_test_cheap_k{k}_n{samples}"] = result.metrics["tc_test"]
        out[f"tc_test_cheap_k{k}_n{samples}_seconds"] = result.metrics["analysis_seconds"]
    return out
