"""The report's intervals stay inside their quantities' ranges (issue 22): the quick report's two intervals that
left them (final accuracy 0.995 [0.931, 1.059] and tc_excess_train 0.625 [-0.963, 2.213], 2 seeds), rendered
again; and a re-render of a table stored before keeps the plain-t wording its intervals were made with."""

from pathlib import Path

import pandas as pd

from tc.report import experiments, files, render, results, sections, verdicts
from tc.stats import replicates as R
from tests.test_report import _metrics, _stored_report


def _quick_results():
    s = experiments.settings(True, 6, Path("."))
    metrics = _metrics(s)
    for seed, (acc, excess) in enumerate(((0.99, 0.5), (1.0, 0.75))):  # the two seeds
        metrics[f"base/s{seed}"] |= {"acc_test": acc, "tc_excess_train": excess}
    figures = {**{k: f"report/{v}" for k, v in experiments.BASE_FIGURES.items()}, "forest": "report/effects.png"}
    return results.Results(s, metrics, figures, pd.DataFrame(), pd.DataFrame())


def test_the_quick_reports_intervals_stay_in_their_ranges():
    r = _quick_results()
    text = "\n".join(sections.consistency_section(r))
    row = next(line for line in text.splitlines() if line.startswith("| test |"))
    assert row.split(" | ")[1] == "0.995 [0.931, 1.000]"  # was 0.995 [0.931, 1.059]
    # section 1's claims are now on tc_gain; the ratio's claim (earlier reports', CONSISTENCY_V1) keeps its range
    excess = verdicts.effect_of(experiments.CONSISTENCY_V1[2], r.metrics)
    assert excess.diff == 0.625 and excess.high < 1 and excess.method == R.TRANSFORMED  # was [-0.963, 2.213]
    assert excess.verdict == R.INCONCLUSIVE
    assert "stays inside the quantity's range" in "\n".join(sections.how_to_read(r.settings))


def test_a_rerender_of_a_table_stored_before_keeps_the_plain_t_wording(tmp_path):
    _stored_report(tmp_path)
    assert "stays inside the quantity's range" in (tmp_path / "REPORT.md").read_text()
    table = pd.read_csv(tmp_path / "report" / "effects.csv")
    methods = set(table["interval"].fillna(""))  # "": a claim with fewer than 2 seeds has no interval
    assert R.TRANSFORMED in methods and methods <= {R.TRANSFORMED, R.CLIPPED, R.PLAIN, ""}
    table.drop(columns="interval").to_csv(tmp_path / "report" / "effects.csv", index=False)  # an older table
    files.write_rerendered(tmp_path, "2001-02-03")
    text = (tmp_path / "REPORT.md").read_text()
    assert "stays inside the quantity's range" not in text
    assert "\n".join(sections.how_to_read(files.from_tables(tmp_path / "report").settings, False)) in text
    assert render.RERENDER_NOTE in text
