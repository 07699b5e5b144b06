"""The sweep's cheap surrogates, computed from checkpoints already loaded."""

from dataclasses import replace

from tc.analysis import analyze_run
from tc.checkpoints import Checkpoints, RunContext
from tc.config import AnalyzeConfig
from tc.data import load_data
from tc.surrogates import cheap_scores
from tests.test_compose import _checkpoints


def test_cheap_scores_are_tc_test_on_window_checkpoints_and_fewer_samples():
    model, sds = _checkpoints(n=5)
    data = load_data("digits", train_size=128)
    ckpts = Checkpoints([0, 2, 4, 6, 8], sds)  # window 0.5: steps 4 and 6
    cfg = AnalyzeConfig(run_id="x", max_samples=60, anisotropy=False, measures=False, batch_size=32)
    run = RunContext(model, 64, 0)
    out = cheap_scores(ckpts, data, cfg, run, samples=30)
    assert set(out) == {f"tc_test_cheap_k{k}_n30{s}" for k in (1, 2) for s in ("", "_seconds")}
    one = AnalyzeConfig(
        run_id="x", splits="test", max_samples=30, matrix="final", anisotropy=False, measures=False, window=1.0
    )
    one = replace(one, batch_size=32)
    middle = analyze_run(Checkpoints([6, 8], [sds[3], sds[4]]), data, one, run).metrics["tc_test"]
    assert out["tc_test_cheap_k1_n30"] == middle  # k = 1: the window's middle (index 1 of [4, 6])
    both = analyze_run(Checkpoints([4, 6, 8], sds[2:]), data, one, run).metrics["tc_test"]
    assert out["tc_test_cheap_k2_n30"] == both
