"""The numbers the docs quote from the published report are the report's stored tables (issue 22: every number in
the docs is checked by a test or a measurement). The report's run (2026-11-29, docs/report.md's lab note) left
its tables in docs/report/; the prose of README.md, docs/report.md and docs/sweep.md quotes them by hand, so a
re-render or a new run that moves them must move the prose too."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "docs" / "report"


def _text(name: str) -> str:
    return " ".join((ROOT / name).read_text().split())  # one line: the prose wraps anywhere


def _effect(label: str) -> pd.Series:
    effects = pd.read_csv(TABLES / "effects.csv").set_index("label")
    return effects.loc[label]


def _tau(measure: str) -> pd.Series:
    table = pd.read_csv(TABLES / "correlations.csv")
    return table[(table.measure == measure) & (table.target == "test_acc")].iloc[0]


def _interval(value: float, low: float, high: float, digits: int = 2) -> str:
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def test_the_headline_tau_quoted_in_readme_and_report_md_is_the_stored_one():
    row = _tau("tc_kappa_test")
    assert row.n_trials == 50 and row.kendall_p < 0.001
    quoted = _interval(row.kendall, row.kendall_ci_low, row.kendall_ci_high)
    assert quoted == "0.50 [0.34, 0.65]"
    assert f"Kendall τ = {row.kendall:.2f}" in _text("README.md")
    report = _text("docs/report.md")
    assert f"over 50 converged trials, `tc_kappa_test` has Kendall τ = {quoted}" in report
    dis = _tau("gm_disagreement")
    assert f"τ = {_interval(dis.kendall, dis.kendall_ci_low, dis.kendall_ci_high).replace('-', '−')}" in report
    assert f"`tc_window_checkpoints` (τ = {_tau('tc_window_checkpoints').kendall:.2f})".replace("-", "−") in report
    costs = pd.read_csv(TABLES / "costs.csv").set_index("step").epochs
    assert f"({costs['gm_disagreement']:.2f} against {costs['analysis']:.0f} training epochs" in report
    cheap = "tc_test_cheap_k1_n100"
    assert f"surrogates cost {costs[cheap]:.1f} epochs at τ = {_tau(cheap).kendall:.2f}" in report


@pytest.mark.parametrize(
    ("label", "quoted"),
    [
        ("tc_excess_test (base)", "`tc_excess` {}"),
        ("tc_excess_corrupt (base)", ", {}, "),
        ("tc_excess_train (base)", ", {})"),
        ("tc_kappa_test: clean − random", "(difference {})"),
        ("tc_full_test: clean − random", "falls as much ({})"),
        ("tc_test: recalibrate − splice", "raises it by {}"),
    ],
)
def test_report_md_quotes_each_claims_stored_interval(label, quoted):
    row = _effect(label)
    digits = 3 if ":" in label else 2
    assert quoted.format(_interval(row["diff"], row.low, row.high, digits)) in _text("docs/report.md")


def test_report_md_quotes_the_other_stored_effects():
    report = _text("docs/report.md")
    top = _effect("aniso_perturb_top_acc − aniso_perturb_random_acc (base)")
    diff = f"−{-top['diff']:.3f} [−{-top.low:.3f}, −{-top.high:.3f}]"
    assert f"accuracy {top.mean_a:.3f} against {top.mean_b:.3f}, difference {diff}" in report
    kappa = _effect("tc_kappa_test: clean − random")
    assert f"falls from {kappa.mean_a:.3f} to {kappa.mean_b:.3f}" in report
    thirds = [_effect(f"tc_kappa_test_{p}: clean − random")["diff"] for p in ("early", "middle", "late")]
    assert "(early {:.2f}, middle {:.2f}, late {:.2f})".format(*thirds) in report
    frozen = _effect("test_acc: frozen − base")
    assert f"lowers test accuracy by {-frozen['diff']:.3f} [{abs(frozen.high):.3f}, {-frozen.low:.3f}]" in report
    assert f"freezing raises tc by {_effect('tc_test: frozen − base')['diff']:.3f}" in report
    cross, shallow = _effect("tc_test − tc_test_crossseed (base)"), _effect("tc_test − tc_test_random_shallow (base)")
    assert f"(tc {cross.mean_a:.2f} against {cross.mean_b:.2f} and {shallow.mean_b:.2f})" in report


def test_the_proxys_range_in_sweep_md_is_the_report_sweeps_trials():
    trials = pd.read_csv(TABLES / "trials.csv")
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
