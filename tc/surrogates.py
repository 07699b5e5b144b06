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


def surrogate_config(cfg: AnalyzeConfig, steps: list[int], samples: int) -> AnalyzeConfig:
    """The config of one cheap surrogate on checkpoints `steps` and `samples` test examples, built from only
    what it shares with the full analysis `cfg`: the run, the cuts, BatchNorm handling, batch size, device and
    seed. Everything else is the surrogate's own or a default, so none of the full analysis's controls
    (the cross-seed `reference_run_id`, the bf16 check of `precision`, `phases`, which needs more checkpoints
    than a surrogate has) runs inside the surrogate or is counted in its `_seconds`."""
    return AnalyzeConfig(
        run_id=cfg.run_id,
        model=cfg.model,
        cuts=cfg.cuts,
        bn_mode=cfg.bn_mode,
        calibration_batches=cfg.calibration_batches,
        batch_size=cfg.batch_size,
        device=cfg.device,
        seed=cfg.seed,
        splits="test",
        max_samples=samples,
        matrix="final",
        anisotropy=False,
        measures=False,
        checkpoints=",".join(map(str, steps)),
        window=1.0,  # every chosen checkpoint before the last is in the window
    )


def cheap_scores(
    ckpts: Checkpoints, data: DataBundle, cfg: AnalyzeConfig, run: RunContext, samples: int = 100
) -> dict[str, float]:
    """`tc_test_cheap_k<k>_n<samples>`: tc_test of the final deep part on k checkpoints subsampled evenly from
    the full analysis's window (`cfg.window` over `ckpts`; k = 1: the window's middle) and `samples` test
    examples, with its `_seconds`. A k larger than the window is skipped (it would be the full window again,
    on fewer samples). The surrogate is timed alone: its config is `surrogate_config`, and it sees no
    reference run."""
    window_steps = [ckpts.steps[i] for i in C.window(ckpts.steps, cfg.window)]
    alone = replace(run, reference=None)  # the cross-seed control belongs to the full analysis only
    out = {}
    for k in KS:
        if len(window_steps) < k:
            continue
        chosen = [window_steps[int((j + 0.5) * len(window_steps) / k)] for j in range(k)]
        steps = sorted({*chosen, ckpts.steps[-1]})
        sub = Checkpoints(steps, [ckpts.state_dicts[ckpts.steps.index(s)] for s in steps])
        result = analyze_run(sub, data, surrogate_config(cfg, steps, samples), alone)
        out[f"tc_test_cheap_k{k}_n{samples}"] = result.metrics["tc_test"]
        out[f"tc_test_cheap_k{k}_n{samples}_seconds"] = result.metrics["analysis_seconds"]
    return out
