"""A sweep explains itself (issue 22): how every trial ended and why, the correlations' thresholds, the headline
first and marked, every τ with its interval and Holm p, and one line per trial with the time left. Pure parts on
synthetic trials; the end-to-end console check is in tests/test_sweep.py (the diverging-trial sweep)."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json

import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from tc.analysis import plots
from tc.config import SweepConfig
from tc.stats.multiplicity import CONFIRMATORY_MEASURE
from tc.stats.rankcorr import MIN_TRIALS
from tc.sweep import console, outcomes
from tc.sweep import summary as sweep_summary
from tc.sweep.budget import CRASH_ATTR, FAIL_REASON_ATTR, SURPLUS_ATTR
from tc.sweep.study import STALE_ATTR
from tc.tracking import labels

SPACE = {
    "lr": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
    "width": {"type": "categorical", "choices": [16, 32, 64]},
    "momentum": {"type": "categorical", "choices": [0.9]},  # does not vary: not on a trial's line
}
CFG = SweepConfig(bootstrap=100, epochs=300, target_loss=0.01)


def _every(n_converged: int, n_capped: int, seed: int = 0) -> pd.DataFrame:
    """A trials table: `n_converged` then `n_capped` finished trials. The headline is weakly related to test
    accuracy, `gm_strong` strongly, so the headline is never the top |τ|."""
    rng = np.random.default_rng(seed)
    n = n_converged + n_capped
    acc = np.sort(rng.uniform(0.8, 0.99, n))
    return pd.DataFrame(
        {
            "trial": range(n),
            "lr": rng.uniform(0.01, 0.3, n),
            "width": rng.choice([16, 32, 64], n),
            "momentum": 0.9,
            "converged": [1] * n_converged + [0] * n_capped,
            "test_acc": acc,
            "gen_gap": rng.random(n),
            CONFIRMATORY_MEASURE: 0.3 * acc + rng.normal(0, 0.05, n),
            "gm_strong": acc + rng.normal(0, 0.001, n),
            **{f"tc_m{k}": rng.random(n) for k in range(10)},
        }
    )


def _outcomes(finished: int, extra: list[tuple[str, str]]) -> pd.DataFrame:
    rows = [("finished", "")] * finished + extra
    return pd.DataFrame(
        [{"trial": i, "kind": k, "reason": r, "seconds": 10.0} for i, (k, r) in enumerate(rows)],
        columns=["trial", "kind", "reason", "seconds"],
    )


OTHERS = [
    ("failed", "training diverged at step 5: loss = nan. Lower lr (or raise batch_size) and try again."),
    ("failed", "the sampled combination cannot be trained: freeze_cut=9 is not a cut of this model"),
    ("pruned", "test_acc 0.41 below the median at epoch 3"),
    ("crashed", "KeyError: 'test_acc'"),
]


# ---- thresholds -----------------------------------------------------------------------------------------------


def test_the_interpretability_threshold_is_where_chance_stops_reaching_a_tau_of_one_half():
    # the exact null distribution of τ, against every ranking of 6 trials
    n = 6
    taus = np.round([stats.kendalltau(range(n), p).statistic for p in itertools.permutations(range(n))], 12)
    values, probs = outcomes.tau_null(n)
    for v, p in zip(values, probs, strict=True):
        assert np.mean(taus == round(v, 12)) == pytest.approx(p)
    c, p = outcomes.tau_null_bound(n)
    assert np.mean(np.abs(taus) > c) <= 0.05 < np.mean(np.abs(taus) > c - 2 / 15)  # the next value down is too low
    assert np.mean(np.abs(taus) >= c) == pytest.approx(p)
    first = next(n for n in range(2, 100) if outcomes.tau_null_bound(n)[0] < outcomes.MAX_CHANCE_TAU)
    assert outcomes.MIN_INTERPRETABLE_TRIALS == first == 10
    # the docstring's claims: 0.50 at 9, 0.47 at 10; no Kendall test reaches p < 0.05 below 5 trials
    assert round(outcomes.tau_null_bound(9)[0], 2) == 0.5 and round(outcomes.tau_null_bound(10)[0], 2) == 0.47
    assert stats.kendalltau(range(4), range(4)).pvalue > 0.05 > stats.kendalltau(range(5), range(5)).pvalue
    assert MIN_TRIALS == 3
    assert outcomes.null_words(3) == "two unrelated rankings of 3 trials give |τ| >= 1.00 one time in 3"
    assert outcomes.null_words(6) == "two unrelated rankings of 6 trials give |τ| >= 0.73 one time in 18"


# ---- the account: counts and reasons ----------------------------------------------------------------------------


def test_classify_names_every_way_a_trial_ends():
    assert outcomes.classify("COMPLETE", {}) == ("finished", "")
    assert outcomes.classify("PRUNED", {outcomes.PRUNED_ATTR: "why"}) == ("pruned", "why")
    assert outcomes.classify("RUNNING", {}) == ("running", "")
    assert outcomes.classify("FAIL", {FAIL_REASON_ATTR: "diverged"}) == ("failed", "diverged")
    assert outcomes.classify("FAIL", {STALE_ATTR: "dead"}) == ("died", "dead")
    assert outcomes.classify("FAIL", {CRASH_ATTR: "KeyError: x"}) == ("crashed", "KeyError: x")
    assert outcomes.classify("FAIL", {SURPLUS_ATTR: "full"}) is None


def test_too_few_converged_trials_are_stated_with_the_threshold_and_the_trials_table_is_still_written(tmp_path):
    every = _every(2, 2)
    summary = sweep_summary.summarize(CFG, SPACE, every, _outcomes(4, OTHERS))
    acc = summary.account
    assert (acc.total, acc.finished, acc.converged, acc.capped, acc.pruned) == (8, 4, 2, 2, 1)
    assert acc.failed == {"diverged": 1, "refused: the sampled combination cannot be trained": 1}
    assert acc.crashed == {"KeyError": 1}
    line = acc.line()
    assert line.startswith("8 trial(s): 4 finished, of which 2 converged and 2 hit the epoch cap, not reaching ")
    assert "target_loss 0.01 in 300 epochs (left out of the correlations)" in line
    assert "2 failed (1 diverged, 1 refused: the sampled combination cannot be trained)" in line
    assert "1 pruned" in line and "1 crashed (1 KeyError; not counted toward n_trials)" in line
    assert summary.status.line.startswith(f"too few converged trials (2 of 8; need {MIN_TRIALS})")
    assert summary.table.empty and not summary.figures
    printed = console.closing_lines(summary)
    assert printed == [f"tc sweep: {line}", f"tc sweep: {summary.status.line}"]  # no τ at all
    sweep_summary.write_summary(summary, tmp_path)
    assert len(pd.read_csv(tmp_path / "trials.csv")) == 4 and not (tmp_path / "correlations.csv").exists()
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["correlations"]["status"] == "too_few" and written["correlations"]["need"] == MIN_TRIALS
    assert "too few converged trials (2 of 8; need 3)" in written["correlations"]["line"]
    assert written["trials"]["failed"] == 2 and written["trials"]["hit_epoch_cap"] == 2
    assert written["explanation"] == line
    assert written["headline"] == {"measure": CONFIRMATORY_MEASURE, "target": "test_acc"}  # no τ to show
    # the run description says the same
    text = labels.describe_sweep("s", 4, None, [line + ".", summary.status.line + "."])
    assert "4 finished trial(s)" in text and "- too few converged trials (2 of 8; need 3)" in text


def test_without_a_stopping_criterion_finished_trials_enter_and_are_called_finished():
    every = _every(2, 0).drop(columns="converged")
    summary = sweep_summary.summarize(SweepConfig(bootstrap=100, target_loss=0), SPACE, every)
    assert summary.account.line() == "2 trial(s): 2 finished (no stopping criterion: all enter the correlations)"
    assert summary.status.line.startswith("too few finished trials (2 of 2; need 3)")


# ---- τ: the headline first, every τ with its interval and Holm p -----------------------------------------------


def _table_rows(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(("* ", "  ")) and "τ-b" not in line and "headline," not in line]


def test_below_the_threshold_only_the_headline_is_printed_and_the_coefficients_are_called_not_interpretable():
    summary = sweep_summary.summarize(CFG, SPACE, _every(6, 1), _outcomes(7, []))
    assert summary.status.kind == "not_interpretable"
    lines = console.closing_lines(summary)
    assert "6 converged trials (of 7): below 10 the coefficients are not interpretable" in lines[1]
    rows = _table_rows(lines)
    assert len(rows) == 1 and rows[0].startswith(f"* {CONFIRMATORY_MEASURE}")
    row = summary.table.set_index(["measure", "target"]).loc[(CONFIRMATORY_MEASURE, "test_acc")]
    assert f"[{row.kendall_ci_low:+.2f}, {row.kendall_ci_high:+.2f}]" in rows[0]
    assert f"{row.kendall_p_holm:.3g}" in rows[0]
    assert "not interpretable" in summary.figures["correlation_bars.png"].axes[0].get_title()


def test_from_the_threshold_the_headline_comes_first_then_the_top_measures_each_with_interval_and_holm_p():
    summary = sweep_summary.summarize(CFG, SPACE, _every(12, 0), _outcomes(12, []))
    assert summary.status.kind == "computed"
    rows = _table_rows(console.closing_lines(summary))
    acc = summary.table[summary.table["target"] == "test_acc"].set_index("measure")
    assert acc["kendall"].abs().idxmax() == "gm_strong"  # the headline is not the strongest, and still first
    assert rows[0].startswith(f"* {CONFIRMATORY_MEASURE}") and rows[1].startswith("  gm_strong")
    assert len(rows) == 1 + console.TOP
    for r in rows:
        measure = r[2:].split()[0]
        assert f"[{acc.loc[measure, 'kendall_ci_low']:+.2f}, {acc.loc[measure, 'kendall_ci_high']:+.2f}]" in r
        assert f"{acc.loc[measure, 'kendall_p_holm']:.3g}" in r


def test_the_sweep_figures_mark_the_headline_and_show_every_taus_interval_and_p():
    summary = sweep_summary.summarize(CFG, SPACE, _every(12, 0), _outcomes(12, []))
    fig = summary.figures["correlation_bars.png"]
    ax = fig.axes[0]
    ticks = ax.get_yticklabels()
    top = max(ticks, key=lambda t: t.get_position()[1])
    assert top.get_text() == f"{CONFIRMATORY_MEASURE} (headline)" and to_rgba(top.get_color()) == to_rgba("tab:orange")
    assert sum("(headline)" in t.get_text() for t in ticks) == 1
    top_bar = max(ax.patches, key=lambda p: p.get_y())
    assert top_bar.get_facecolor()[:3] == to_rgba("tab:orange")[:3]
    acc = summary.table[summary.table["target"] == "test_acc"]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == len(acc) and all(t.startswith("τ ") and "[" in t and ", p " in t for t in texts)
    head = acc[acc["measure"] == CONFIRMATORY_MEASURE].iloc[0]
    assert plots.tau_text(head) in texts
    assert ax.get_xlim() == (-1, 1)  # signed τ: the sign is not hidden
    scatter = summary.figures["scatter.png"].axes[0]
    assert "(headline)" in scatter.get_title() and plots.tau_text(head) in scatter.get_title()
    png = io.BytesIO()
    fig.savefig(png, format="png")  # renders headless
    assert png.getbuffer().nbytes > 0


# ---- one line per trial, and the time left ----------------------------------------------------------------------


def _frozen(number, state, value=None, attrs=None, params=None, seconds=12.3) -> FrozenTrial:
    start = dt.datetime(2026, 1, 1)
    params = params or {"lr": 0.0512, "width": 32, "momentum": 0.9}
    dists = {
        "lr": optuna.distributions.FloatDistribution(0.01, 0.3, log=True),
        "width": optuna.distributions.CategoricalDistribution([16, 32, 64]),
        "momentum": optuna.distributions.CategoricalDistribution([0.9]),
    }
    return FrozenTrial(
        number=number,
        state=state,
        value=value,
        datetime_start=start,
        datetime_complete=start + dt.timedelta(seconds=seconds),
        params=params,
        distributions=dists,
        user_attrs=attrs or {},
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def test_a_trials_line_says_what_varies_how_it_ended_its_accuracy_headline_and_seconds():
    shown = console.varying(SPACE)
    assert shown == ["lr", "width"]
    line = console.trial_line(
        _frozen(3, TrialState.COMPLETE, 0.962, {"converged": 1, CONFIRMATORY_MEASURE: 0.913}), shown, "tc_kappa_test"
    )
    assert line == "tc sweep: trial 3 | lr=0.0512 width=32 | converged | test_acc 0.9620 | tc_kappa_test 0.9130 | 12 s"
    capped = console.trial_line(_frozen(4, TrialState.COMPLETE, 0.9, {"converged": 0}), shown, "tc_kappa_test")
    assert "| hit the epoch cap | test_acc 0.9000 | tc_kappa_test n/a |" in capped
    failed = console.trial_line(_frozen(5, TrialState.FAIL, attrs={FAIL_REASON_ATTR: "training diverged"}), shown, "k")
    assert "| failed: training diverged |" in failed
    pruned = console.trial_line(_frozen(6, TrialState.PRUNED, attrs={outcomes.PRUNED_ATTR: "below"}), shown, "k")
    assert "| pruned: below |" in pruned
    crashed = console.trial_line(_frozen(7, TrialState.FAIL, attrs={CRASH_ATTR: "KeyError: x"}), shown, "k")
    assert "| crashed: not counted toward n_trials |" in crashed
    assert console.trial_line(_frozen(8, TrialState.FAIL, attrs={SURPLUS_ATTR: "full"}), shown, "k") is None


def test_the_time_left_is_trials_left_times_the_mean_trial_over_the_workers():
    done = pd.DataFrame(
        [
            {"trial": 0, "kind": "finished", "reason": "", "seconds": 10.0},
            {"trial": 1, "kind": "failed", "reason": "x", "seconds": 20.0},
            {"trial": 2, "kind": "crashed", "reason": "x", "seconds": 1000.0},  # no measure of a trial's cost
            {"trial": 3, "kind": "running", "reason": "", "seconds": None},  # another worker
        ]
    )
    assert console.time_left_line(done, 4) == "4 left: about 30 s (15 s per trial over 2, 2 workers)"
    assert console.time_left_line(done, 0) is None
    assert console.time_left_line(done[done["kind"] == "running"], 4) is None  # nothing ended yet
    assert [console.duration(s) for s in (9.44, 42, 157, 5400, 9000)] == ["9.4 s", "42 s", "2.6 min", "90 min", "2.5 h"]


def test_inside_a_trial_periodic_progress_lines_leave_standard_error_and_warnings_do_not():
    from tc.core.progress import Periodic

    keep, through = io.StringIO(), io.StringIO()
    err = console.ProgressFilter(keep, through)
    lines = Periodic(5700, "tc train", "steps", interval=0.0, stream=err)  # the real format, written in pieces
    lines.update(256)
    err.write("UserWarning: something the user must see\nhalf a ")
    err.write("line")
    err.close()
    assert through.getvalue() == "UserWarning: something the user must see\nhalf a line"
    assert keep.getvalue().startswith("tc train: 256/5700 steps (4%), 5444 left") and "UserWarning" in keep.getvalue()


def test_a_crashed_and_a_pruned_trial_each_get_their_line_and_their_place_in_the_account(
    mlflow_store, tmp_path, monkeypatch, capsys
):
    from entrypoints import sweep as sweep_ep
    from tc.sweep import trial as sweep_trial

    calls = []

    def crash_then_prune(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a bug")
        raise optuna.TrialPruned("test_acc 0.41 below the median at epoch 1")

    monkeypatch.setattr(sweep_trial.jobs, "train_into_run", crash_then_prune)
    (tmp_path / "space.json").write_text(json.dumps({"lr": {"type": "categorical", "choices": [0.05, 0.1]}}))
    argv = ["--dataset", "digits", "--model", "mlp", "--epochs", "1", "--seeds", "1", "--n_trials", "1"]
    argv += ["--search_space", str(tmp_path / "space.json"), "--storage", str(tmp_path / "j.log")]
    assert sweep_ep.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if line.startswith("tc sweep: trial ")]
    assert len(lines) == 2 and "| crashed: not counted toward n_trials |" in lines[0]
    assert "| pruned: test_acc 0.41 below the median at epoch 1 |" in lines[1]
    assert "tc sweep: 2 trial(s): 0 finished; 1 crashed (1 ValueError; not counted toward n_trials); 1 pruned" in (
        "\n".join(out)
    )
    assert "tc sweep: too few converged trials (0 of 2; need 3): no correlations computed" in out
