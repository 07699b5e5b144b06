"""Cheap surrogates of tc_test for the sweep: the same analysis on fewer checkpoints and samples, computed
from the checkpoints the trial's full analysis already loaded (no second download, data load or config read)."""

from __future__ import annotations

from tc.analysis.inputs import RunContext
from tc.analysis.run import analyze_run
from tc.config import AnalyzeConfig
from tc.core import consistency as C
from tc.core.checkpoints import Checkpoints
from tc.core.data import DataBundle

KS = (1, 2)

# Every AnalyzeConfig field is in exactly one group (a test holds the groups to the dataclass, so a new field
# fails until someone decides where it belongs):
#: taken from the full analysis: what makes the surrogate measure the same network the same way
SHARED = ("run_id", "model", "cuts", "bn_mode", "calibration_batches", "batch_size", "device", "precision", "seed")
#: set by the surrogate itself (`surrogate_config`)
SURROGATE_OWN = (
    "splits",
    "max_samples",
    "matrix",
    "anisotropy",
    "measures",
    "controls",
    "checkpoints",
    "window",
    "outputs",
)
#: left at their defaults: the full analysis's controls and extra outputs, or inputs of splits and measures
#: the surrogate does not compute
NOT_SHARED = (
    "costly_measures",  # with measures=False: read by nothing
    "corruptions",
    "severities",
    "reference_run_id",
    "phases",
    "aniso_k",
    "null_draws",
    "grad_batches",
    "allow_unfinished",
    "data_dir",  # where the full analysis found its data: the surrogate is handed the data already loaded
    "download",
)


def surrogate_config(cfg: AnalyzeConfig, steps: list[int], samples: int) -> AnalyzeConfig:
    """The config of one cheap surrogate on checkpoints `steps` and `samples` test examples, built from only
    what it shares with the full analysis `cfg` (`SHARED`: the run, the cuts, BatchNorm handling, batch size,
    device, compute precision and seed). The rest is the surrogate's own (`SURROGATE_OWN`) or a default
    (`NOT_SHARED`), so none of the full analysis's extra work (the cross-seed `reference_run_id`, `phases`,
    which needs more checkpoints than a surrogate has) runs inside the surrogate or is counted in its
    `_seconds`; nor do the controls (`controls=False`: the bf16 agreement check, which `precision=bf16` also
    triggers)."""
    return AnalyzeConfig(
        **{name: getattr(cfg, name) for name in SHARED},
        splits="test",
        max_samples=samples,
        matrix="final",
        anisotropy=False,
        measures=False,
        controls=False,  # the bf16 agreement check, which precision=bf16 also triggers, is not the surrogate's
        checkpoints=",".join(map(str, steps)),
        window=1.0,  # every chosen checkpoint before the last is in the window
        outputs="measures",  # only its tc_test is read: no tables
    )


def cheap_scores(
    ckpts: Checkpoints, data: DataBundle, cfg: AnalyzeConfig, run: RunContext, samples: int = 100
) -> dict[str, float]:
    """`tc_test_cheap_k<k>_n<samples>`: tc_test of the final deep part on k checkpoints subsampled evenly from
    the full analysis's window (`cfg.window` over `ckpts`; k = 1: the window's middle) and `samples` test
    examples, with its `_seconds`. A k larger than the window is skipped (it would be the full window again,
    on fewer samples). The surrogate is timed alone: its config is `surrogate_config`, and it runs none of the
    full analysis's controls (cross-seed, bf16 agreement)."""
    window_steps = [ckpts.steps[i] for i in C.window(ckpts.steps, cfg.window)]
    out = {}
    for k in KS:
        if len(window_steps) < k:
            continue
        chosen = [window_steps[int((j + 0.5) * len(window_steps) / k)] for j in range(k)]
        steps = sorted({*chosen, ckpts.steps[-1]})
        sub = Checkpoints(steps, [ckpts.state_dicts[ckpts.steps.index(s)] for s in steps])
        result = analyze_run(sub, data, surrogate_config(cfg, steps, samples), run)
        out[f"tc_test_cheap_k{k}_n{samples}"] = result.metrics["tc_test"]
        out[f"tc_test_cheap_k{k}_n{samples}_seconds"] = result.metrics["analysis_seconds"]
    return out
