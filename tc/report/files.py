"""The report's files: REPORT.md and its stored tables written (`write`), read back (`from_tables`, also the
one-sweep tables stored before issue 23) and re-rendered in place (`write_rerendered`); each environment's sweep
tables and figures taken from its artifacts. The only module of tc.report that reads or writes files."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tc.analysis import plots
from tc.analysis.files import save_figures
from tc.config import SweepConfig
from tc.report.costs import costs_table, runs_from_epochs
from tc.report.experiments import SWEEP_FIGURES, legacy_settings
from tc.report.render import render, rerender
from tc.report.results import CROSS_TABLES, SETTINGS_FILE, Results, SweepResult, effects_of, sweep_config_of, sweeps_of
from tc.report.robustness import CrossTables, cross_tables, primary_verdict
from tc.report.verdicts import all_effects, confirmatory_verdict, effects_from_table, verdict_changes
from tc.stats.multiplicity import CONFIRMATORY_MEASURE
from tc.stats.rankcorr import MIN_TRIALS, CorrelationOptions, correlation_table
from tc.sweep.summary import measure_columns, split_converged


def sweep_tables(art: Path, fig_dir: Path | None = None, env: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, correlations) from a sweep run's downloaded artifacts `art`, whose figures move into
    `fig_dir` (default `art/..`, the report's figure directory) as `sweep_figure_names(env)` (sweep_scatter_<env>.png
    and sweep_bars_<env>.png; without `env`, sweep_scatter.png and sweep_bars.png); `art` is removed. A sweep with
    fewer than MIN_TRIALS converged trials has no correlations and no figures: the tables are then (trials, empty)
    and nothing moves; a sweep without trials.csv gives two empty tables."""
    fig_dir = art.parent if fig_dir is None else fig_dir
    trials, corr = _read_table(art / "trials.csv"), _read_table(art / "correlations.csv")
    names = sweep_figure_names(env)
    for src, key in (("scatter.png", "sweep_scatter"), ("correlation_bars.png", "sweep_bars")):
        if (art / src).exists():
            shutil.move(art / src, fig_dir / names[key])
    shutil.rmtree(art, ignore_errors=True)
    return trials, corr


def sweep_figure_names(env: str = "") -> dict[str, str]:
    """{key: file name} of an environment's sweep figures (SWEEP_FIGURES with `_<env>` before the suffix; without
    `env`, the one-sweep names of reports stored before issue 23)."""
    return {k: name.replace(".png", f"_{env}.png") if env else name for k, name in SWEEP_FIGURES.items()}


def report_dir(out: Path) -> Path:
    """`out`/report, where the figures and stored tables go, created when absent."""
    figs = out / "report"
    figs.mkdir(parents=True, exist_ok=True)
    return figs


def clear_sweep_figures(fig_dir: Path) -> None:
    """Remove an earlier report's sweep figures from `fig_dir` (every environment's): a report links only what its
    own sweeps made."""
    for name in SWEEP_FIGURES.values():
        for path in fig_dir.glob(name.replace(".png", "*.png")):
            path.unlink(missing_ok=True)


def sweep_figures(fig_dir: Path, env: str = "") -> dict[str, str]:
    """{key: path relative to the report} of an environment's sweep figures present in `fig_dir`."""
    return {k: f"report/{name}" for k, name in sweep_figure_names(env).items() if (fig_dir / name).is_file()}


def table_name(kind: str, env: str, legacy: bool = False) -> str:
    """The stored file of an environment's table `kind` (trials, correlations, costs): `<kind>_<env>.csv`; in tables
    stored before issue 23 (`legacy`), `<kind>.csv`."""
    return f"{kind}.csv" if legacy else f"{kind}_{env}.csv"


def write(r: Results, out: Path) -> Path:
    """REPORT.md into `out`, and into `out/report/` the forest figure and the stored tables (STORED_TABLES):
    effects.csv; per environment trials_<env>.csv, correlations_<env>.csv and costs_<env>.csv (in training runs);
    across them robust.csv, per_cut.csv and calibration.csv (`tc.report.robustness`); and settings.json
    (`settings_record`): the path of REPORT.md."""
    figs = report_dir(out)
    effects = all_effects(r.metrics, effects_of(r))
    save_figures({"effects.png": plots.effects_forest(effects)}, figs)
    (out / "REPORT.md").write_text(render(replace(r, figures={**r.figures, "forest": "report/effects.png"})))
    effects.to_csv(figs / "effects.csv", index=False)
    sweeps = sweeps_of(r)
    for sw in sweeps:
        name = sw.env.name
        sw.trials.to_csv(figs / table_name("trials", name, r.legacy_tables), index=False)
        sw.corr.to_csv(figs / table_name("correlations", name, r.legacy_tables), index=False)
        costs_table(sw.costs, "runs").to_csv(figs / table_name("costs", name), index=False)
    write_cross_tables(figs, cross_tables(sweeps))
    write_settings(figs, r)
    return out / "REPORT.md"


def write_cross_tables(figs: Path, cross: CrossTables) -> None:
    """robust.csv, per_cut.csv and calibration.csv into `figs`."""
    for name, table in zip(CROSS_TABLES, (cross.robust, cross.per_cut, cross.calibration), strict=True):
        table.to_csv(figs / name, index=False)


def settings_record(r: Results) -> dict:
    """What settings.json holds: the report's `Settings` (its environments included), each environment's resolved
    sweep config, fitted space and error (empty when it ran), the run's duration and machine, and `notes` for a
    re-render to state."""
    return {
        "settings": asdict(r.settings),
        "environments": {
            sw.env.name: {
                "sweep_config": asdict(sw.cfg or sweep_config_of(r)),
                "space": sw.space,
                "sweep_error": sw.error,
            }
            for sw in sweeps_of(r)
        },
        "seconds": r.seconds,
        "machine": r.machine,
        "notes": list(r.notes),
    }


def write_settings(figs: Path, r: Results) -> Path:
    """`settings_record(r)` as `figs`/settings.json."""
    path = figs / SETTINGS_FILE
    path.write_text(json.dumps(settings_record(r), indent=1) + "\n")
    return path


def _recomputed(trials: pd.DataFrame, space: dict, cfg: SweepConfig) -> pd.DataFrame:
    """The sweep's correlations of its converged trials, by its own `correlation_table` with its stored options."""
    conv = split_converged(trials)[0] if len(trials) else trials
    if len(conv) < MIN_TRIALS:
        return pd.DataFrame()
    options = CorrelationOptions(draws=cfg.bootstrap, seed=cfg.seed)
    return correlation_table(conv, measure_columns(list(conv.columns)), space, options)


def from_tables(figs: Path) -> Results:
    """The parts of `Results` that the stored tables in `figs` hold: the settings, each environment's sweep config,
    space and error, the run's duration and machine and the notes (settings.json: `settings_record`; ValueError
    without it), the effects (effects.csv, verdicts read again off their intervals: `effects_from_table`), each
    environment's trials, its correlations recomputed from those trials by the sweep's own
    `tc.stats.rankcorr.correlation_table` (the stored space, bootstrap draws and seed: the same numbers the sweep
    computed, with the current multiplicity rules), and its costs (empty when absent). Tables stored before issue 23
    (one sweep: trials.csv, correlations.csv, costs.csv in epochs, settings.json with `sweep_extra`) are read as one
    environment (`legacy_tables`; costs turned into training runs: `runs_from_epochs`). The per-seed metrics are not
    stored: `metrics` is empty, so only `tc.report.render.rerender` can use these results."""
    path = figs / SETTINGS_FILE
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: a re-render needs the settings the report was produced with, which "
            "`tc.report.files.write` stores there; re-run the report, or write the file once with "
            "`tc.report.files.write_settings` from the settings it ran with"
        )
    stored = json.loads(path.read_text())
    s = legacy_settings(stored["settings"])
    legacy = "environments" not in stored
    per_env = {s.environments[0].name: stored} if legacy else stored["environments"]
    sweeps = []
    # the environments whose sweep was stored: every one of a produced report; a report written in the one-sweep
    # form (`Results` without `sweeps`, e.g. by a caller from before issue 23) stores its settings' first only
    for env in (e for e in s.environments if e.name in per_env):
        rec = per_env[env.name]
        # a report stored before test_every existed: its sweep evaluated the test set at every epoch (and a stored
        # pruner=median is refused at the default 0); before `analysis` existed its trials computed every measure
        # (not today's default, core), and before the anisotropy default became false it was true
        cfg = SweepConfig(**{"test_every": 1, "analysis": "measures", "anisotropy": True, **rec["sweep_config"]})
        trials = _read_table(figs / table_name("trials", env.name, legacy))
        table = _read_table(figs / table_name("costs", env.name, legacy))
        if legacy:
            costs = dict(zip(table["step"], table["epochs"].astype(float), strict=True)) if len(table) else {}
            epochs = trials["epochs_trained"].astype(float).mean() if "epochs_trained" in trials else math.nan
            costs = runs_from_epochs(costs, epochs, cfg.seeds)
        else:
            costs = dict(zip(table["step"], table["runs"].astype(float), strict=True)) if len(table) else {}
        corr = _recomputed(trials, rec["space"], cfg)
        figures = sweep_figures(figs, "" if legacy else env.name)
        sweeps.append(SweepResult(env, trials, corr, costs, rec["space"], cfg, rec["sweep_error"], figures))
    return Results(
        s,
        {},
        {"forest": "report/effects.png"},
        pd.DataFrame(),
        pd.DataFrame(),
        seconds=float(stored["seconds"]),
        machine=stored["machine"],
        effects=effects_from_table(pd.read_csv(figs / "effects.csv")),
        notes=tuple(stored["notes"]),
        sweeps=tuple(sweeps),
        legacy_tables=legacy,
    )


def _read_table(path: Path) -> pd.DataFrame:
    """A stored table; empty when the file is absent or holds no columns (what `write` stores for an empty
    table, e.g. the trials of a sweep that failed)."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


EXEMPT_COLUMNS = ("role", "kendall_p_holm", "same_ranks_as")  # what the multiplicity rules, not the data, set


def correlation_differences(stored: pd.DataFrame, recomputed: pd.DataFrame) -> list[str]:
    """Where the recomputed correlations differ from the stored ones, in words: rows (measure, target) on one
    side only, columns on one side only, and values that differ (floats beyond 1e-9 relative; NaN equals NaN),
    on every column but EXEMPT_COLUMNS. Empty: the same numbers."""
    if stored.empty or recomputed.empty:
        return [] if stored.empty and recomputed.empty else [f"stored {len(stored)} rows, recomputed {len(recomputed)}"]
    key = ["measure", "target"]
    a, b = (t.drop(columns=[c for c in EXEMPT_COLUMNS if c in t]).set_index(key) for t in (stored, recomputed))
    out = [
        f"row {k} only {side}"
        for side, x, y in (("stored", a, b), ("recomputed", b, a))
        for k in x.index.difference(y.index)
    ]
    out += [
        f"column {c} only {side}"
        for side, x, y in (("stored", a, b), ("recomputed", b, a))
        for c in x.columns.difference(y.columns)
    ]
    rows, cols = a.index.intersection(b.index), a.columns.intersection(b.columns)
    for c in cols:
        x, y = a.loc[rows, c], b.loc[rows, c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xf, yf = x.to_numpy(float), y.to_numpy(float)
            same = np.isclose(xf, yf, rtol=1e-9, atol=0.0, equal_nan=True)
        else:
            same = (x.fillna("").astype(str) == y.fillna("").astype(str)).to_numpy()
        out += [f"{k} {c}: stored {x[k]!r}, recomputed {y[k]!r}" for k, ok in zip(rows, same, strict=True) if not ok]
    return out


def _stored_primary_verdict(figs: Path, old_corrs: dict[str, pd.DataFrame]) -> str:
    """The primary verdict the stored report stated: robust.csv's primary row (`primary_verdict`); tables stored
    before issue 23 have none, and their verdict was the one sweep's confirmatory row (`confirmatory_verdict`)."""
    robust = _read_table(figs / CROSS_TABLES[0])
    if len(robust) and "p_iut" in robust:
        return primary_verdict(robust)
    return confirmatory_verdict(next(iter(old_corrs.values()), pd.DataFrame()))


def write_rerendered(out: Path, on: str) -> list[str]:
    """Re-render `out`/REPORT.md in place from the tables in `out`/report (`from_tables`, `rerender`), and
    rewrite effects.csv (verdicts), effects.png, each environment's correlations and the cross-environment tables
    (robust.csv, per_cut.csv, calibration.csv) to match. The recomputed correlations must equal the stored ones on
    every column but EXEMPT_COLUMNS (ValueError naming the differences, and nothing is written). Returns every
    verdict that changed: the claims' (`verdict_changes`) and the primary one (`primary_verdict`)."""
    figs = out / "report"
    old_effects = pd.read_csv(figs / "effects.csv")
    r = from_tables(figs)
    old_corrs = {
        sw.env.name: _read_table(figs / table_name("correlations", sw.env.name, r.legacy_tables)) for sw in r.sweeps
    }
    for sw in r.sweeps:
        differences = correlation_differences(old_corrs[sw.env.name], sw.corr)
        if differences:
            name = table_name("correlations", sw.env.name, r.legacy_tables)
            raise ValueError(
                f"the correlations recomputed from {figs / table_name('trials', sw.env.name, r.legacy_tables)} differ "
                f"from {figs / name} ({len(differences)}: {'; '.join(differences[:5])}): the stored settings or the "
                "sweep's code do not reproduce the published numbers; nothing was re-rendered"
            )
    effects = all_effects({}, r.effects)
    changes = verdict_changes(old_effects, effects)
    cross = cross_tables(r.sweeps)
    old_v, new_v = _stored_primary_verdict(figs, old_corrs), primary_verdict(cross.robust)
    sweep_label = f"the primary test, `{CONFIRMATORY_MEASURE}` with test accuracy in every environment (section 6)"
    if old_v != new_v:
        changes.append(f"{sweep_label}: {old_v} → {new_v}")
    unchanged = [f"{sweep_label}: {new_v}"] if old_v == new_v else []
    (out / "REPORT.md").write_text(rerender((out / "REPORT.md").read_text(), r, on, changes, unchanged))
    save_figures({"effects.png": plots.effects_forest(effects)}, figs)
    effects.to_csv(figs / "effects.csv", index=False)
    for sw in r.sweeps:
        if len(sw.corr):
            sw.corr.to_csv(figs / table_name("correlations", sw.env.name, r.legacy_tables), index=False)
    write_cross_tables(figs, cross)
    return changes
