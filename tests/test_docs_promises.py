"""The numbers the docs quote from the published report are the report's stored tables (issue 22: every number in
the docs is checked by a test or a measurement). The report's run (2026-12-04, docs/report.md's lab note) left
its tables in docs/report/; the prose of README.md and docs/report.md quotes them by hand, so a re-render or a new
run that moves them must move the prose too. docs/sweep.md quotes the sweep of the report before it (2026-11-29),
whose tables are a fixture (tests/fixtures/legacy_report)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "docs" / "report"
LEGACY = ROOT / "tests" / "fixtures" / "legacy_report" / "report"


def _text(name: str) -> str:
    return " ".join((ROOT / name).read_text().split())  # one line: the prose wraps anywhere


def _effect(label: str) -> pd.Series:
    effects = pd.read_csv(TABLES / "effects.csv").set_index("label")
    return effects.loc[label]


def _robust(measure: str) -> pd.Series:
    table = pd.read_csv(TABLES / "robust.csv")
    return table[table.measure == measure].iloc[0]


def _interval(value: float, low: float, high: float, digits: int = 2) -> str:
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _minus(text: str) -> str:
    return text.replace("-", "−")


def test_the_primary_tau_quoted_in_readme_and_report_md_is_the_stored_one():
    row = _robust("tc_kappa_test")
    assert (row["n_digits-mlp"], row.n_conv) == (91, 50)
    assert row.p_iut < 0.001 and row.predicts
    digits = _interval(row["tau_digits-mlp"], row["tau_digits-mlp_low"], row["tau_digits-mlp_high"])
    conv = _interval(row.tau_conv, row.tau_conv_low, row.tau_conv_high)
    assert f"Kendall τ = {row['tau_digits-mlp']:.2f} and {row.tau_conv:.2f}" in _text("README.md")
    report = _text("docs/report.md")
    assert f"τ = {digits} on 91 converged digits-MLP trials and {conv} on 50 conv trials" in report
    assert f"The pooled τ, {_interval(row.pooled, row.pooled_low, row.pooled_high)}," in report
    dis = _robust("gm_disagreement")
    said = f"τ = {dis['tau_digits-mlp']:.2f} and {dis.tau_conv:.2f}"
    assert _minus(said) in _text("README.md") and _minus(said) in report
    assert _minus(f"(worst environment {_interval(dis.worst_tau, dis.worst_low, dis.worst_high)})") in report
    steps = _robust("gm_steps_to_criterion")
    assert f"both ({steps['tau_digits-mlp']:.2f} and {steps.tau_conv:.2f})" in report
    assert _minus(f"flips `gm_steps_to_criterion` to {steps.pooled:.2f}") in report


def test_the_calibration_report_md_quotes_is_the_stored_one():
    cal = pd.read_csv(TABLES / "calibration.csv").set_index(["env", "estimate"])
    report = _text("docs/report.md")
    full = [cal.loc[(e, "err_hat_full_test"), "mae"] for e in ("digits-mlp", "conv")]
    gde = [cal.loc[(e, "gm_disagreement"), "mae"] for e in ("digits-mlp", "conv")]
    assert f"within {full[0]:.3f} (digits) and {full[1]:.3f} (conv)" in report
    assert f"closer in both ({gde[0]:.3f} and {gde[1]:.3f})" in report
    conv = cal.loc[("conv", "err_hat_full_test")]
    assert f"(difference {_interval(conv.vs_gde, conv.vs_gde_low, conv.vs_gde_high, 3)})" in report


@pytest.mark.parametrize(
    ("label", "quoted"),
    [
        ("tc_gain_test (base)", "(`tc_gain` {}, "),
        ("tc_gain_corrupt (base)", ", {}, "),
        ("tc_gain_train (base)", ", {});"),
        ("tc_kappa_test: clean − random", "(difference {})"),
        ("tc_full_test: clean − random", "falls as much ({})"),
        ("test_acc: clean − noisy", "lower test accuracy by {},"),
        ("tc_kappa_test: clean − noisy", "`tc_kappa_test` ({})"),
        ("tc_full_test: clean − noisy", "`tc_full_test` ({})"),
    ],
)
def test_report_md_quotes_each_claims_stored_interval(label, quoted):
    row = _effect(label)
    assert quoted.format(_interval(row["diff"], row.low, row.high, 3)) in _text("docs/report.md")


def test_report_md_quotes_the_other_stored_effects():
    report = _text("docs/report.md")
    top = _effect("aniso_perturb_top_acc − aniso_perturb_random_acc (base)")
    diff = f"−{-top['diff']:.3f} [−{-top.low:.3f}, −{-top.high:.3f}]"
    assert f"(accuracy {top.mean_a:.3f} against {top.mean_b:.3f}, difference {diff})" in report
    kappa = _effect("tc_kappa_test: clean − random")
    assert f"falls from {kappa.mean_a:.3f} to {kappa.mean_b:.3f}" in report
    cross, shallow = _effect("tc_test − tc_test_crossseed (base)"), _effect("tc_test − tc_test_random_shallow (base)")
    assert f"(tc {cross.mean_a:.3f} against {cross.mean_b:.3f} and {shallow.mean_b:.3f})" in report
    gain = _effect("tc_gain_test: clean − noisy")
    assert _minus(f"inconclusive ({_interval(gain['diff'], gain.low, gain.high, 3)})") in report
    loss = _effect("gm_sum_train_loss: clean − noisy")
    assert f"({loss.mean_a:.3f} clean against {loss.mean_b:.3f} noisy)" in report
    steps = _effect("gm_steps_to_criterion: clean − noisy")
    assert f"({steps.mean_b:.0f} against {steps.mean_a:.0f})" in report


def test_the_proxys_range_in_sweep_md_is_the_earlier_report_sweeps_trials():
    trials = pd.read_csv(LEGACY / "trials.csv")
    converged = trials[trials.converged == 1]
    assert (len(trials), len(converged)) == (52, 50)
    acc, epochs = converged.test_acc, converged.epochs_trained
    text = " ".join(_text("docs/sweep.md").split())  # the prose wraps anywhere
    said = f"{acc.min():.3f} to {acc.max():.3f} over its 50 converged trials "
    said += f"(after {epochs.min():.0f} to {epochs.max():.0f} epochs)"
    assert said in text
    clean = converged[converged.label_noise == 0]
    acc, epochs = clean.test_acc, clean.epochs_trained
    said = f"over the {len(clean)} clean-label ones only {acc.min():.3f} to {acc.max():.3f} "
    said += f"(after {epochs.min():.0f} to {epochs.max():.0f} epochs)"
    assert said in text
    assert "50 reached the target and 2 hit the 300-epoch cap" in _text("docs/sweep.md")


def test_the_digits_split_sizes_the_docs_quote():
    from tc.core.data import load_data

    data = load_data("digits")
    assert (len(data.train_y), len(data.test_y)) == (1438, 359)
    assert re.search(r"1438 training / 359\s+test images", (ROOT / "docs" / "sweep.md").read_text())


def test_the_heatmap_size_analyze_md_quotes(tmp_path):
    """docs/analyze.md: figures at 110 dpi, the heatmaps of a 4-cut, 3-split run 1144 x 2442 pixels."""
    from PIL import Image

    from tc.analysis import plots
    from tc.analysis.files import DPI, save_figures

    steps = [0, 100, 150, 200]
    rows = [
        (cut, split, t1, t2, 0.8, 0.9, 1.0, 1.0 if t1 == t2 else 0.95)
        for cut in (1, 4, 7, 10)
        for split in ("train", "test", "corrupt")
        for t1 in steps
        for t2 in steps
    ]
    matrices = pd.DataFrame(rows, columns=["cut", "split", "t1", "t2", "acc", "agree", "loss", "rc"])
    save_figures({"h.png": plots.consistency_heatmaps(matrices)}, tmp_path)
    width, height = Image.open(tmp_path / "h.png").size
    said = _text("docs/analyze.md")
    assert f"saved at {DPI} dpi (the heatmaps of a 4-cut, 3-split run: {width} x {height} pixels)" in said
    assert (DPI, width, height) == (110, 1144, 2442)


def test_the_rdb_heartbeat_scaling_md_quotes(tmp_path):
    """docs/scaling.md: on an RDB a trial whose worker stopped its heartbeat (every 30 s) for 120 s is FAILED."""
    from tc.sweep.study import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    assert (storage.heartbeat_interval, storage.grace_period) == (30, 120)
    assert "stopped its heartbeat (every 30 s) for 120 s" in _text("docs/scaling.md")
