"""`ReportConfig`: the `report` entry point's parameters (docs/report.md)."""

from __future__ import annotations

from dataclasses import dataclass

from tc.config.fields import check_range, opt


@dataclass(frozen=True)
class ReportConfig:
    """What `entrypoints/report.py` runs (the full report, or its smoke version) and where it writes; or, with
    `rerender`, which stored report it re-renders without running anything."""

    quick: bool = opt(False, "the same experiments at toy scale, in minutes (what `tests/test_report.py` runs)")
    trials: int = opt(
        0,
        "converged sweep trials to collect per environment (the sweep asks for more trials until this many "
        'converged); 0 = each environment\'s own size (docs/report.md, "Environments and their size")',
    )
    out_dir: str | None = opt(
        None,
        "directory for `REPORT.md` and its `report/` folder (figures, `effects.csv`, per environment "
        "`trials_<env>.csv`, `correlations_<env>.csv` and `costs_<env>.csv`, and `robust.csv`, `per_cut.csv`, "
        "`calibration.csv`, `settings.json`); none = `docs/` of this checkout",
    )
    rerender: bool = opt(
        False,
        "run nothing: re-render `out_dir/REPORT.md` from the stored tables in `out_dir/report`, with the settings "
        "of its `settings.json` (so quick and trials must keep their defaults)",
    )

    def __post_init__(self) -> None:
        check_range("trials", self.trials, 0)
        if self.rerender and (self.quick or self.trials != ReportConfig.trials):
            raise ValueError(
                f"rerender=true with quick={str(self.quick).lower()}, trials={self.trials}: a re-render reads the "
                "settings from report/settings.json; drop quick and trials"
            )
