"""What the report's text is made from (`Results`, one `SweepResult` per environment), and the tables that store it
beside the text."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from tc.config import SweepConfig
from tc.report.costs import runs_from_epochs
from tc.report.environments import Environment
from tc.report.experiments import Settings, sweep_config
from tc.report.verdicts import section_effects
from tc.stats.replicates import Effect

SETTINGS_FILE = "settings.json"  # in report/: the settings, each environment's sweep config, space and error
# the stored tables: per environment (<env>: its name) and across them (`tc.report.files.write`)
ENV_TABLES = ("trials", "correlations", "costs")
CROSS_TABLES = ("robust.csv", "per_cut.csv", "calibration.csv")
STORED_TABLES = (
    *(f"{t}_<env>.csv" for t in ENV_TABLES),
    *CROSS_TABLES,
    "effects.csv",
    SETTINGS_FILE,
)
LEGACY_TABLES = ("trials.csv", "correlations.csv", "effects.csv", "costs.csv", SETTINGS_FILE)  # before issue 23


@dataclass(frozen=True)
class SweepResult:
    """One environment's sweep: its trials.csv (converged trials and those that hit the cap), correlations.csv
    (converged trials only; empty below MIN_TRIALS), costs (`tc.report.costs.run_costs`: in training runs of the
    trial), fitted space, resolved config, error (`type: message` when it failed) and figures
    ({sweep_scatter, sweep_bars}: paths relative to the report, those that exist)."""

    env: Environment
    trials: pd.DataFrame
    corr: pd.DataFrame
    costs: dict[str, float] = field(default_factory=dict)
    space: dict = field(default_factory=dict)
    cfg: SweepConfig | None = None
    error: str = ""
    figures: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Results:
    """What the report's text is made from (measured by `tc.report.produce`, or read back from the stored tables
    by `tc.report.files.from_tables`). The sweeps: `sweeps`, one per environment; a `Results` without them (made
    by a caller of the one-sweep form, before issue 23) has one, from `trials`, `corr`, `costs` (in epochs),
    `sweep_error`, `space` and `sweep_cfg` (`sweeps_of`)."""

    settings: Settings
    metrics: dict[str, dict[str, float]]  # result name (`analyses`: `<arm>/s<seed>`) -> the run's metrics then
    figures: dict[str, str]  # figure key -> path relative to the report
    trials: pd.DataFrame  # one-sweep form: the sweep's trials.csv
    corr: pd.DataFrame  # one-sweep form: the sweep's correlations.csv
    costs: dict[str, float] = field(default_factory=dict)  # one-sweep form: `epoch_costs` of the sweep's trials
    timing: dict[str, float] = field(default_factory=dict)  # seconds per step of this report
    seconds: float = 0.0  # the whole report
    machine: str = ""  # `describe_machine()` where the experiments ran
    effects: dict[str, list[Effect]] | None = None  # None: `section_effects(metrics)`
    sweep_error: str = ""  # one-sweep form: why the sweep gave no tables
    space: dict = field(default_factory=dict)  # one-sweep form: the sweep's search space
    sweep_cfg: SweepConfig | None = None  # one-sweep form; None: `sweep_config(settings)`
    notes: tuple[str, ...] = ()  # remarks a re-render states (stored in settings.json with the tables)
    sweeps: tuple[SweepResult, ...] = ()  # one per environment, in the settings' order
    legacy_tables: bool = False  # read from tables stored before issue 23 (one sweep, LEGACY_TABLES' names)


def sweeps_of(r: Results) -> tuple[SweepResult, ...]:
    """The results' sweeps, one per environment: `r.sweeps`, else the one sweep of the one-sweep form (its costs
    turned from epochs into training runs with the trials' mean `epochs_trained`: `runs_from_epochs`)."""
    if r.sweeps:
        return r.sweeps
    cfg = r.sweep_cfg if r.sweep_cfg is not None else sweep_config(r.settings)
    epochs = r.trials["epochs_trained"].astype(float).mean() if "epochs_trained" in r.trials else float("nan")
    costs = runs_from_epochs(r.costs, epochs, cfg.seeds)
    figures = {k: v for k, v in r.figures.items() if k in ("sweep_scatter", "sweep_bars")}
    env = r.settings.environments[0]
    return (SweepResult(env, r.trials, r.corr, costs, r.space, cfg, r.sweep_error, figures),)


def sweep_config_of(r: Results) -> SweepConfig:
    """The first environment's resolved sweep config: the stored one, else that of the settings."""
    return sweeps_of(r)[0].cfg or sweep_config(r.settings)


def effects_of(r: Results) -> dict[str, list[Effect]]:
    """The results' effects by section: the stored ones, else those of its metrics."""
    return r.effects if r.effects is not None else section_effects(r.metrics)
