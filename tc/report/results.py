"""What the report's text is made from (`Results`), and the tables that store it beside the text."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from tc.config import SweepConfig
from tc.report.experiments import Settings, sweep_config
from tc.report.verdicts import section_effects
from tc.stats.replicates import Effect

SETTINGS_FILE = "settings.json"  # in report/: the settings, the sweep's config and space, the sweep's error
STORED_TABLES = ("trials.csv", "correlations.csv", "effects.csv", "costs.csv", SETTINGS_FILE)


@dataclass(frozen=True)
class Results:
    """What the report's text is made from (measured by `tc.report.produce`, or read back from the stored tables
    by `tc.report.files.from_tables`)."""

    settings: Settings
    metrics: dict[str, dict[str, float]]  # result name (`analyses`: `<arm>/s<seed>`) -> the run's metrics then
    figures: dict[str, str]  # figure key -> path relative to the report (sweep figures only when they exist)
    trials: pd.DataFrame  # the sweep's trials.csv (converged trials and those that hit the cap)
    corr: pd.DataFrame  # the sweep's correlations.csv (converged trials only; empty below MIN_TRIALS)
    costs: dict[str, float] = field(default_factory=dict)  # `epoch_costs` of the sweep's trials
    timing: dict[str, float] = field(default_factory=dict)  # seconds per step of this report
    seconds: float = 0.0  # the whole report
    machine: str = ""  # `describe_machine()` where the experiments ran
    effects: dict[str, list[Effect]] | None = None  # None: `section_effects(metrics)`
    sweep_error: str = ""  # why the sweep gave no tables, when it failed (`type: message`)
    space: dict = field(default_factory=dict)  # the sweep's search space, fitted to its data set
    sweep_cfg: SweepConfig | None = None  # None: `sweep_config(settings)`
    notes: tuple[str, ...] = ()  # remarks a re-render states (stored in settings.json with the tables)


def sweep_config_of(r: Results) -> SweepConfig:
    """The sweep's resolved config: the stored one, else that of the settings."""
    return r.sweep_cfg if r.sweep_cfg is not None else sweep_config(r.settings)


def effects_of(r: Results) -> dict[str, list[Effect]]:
    """The results' effects by section: the stored ones, else those of its metrics."""
    return r.effects if r.effects is not None else section_effects(r.metrics)
