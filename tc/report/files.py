"""The report's files: REPORT.md and its stored tables written (`write`), read back (`from_tables`) and
re-rendered in place (`write_rerendered`); the sweep's tables and figures taken from its artifacts. The only
module of tc.report that reads or writes files."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tc.analysis import plots
from tc.analysis.files import save_figures
from tc.config import SweepConfig
from tc.report.costs import costs_table
from tc.report.experiments import SWEEP_FIGURES, Settings
from tc.report.render import render, rerender
from tc.report.results import SETTINGS_FILE, Results, effects_of, sweep_config_of
from tc.report.verdicts import all_effects, confirmatory_verdict, effects_from_table, verdict_changes
from tc.stats.multiplicity import CONFIRMATORY_MEASURE
from tc.stats.rankcorr import MIN_TRIALS, CorrelationOptions, correlation_table
from tc.sweep.summary import measure_columns, split_converged


def sweep_tables(art: Path, fig_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, correlations) from a sweep run's downloaded artifacts `art`, whose figures move into
    `fig_dir` (default `art/..`, the report's figure directory) as sweep_scatter.png and sweep_bars.png; `art`
    is removed. A sweep with fewer than MIN_TRIALS converged trials has no correlations and no figures: the
    tables are then (trials, empty) and nothing moves; a sweep without trials.csv gives two empty tables."""
    fig_dir = art.parent if fig_dir is None else fig_dir
    trials, corr = _read_table(art / "trials.csv"), _read_table(art / "correlations.csv")
    for src, dst in (("scatter.png", "sweep_scatter.png"), ("correlation_bars.png", "sweep_bars.png")):
        if (art / src).exists():
            shutil.move(art / src, fig_dir / dst)
    shutil.rmtree(art, ignore_errors=True)
    return trials, corr


def report_dir(out: Path) -> Path:
    """`out`/report, where the figures and stored tables go, created when absent."""
    figs = out / "report"
    figs.mkdir(parents=True, exist_ok=True)
    return figs


def clear_sweep_figures(fig_dir: Path) -> None:
    """Remove an earlier report's sweep figures from `fig_dir`: a report links only what its own sweep made."""
    for name in SWEEP_FIGURES.values():
        (fig_dir / name).unlink(missing_ok=True)


def sweep_figures(fig_dir: Path) -> dict[str, str]:
    """{key: path relative to the report} of the sweep figures present in `fig_dir`."""
    return {k: f"report/{name}" for k, name in SWEEP_FIGURES.items() if (fig_dir / name).is_file()}


def write(r: Results, out: Path) -> Path:
    """REPORT.md into `out`, and into `out/report/` the forest figure and the stored tables (STORED_TABLES):
    effects.csv, trials.csv, correlations.csv, costs.csv and settings.json (`settings_record`): the path of
    REPORT.md."""
    figs = report_dir(out)
    effects = all_effects(r.metrics, effects_of(r))
    save_figures({"effects.png": plots.effects_forest(effects)}, figs)
    (out / "REPORT.md").write_text(render(replace(r, figures={**r.figures, "forest": "report/effects.png"})))
    for name, table in (("correlations", r.corr), ("trials", r.trials), ("effects", effects)):
        table.to_csv(figs / f"{name}.csv", index=False)
    costs_table(r.costs).to_csv(figs / "costs.csv", index=False)
    write_settings(figs, r)
    return out / "REPORT.md"


def settings_record(r: Results) -> dict:
    """What settings.json holds: the report's `Settings`, the sweep's resolved config and fitted space, the
    sweep's error (empty when it ran), the run's duration and machine, and `notes` for a re-render to state."""
    return {
        "settings": asdict(r.settings),
        "sweep_config": asdict(sweep_config_of(r)),
        "space": r.space,
        "sweep_error": r.sweep_error,
        "seconds": r.seconds,
        "machine": r.machine,
        "notes": list(r.notes),
    }


def write_settings(figs: Path, r: Results) -> Path:
    """`settings_record(r)` as `figs`/settings.json."""
    path = figs / SETTINGS_FILE
    path.write_text(json.dumps(settings_record(r), indent=1) + "\n")
    return path


def from_tables(figs: Path) -> Results:
    """The parts of `Results` that the stored tables in `figs` hold: the settings, the sweep's config and space,
    its error, the run's duration and machine and the notes (settings.json: `settings_record`; ValueError
    without it), the effects (effects.csv, verdicts read again off their intervals: `effects_from_table`), the
    sweep's trials (trials.csv), its correlations recomputed from those trials by the sweep's own
    `tc.stats.rankcorr.correlation_table` (the stored space, bootstrap draws and seed: the same numbers the sweep
    computed, with the current multiplicity rules), and the costs (costs.csv; empty when absent). The per-seed
    metrics are not stored: `metrics` is empty, so only `tc.report.render.rerender` can use these results."""
    path = figs / SETTINGS_FILE
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: a re-render needs the settings the report was produced with, which "
            "`tc.report.files.write` stores there; re-run the report, or write the file once with "
            "`tc.report.files.write_settings` from the settings it ran with"
        )
    stored = json.loads(path.read_text())
    s = Settings(**stored["settings"])
    # a report stored before test_every existed: its sweep evaluated the test set at every epoch (and a stored
    # pruner=median is refused at the default 0)
    cfg = SweepConfig(**{"test_every": 1, **stored["sweep_config"]})
    space = stored["space"]
    effects = effects_from_table(pd.read_csv(figs / "effects.csv"))
    trials = _read_table(figs / "trials.csv")
    corr = pd.DataFrame()
    conv = split_converged(trials)[0] if len(trials) else trials
    if len(conv) >= MIN_TRIALS:
        options = CorrelationOptions(draws=cfg.bootstrap, seed=cfg.seed)
        corr = correlation_table(conv, measure_columns(list(conv.columns)), space, options)
    table = _read_table(figs / "costs.csv")
    costs = dict(zip(table["step"], table["epochs"].astype(float), strict=True)) if len(table) else {}
    figures = {"forest": "report/effects.png", **sweep_figures(figs)}
    return Results(
        s,
        {},
        figures,
        trials,
        corr,
        costs,
        seconds=float(stored["seconds"]),
        machine=stored["machine"],
        effects=effects,
        sweep_error=stored["sweep_error"],
        space=space,
        sweep_cfg=cfg,
        notes=tuple(stored["notes"]),
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


def write_rerendered(out: Path, on: str) -> list[str]:
    """Re-render `out`/REPORT.md in place from the tables in `out`/report (`from_tables`, `rerender`), and
    rewrite effects.csv (verdicts), effects.png and correlations.csv to match. The recomputed correlations
    must equal the stored ones on every column but EXEMPT_COLUMNS (ValueError naming the differences, and
    nothing is written). Returns every verdict that changed: the claims' (`verdict_changes`) and the sweep's
    confirmatory one (`confirmatory_verdict`)."""
    figs = out / "report"
    old_effects = pd.read_csv(figs / "effects.csv")
    old_corr = _read_table(figs / "correlations.csv")
    r = from_tables(figs)
    differences = correlation_differences(old_corr, r.corr)
    if differences:
        raise ValueError(
            f"the correlations recomputed from {figs / 'trials.csv'} differ from {figs / 'correlations.csv'} "
            f"({len(differences)}: {'; '.join(differences[:5])}): the stored settings or the sweep's code do not "
            "reproduce the published numbers; nothing was re-rendered"
        )
    effects = all_effects({}, r.effects)
    changes = verdict_changes(old_effects, effects)
    old_v, new_v = confirmatory_verdict(old_corr), confirmatory_verdict(r.corr)
    sweep_label = f"the sweep's confirmatory `{CONFIRMATORY_MEASURE}` with test accuracy (section 6)"
    if old_v != new_v:
        changes.append(f"{sweep_label}: {old_v} → {new_v}")
    unchanged = [f"{sweep_label}: {new_v}"] if old_v == new_v else []
    (out / "REPORT.md").write_text(rerender((out / "REPORT.md").read_text(), r, on, changes, unchanged))
    save_figures({"effects.png": plots.effects_forest(effects)}, figs)
    effects.to_csv(figs / "effects.csv", index=False)
    if len(r.corr):
        r.corr.to_csv(figs / "correlations.csv", index=False)
    return changes
