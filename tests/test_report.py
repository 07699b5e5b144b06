"""The report command end to end, in its quick form (digits, 6 trials) and into a temporary directory."""

from pathlib import Path

import pandas as pd
import pytest

from tc import report
from tests.test_mlflow_run import mlflow_run


@pytest.mark.slow
def test_quick_report_is_generated_with_every_section_and_figure(mlflow_store, tmp_path):
    proc = mlflow_run("report", "quick=true", f"out_dir={tmp_path}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "REPORT.md").read_text()
    for heading in (
        "## 1. Temporal consistency",
        "## 2. Random labels",
        "## 3. Feature drift",
        "## 4. Controls",
        "## 5. Anisotropy",
        "## 6. Does consistency predict generalization",
        "## Compute used",
    ):
        assert heading in text
    assert "n/a |" not in text.split("## 1.")[1].split("## 2.")[0]  # section 1 numbers all measured
    for fig in (
        "base_consistency_heatmaps.png",
        "random_heatmaps.png",
        "base_anisotropy_spectra.png",
        "sweep_scatter.png",
        "sweep_bars.png",
        "correlations.csv",
        "trials.csv",
    ):
        assert (tmp_path / "report" / fig).is_file(), fig
        assert f"report/{fig}" in text or fig.endswith(".csv")
    assert "**The bar**" in text


# ---- tc.report: the bar, the costs and the sections, on made-up measurements (fast) ----


def test_meets_the_bar_needs_tau_above_half_above_every_baseline_and_cheap_enough():
    assert report.meets_the_bar(0.6, 0.4, 1.0)
    assert not report.meets_the_bar(0.49, 0.1, 1.0)  # too weak
    assert not report.meets_the_bar(0.6, 0.6, 1.0)  # not better than the best baseline
    assert not report.meets_the_bar(0.6, 0.1, 2.5)  # too expensive
    assert report.meets_the_bar(0.6, 0.1, None)  # cost unknown


def test_costs_are_seconds_over_each_trials_epoch_and_measures_inherit_their_analysis_cost():
    costs = report.epoch_costs(
        [
            ({"analysis_seconds": 4.0, "gm_margin_seconds": 1.0, "tc_test": 0.9}, 2.0),
            ({"analysis_seconds": 8.0}, 2.0),
            ({"analysis_seconds": 99.0}, None),
        ]
    )
    assert costs == {"analysis": 3.0, "gm_margin": 0.5}
    assert report.cost_of("tc_kappa_test", costs) == 3.0 and report.cost_of("gm_margin", costs) == 0.5
    assert report.cost_of("aniso_drift_topk_var", costs) is None and report.cost_of("other", costs) is None


def _corr(tau_tc, tau_gm):
    rows = []
    for measure, tau in (("tc_kappa_test", tau_tc), ("gm_sharpness", tau_gm), ("tc_test_cheap_k1_n100", 0.1)):
        for target in ("test_acc", "gen_gap"):
            rows.append(
                dict(
                    measure=measure,
                    target=target,
                    kendall=tau,
                    kendall_ci_low=tau - 0.2,
                    kendall_ci_high=tau + 0.2,
                    spearman=tau,
                    granulated_kendall=0.5,
                    worst_psi=0.0,
                    partial_kendall=0.1,
                )
            )
    return pd.DataFrame(rows)


def test_report_has_every_section_in_order_and_the_verdict_follows_the_bar():
    s = report.settings(True, 24, Path("."))
    metrics = {name: {"tc_test": 0.9, "acc_train": 0.8} for name, _, _ in report.analyses(s, {"seed1": "x"})}
    figures = {**{k: f"report/{v}" for k, v in report.BASE_FIGURES.items()}, "heat_random": "report/r.png"}
    trials = pd.DataFrame({"tc_test": [0.1, 0.2, 0.3], "tc_test_cheap_k1_n100": [0.3, 0.1, 0.2]})
    for tau_tc, verdict in ((0.7, "Consistency **meets** the bar"), (0.3, "**does not meet**")):
        costs = {"analysis": 1.0}
        text = report.render(report.Results(s, metrics, figures, trials, _corr(tau_tc, 0.4), costs, {"sweep": 3}))
        headings = [line for line in text.splitlines() if line.startswith("## ")]
        assert [h.split()[1] for h in headings] == ["1.", "2.", "3.", "4.", "5.", "6.", "Compute"]
        assert verdict in text and "`tc_test_cheap_k1_n100` τ = 0.10" in text
    assert s.n_trials == 6 and report.settings(False, 24, Path(".")).n_trials == 24
