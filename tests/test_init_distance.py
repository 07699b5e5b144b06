"""`gm_dist_init` is the distance of the final weights from the initialisation (step 0), whatever checkpoints
an analysis selects; a run that never logged step 0 gets NaN and a warning line (issue 19, item 4)."""

from __future__ import annotations

import math

import mlflow
import pytest
import torch

import tc
from tc.analysis.inputs import RunContext, initial_state
from tc.analysis.run import analyze_run
from tc.config import AnalyzeConfig
from tc.core import checkpoints as ck
from tc.core.checkpoints import Checkpoints
from tc.core.data import load_data
from tc.core.models import ModelSpec, build_model
from tc.tracking import cache, checkpoints

SPEC = ModelSpec("mlp", 2, 8, 1, 8, 10)  # a 2-hidden-layer MLP of width 8 on the 8x8 digits
SETTINGS = dict(depth=2, width=8, epochs=1, batch_size=32, train_size=256, seed=0)


def _state_dicts(n: int) -> list[dict[str, torch.Tensor]]:
    """`n` distinct state dicts of SPEC (seeded initialisations stand in for a run's checkpoints)."""
    out = []
    for i in range(n):
        torch.manual_seed(i)
        out.append({k: v.clone() for k, v in build_model(SPEC).state_dict().items()})
    return out


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Brute force: the L2 norm of the difference of all trainable parameters (BatchNorm buffers excluded)."""
    names = {n for n, _ in build_model(SPEC).named_parameters()}
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in names))


def _cfg(**kw) -> AnalyzeConfig:
    base = dict(run_id="x", splits="train,test", max_samples=40, matrix="final", anisotropy=False, batch_size=32)
    return AnalyzeConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data():
    return load_data("digits", train_size=256)


def test_dist_init_is_from_step_0_when_the_selection_starts_later(data):
    sds = _state_dicts(3)  # steps 0, 5, 10
    model = build_model(SPEC)
    all_ = analyze_run(Checkpoints([0, 5, 10], sds), data, _cfg(), RunContext(model, 32, 0)).metrics
    later = analyze_run(Checkpoints([5, 10], sds[1:]), data, _cfg(), RunContext(model, 32, 0, init=sds[0]))
    assert all_["gm_dist_init"] == pytest.approx(_distance(sds[2], sds[0]), rel=1e-5)
    assert later.metrics["gm_dist_init"] == pytest.approx(_distance(sds[2], sds[0]), rel=1e-5)
    assert not any("gm_dist_init" in w for w in later.summary["warnings"])
    # the first selected checkpoint (step 5) is not the initialisation: that distance is another number
    assert later.metrics["gm_dist_init"] != pytest.approx(_distance(sds[2], sds[1]), rel=1e-3)


def test_dist_init_is_nan_with_a_warning_when_step_0_is_unknown(data):
    sds = _state_dicts(3)
    result = analyze_run(Checkpoints([5, 10], sds[1:]), data, _cfg(), RunContext(build_model(SPEC), 32, 0))
    assert math.isnan(result.metrics["gm_dist_init"])
    assert math.isfinite(result.metrics["gm_param_norm"])  # the other measures are unaffected
    (line,) = [w for w in result.summary["warnings"] if "gm_dist_init" in w]
    assert "step 0" in line and "NaN" in line


def _log_run(sds: dict[int, dict[str, torch.Tensor]], data) -> str:
    """An own-loop run of SPEC with checkpoints at the given steps."""
    model = build_model(SPEC)
    with mlflow.start_run() as run:
        tc.log_run_info(model="mlp", dataset="digits", data=data, **SETTINGS)
        for step, sd in sds.items():
            model.load_state_dict(sd)
            tc.log_checkpoint(model, step, epoch=step / 8)
    return run.info.run_id


def test_a_logged_run_analyzed_without_step_0_measures_from_step_0(mlflow_store, data, monkeypatch):
    sds = _state_dicts(3)
    rid = _log_run({0: sds[0], 3: sds[1], 6: sds[2]}, data)
    cfg = _cfg(run_id=rid, checkpoints="3,6")  # a selection that excludes step 0
    calls, real = [], checkpoints.download_checkpoints
    monkeypatch.setattr(checkpoints, "download_checkpoints", lambda r, c, **k: calls.append(r) or real(r, c, **k))
    ckpts, loaded, run = checkpoints.load_analysis_inputs(cfg)
    assert calls == [rid]  # one index read and one hash check per file: the selection and step 0 see the same
    assert ckpts.steps == [3, 6]
    assert run.init is not None and all(torch.equal(run.init[k], sds[0][k]) for k in sds[0])
    metrics = analyze_run(ckpts, loaded, cfg, run).metrics
    assert metrics["gm_dist_init"] == pytest.approx(_distance(sds[2], sds[0]), rel=1e-5)


def test_the_cache_cap_keeps_both_the_run_and_its_reference_while_they_load(mlflow_store, data, monkeypatch):
    # a prune between loading the run and loading its reference must spare the reference, which is used next
    sds = _state_dicts(4)
    rid, ref = _log_run({0: sds[0], 3: sds[1]}, data), _log_run({0: sds[2], 3: sds[3]}, data)
    kept = []
    monkeypatch.setattr(cache, "apply_env_cap", lambda keep: kept.append(set(keep)) or [])
    ckpts, _, run = checkpoints.load_analysis_inputs(_cfg(run_id=rid, reference_run_id=ref))
    assert ckpts.steps == [0, 3] and run.reference is not None
    assert kept and all({rid, ref} <= k for k in kept)


def test_a_logged_run_without_step_0_gets_nan(mlflow_store, data):
    sds = _state_dicts(2)
    rid = _log_run({3: sds[0], 6: sds[1]}, data)
    cfg = _cfg(run_id=rid)
    ckpts, loaded, run = checkpoints.load_analysis_inputs(cfg)
    assert ckpts.steps == [3, 6] and run.init is None
    result = analyze_run(ckpts, loaded, cfg, run)
    assert math.isnan(result.metrics["gm_dist_init"])
    assert any("step 0" in w for w in result.summary["warnings"])


def test_a_step_0_entry_whose_file_holds_another_step_is_refused(tmp_path):
    # the index says step 0, its sha256 matches, but the payload is step 3's: not the initialisation
    sds = _state_dicts(2)
    entry = ck.save_checkpoint(tmp_path, 3, 0.5, SPEC.to_dict(), sds[1])
    as_init = ck.IndexEntry(step=0, epoch=0.0, file=entry.file, sha256=entry.sha256)
    files = [(as_init, tmp_path / entry.file)]
    with pytest.raises(ck.CheckpointError, match="step 3"):
        checkpoints.load_initial_state("r", build_model(SPEC), files)
    real = ck.save_checkpoint(tmp_path, 0, 0.0, SPEC.to_dict(), sds[0])
    got = checkpoints.load_initial_state("r", build_model(SPEC), [(real, tmp_path / real.file), *files[1:]])
    assert got is not None and all(torch.equal(got[k], sds[0][k]) for k in sds[0])
    assert checkpoints.load_initial_state("r", build_model(SPEC), []) is None


def test_the_initialisation_is_step_0_wherever_the_rule_is_asked():
    # one rule (tc.core.checkpoints.init_index): the position of step 0 among sorted steps, None without it
    assert ck.init_index([0, 5, 10]) == 0 and ck.init_index([5, 10]) is None and ck.init_index([]) is None
    sds = _state_dicts(3)
    model = build_model(SPEC)
    assert initial_state(Checkpoints([0, 5, 10], sds), RunContext(model, 32, 0)) is sds[0]
    assert initial_state(Checkpoints([5, 10], sds[1:]), RunContext(model, 32, 0, init=sds[0])) is sds[0]
    assert initial_state(Checkpoints([5, 10], sds[1:]), RunContext(model, 32, 0)) is None
