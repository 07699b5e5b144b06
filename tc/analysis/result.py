"""What an analysis returns (`AnalysisResult`): its tables, metrics and summary, and the figures drawn from
them. Nothing here writes a file: `tc.analysis.files` turns a result into files."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure

from tc.analysis import plots
from tc.analysis.anisotropy import AnisotropyResult


@dataclass
class AnalysisResult:
    """Every metric of one analysis (`metrics`, named in `tc.analysis.registry.METRICS`), its tidy tables
    (steps are optimizer steps), and its summary (warnings, half-lives, the metrics again).

    Example (what `analyze_run` returns; here on five made-up checkpoints):

    >>> import torch, tc
    >>> data = tc.load_data("digits", train_size=128)
    >>> model = tc.build_model(tc.ModelSpec("mlp", 3, 16, in_channels=1, image_size=8, num_classes=10))
    >>> init = model.state_dict()
    >>> states = [{k: v + 0.01 * i if v.is_floating_point() else v for k, v in init.items()} for i in range(5)]
    >>> cfg = tc.AnalyzeConfig(run_id="in-memory", splits="test", max_samples=50, anisotropy=False, measures=False)
    >>> result = tc.analyze_run(tc.Checkpoints([0, 1, 2, 3, 4], states), data, cfg, tc.RunContext(model, 32, 0))
    >>> sorted(result.tables()), "tc_test" in result.metrics
    (['corrupt', 'drift', 'lags', 'matrices', 'per_sample'], True)
    >>> sorted(result.figures(full_matrix=True))
    ['consistency_heatmaps', 'drift_vs_consistency', 'lag_curves', 'per_sample_kde']
    """

    matrices: pd.DataFrame  # cut, split, t1, t2, acc, agree, loss, rc (t1, t2 = steps)
    lags: pd.DataFrame  # cut, split, lag, acc, rc
    drift: pd.DataFrame  # cut, split, t1, drift, agree_final, acc_final
    per_sample: pd.DataFrame  # cut, split, sample, c
    corrupt: pd.DataFrame  # cut, corruption, severity, tc, acc
    metrics: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)  # its "metrics" is `metrics` itself
    aniso: AnisotropyResult | None = None

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every tidy table by name: the five consistency tables, and with the anisotropy statistics
        `anisotropy` (their statistics), `anisotropy_spectra` and `perturbation` (per draw)."""
        out = {name: getattr(self, name) for name in ("matrices", "lags", "drift", "per_sample", "corrupt")}
        if self.aniso is not None:
            out |= {"anisotropy": self.aniso.stats, "anisotropy_spectra": self.aniso.spectra}
            out["perturbation"] = self.aniso.perturb
        return out

    def figures(self, full_matrix: bool) -> dict[str, Figure]:
        """Every figure by name (`tc.analysis.plots`): drift against consistency and the per-sample KDE; with
        the anisotropy statistics their spectra and perturbation curves; with `full_matrix` (matrix=full, every
        (t1, t2) pair) the consistency heatmaps and lag curves."""
        figures = {
            "drift_vs_consistency": plots.drift_vs_consistency(self.drift),
            "per_sample_kde": plots.per_sample_kde(self.per_sample),
        }
        if self.aniso is not None:
            figures["anisotropy_spectra"] = plots.spectra_vs_null(self.aniso.spectra)
            figures["perturbation"] = plots.perturbation_curves(self.aniso.perturb)
        if full_matrix:
            figures["consistency_heatmaps"] = plots.consistency_heatmaps(self.matrices)
            figures["lag_curves"] = plots.lag_curves(self.lags)
        return figures
