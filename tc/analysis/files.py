"""An analysis result as files in a directory: the only module of `tc.analysis` that writes files.

`write_files(result, out, cfg)` writes what `tc.tracking` logs into the run's analysis version:

    <table>.csv      every table of `AnalysisResult.tables` (matrices, lags, drift, per_sample, corrupt;
                     anisotropy, anisotropy_spectra, perturbation with the anisotropy statistics)
    summary.json     the result's summary (with every metric) and the config, `summary_document`
    <figure>.png     every figure of `AnalysisResult.figures` (heatmaps and lag curves with matrix=full)

With `cfg.outputs` = measures (a sweep trial's analysis: its metrics are all the sweep reads) only summary.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from tc.config import AnalyzeConfig

if TYPE_CHECKING:  # the result module draws figures (matplotlib): not needed to write them
    from matplotlib.figure import Figure

    from tc.analysis.result import AnalysisResult

SUMMARY_FILE = "summary.json"
DPI = 110


def summary_document(result: AnalysisResult, cfg: AnalyzeConfig) -> dict:
    """summary.json's content: the result's summary (cuts, steps, windows, half-lives, warnings, tags,
    metrics) with the analysis config under "config"."""
    return {**result.summary, "config": asdict(cfg)}


def write_files(result: AnalysisResult, out: Path, cfg: AnalyzeConfig) -> list[str]:
    """Write `result`'s tables (CSV, no index), summary.json and figures (PNG) into the directory `out`; the
    names written, in order. `cfg` is the analysis's config: it goes into summary.json, its `matrix` says
    whether the full-matrix figures are drawn, and `outputs` = measures writes summary.json alone."""
    tables = result.tables() if cfg.outputs == "full" else {}
    names = []
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        names.append(f"{name}.csv")
    (out / SUMMARY_FILE).write_text(json.dumps(summary_document(result, cfg), indent=1))
    names.append(SUMMARY_FILE)
    if cfg.outputs != "full":
        return names
    figures = {f"{name}.png": fig for name, fig in result.figures(full_matrix=cfg.matrix == "full").items()}
    save_figures(figures, out)
    return [*names, *figures]


def save_figures(figures: dict[str, Figure], out: Path, dpi: int = DPI) -> None:
    """Write each figure to `out / name` (PNG by the name's suffix)."""
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=dpi)
