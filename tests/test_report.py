"""The report command end to end, in its quick form (digits, 6 trials) and into a temporary directory."""

import pytest

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
