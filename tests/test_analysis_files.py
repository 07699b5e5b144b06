"""`tc.analysis.files.write_files` writes exactly the files the analysis wrote before the files moved out of the
result (names and bytes), and nothing else in `tc.analysis` writes files."""

import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from tc.analysis import plots
from tc.analysis.files import write_files
from tc.analysis.inputs import RunContext
from tc.analysis.run import analyze_run
from tc.config import AnalyzeConfig
from tc.core.checkpoints import Checkpoints
from tc.core.data import load_data
from tests.test_compose import _checkpoints

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"matrices.csv", "lags.csv", "drift.csv", "per_sample.csv", "corrupt.csv", "summary.json"}
ANISO = {"anisotropy.csv", "anisotropy_spectra.csv", "perturbation.csv", "anisotropy_spectra.png", "perturbation.png"}
FIGURES = {"drift_vs_consistency.png", "per_sample_kde.png"}
FULL = {"consistency_heatmaps.png", "lag_curves.png"}


def _write_files_before(result, out: Path, cfg: AnalyzeConfig) -> None:
    """The oracle: `AnalysisResult.write_files` as it was before `tc.analysis.files` (branch `house`), verbatim
    but for `self` -> `result` and `plots.save_figures` spelt out."""
    for name in ("matrices", "lags", "drift", "per_sample", "corrupt"):
        getattr(result, name).to_csv(out / f"{name}.csv", index=False)
    (out / "summary.json").write_text(json.dumps({**result.summary, "config": asdict(cfg)}, indent=1))
    figures = {
        "drift_vs_consistency.png": plots.drift_vs_consistency(result.drift),
        "per_sample_kde.png": plots.per_sample_kde(result.per_sample),
    }
    if result.aniso is not None:
        result.aniso.stats.to_csv(out / "anisotropy.csv", index=False)
        result.aniso.spectra.to_csv(out / "anisotropy_spectra.csv", index=False)
        result.aniso.perturb.to_csv(out / "perturbation.csv", index=False)
        figures["anisotropy_spectra.png"] = plots.spectra_vs_null(result.aniso.spectra)
        figures["perturbation.png"] = plots.perturbation_curves(result.aniso.perturb)
    if cfg.matrix == "full":
        figures["consistency_heatmaps.png"] = plots.consistency_heatmaps(result.matrices)
        figures["lag_curves.png"] = plots.lag_curves(result.lags)
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)


@pytest.mark.parametrize(
    "options,expected",
    [
        ({}, TABLES | ANISO | FIGURES | FULL),  # the defaults: matrix=full, anisotropy on
        ({"matrix": "final", "anisotropy": False, "splits": "test"}, TABLES | FIGURES),
    ],
)
def test_write_files_writes_what_the_analysis_wrote_before(tmp_path, options, expected):
    model, sds = _checkpoints(n=3)
    data = load_data("digits", train_size=256)
    cfg = AnalyzeConfig(
        run_id="x", max_samples=16, null_draws=100, cuts="1,3", batch_size=16, grad_batches=4, aniso_k=2
    )
    cfg = replace(cfg, measures=False, **options)
    result = analyze_run(Checkpoints([0, 5, 10], sds), data, cfg, RunContext(model, 64, 0))
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    after.mkdir()
    _write_files_before(result, before, cfg)
    written = write_files(result, after, cfg)
    names = sorted(p.name for p in after.iterdir())
    assert sorted(written) == names == sorted(expected)
    assert names == sorted(p.name for p in before.iterdir())
    differ = [n for n in names if (before / n).read_bytes() != (after / n).read_bytes()]
    assert differ == [], differ
    summary = json.loads((after / "summary.json").read_text())
    assert summary["config"] == asdict(cfg) and summary["metrics"]["tc_test"] == result.metrics["tc_test"]


def test_only_the_files_module_writes_files():
    """The analysis returns results; `tc.analysis.files` alone turns them into files."""
    writes = re.compile(r"\.to_csv\(|\.savefig\(|\bopen\(|\.write_text\(|\.write_bytes\(|json\.dump\(|torch\.save\(")
    offenders = [
        f"{path.name}:{i}"
        for path in sorted((ROOT / "tc" / "analysis").glob("*.py"))
        if path.name != "files.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if writes.search(line)
    ]
    assert offenders == []
