"""Figures never hide values (issue 22): every colour scale covers its quantity or marks what it clips (extension
arrow, the clipped cells' values printed in them, a note with their count and largest value), every axis covers
its data, NaN is counted where it is left out, and legends sit outside the panels. Oracles: the tables themselves
(pandas), and the rendered geometry of the saved figure."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from tc.analysis import plots


def _matrices(rng=None) -> pd.DataFrame:
    """A full matrix table shaped like a quick-start run's: rc near 1 off the first column, the initialisation's
    deep part (t2 = 0, at chance) giving rc up to ~8, agreement in [0, 1]."""
    rng = rng or np.random.default_rng(0)
    steps = [0, 100, 150, 200]
    rows = []
    for cut in (1, 4):
        for split in ("train", "test"):
            for t1 in steps:
                for t2 in steps:
                    acc_own = 0.1 if t2 == 0 else 0.8
                    acc = (
                        0.1 if t1 == 0 else (0.6 + 0.2 * rng.random() if t2 == 0 else 0.8 * (0.9 + 0.1 * rng.random()))
                    )
                    agree = 1.0 if t1 == t2 else float(rng.random())
                    rows.append((cut, split, t1, t2, acc, agree, 1.0, acc / acc_own if t1 != t2 else 1.0))
    return pd.DataFrame(rows, columns=["cut", "split", "t1", "t2", "acc", "agree", "loss", "rc"])


def _block_axes(fig, k):
    """The heat panels (not the colour bar) of block k of a heatmap figure."""
    return [a for a in fig.subfigs[k].axes if a.get_title()]


def test_heatmaps_show_agreement_beside_rc_and_mark_every_clipped_cell():
    m = _matrices()
    fig = plots.consistency_heatmaps(m)
    assert len(fig.subfigs) == 2  # agreement (bounded) first, then rc (unbounded)
    agree_axes, rc_axes = _block_axes(fig, 0), _block_axes(fig, 1)
    assert len(agree_axes) == len(rc_axes) == 2 * 2
    for ax in agree_axes:  # agreement's scale is its whole range [0, 1]: nothing to clip
        image = ax.images[0]
        assert (image.norm.vmin, image.norm.vmax) == (0.0, 1.0) and not ax.texts
    over = m[m["rc"] > plots.RC_CAP]
    assert len(over) > 0  # the oracle: the table's own cells above the cap
    printed = 0
    for ax in rc_axes:
        split, cut = ax.get_title().split(", cut ")
        want = m[(m["split"] == split) & (m["cut"] == int(cut))].pivot(index="t1", columns="t2", values="rc")
        image = ax.images[0]
        assert np.array_equal(image.get_array().data, want.to_numpy())  # the values drawn are the table's, unclipped
        assert image.norm.vmax == plots.RC_CAP and image.norm.vmin == 0.0
        want_texts = sorted(f"{v:.3g}" for v in want.to_numpy()[want.to_numpy() > plots.RC_CAP])
        assert sorted(t.get_text() for t in ax.texts) == want_texts  # every clipped cell has its value printed
        printed += len(ax.texts)
    assert printed == len(over)
    colourbars = [a for a in fig.subfigs[1].axes if not a.get_title()]
    assert len(colourbars) == 1 and colourbars[0]._colorbar.extend == "max"  # the extension arrow
    note = fig.subfigs[1]._suptitle.get_text()
    assert f"{len(over)} of {len(m)} cells above {plots.RC_CAP:g}" in note
    assert f"max {m['rc'].max():.3g}" in note


def test_heatmap_without_clipping_has_no_arrow_and_nan_cells_are_counted():
    m = _matrices()
    m["rc"] = m["rc"].clip(upper=1.5)
    m.loc[3, "rc"] = np.nan
    fig = plots.consistency_heatmaps(m)
    colourbar = next(a for a in fig.subfigs[1].axes if not a.get_title())
    assert colourbar._colorbar.extend == "neither"
    note = fig.subfigs[1]._suptitle.get_text()
    assert "above" not in note and "1 NaN cells (grey)" in note


def test_heatmap_of_an_unbounded_column_covers_its_data():
    m = _matrices()
    m["loss"] = np.linspace(0.1, 20.0, len(m))
    fig = plots.consistency_heatmaps(m, value="loss")
    norms = {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in fig.axes if ax.images}
    assert norms == {(0.1, 20.0)}


def test_lag_curves_cover_every_value_and_count_nan():
    lags = pd.DataFrame(
        {
            "split": ["test"] * 6,
            "cut": [1, 1, 1, 3, 3, 3],
            "lag": [0, 1, 2] * 2,
            "rc": [1.0, 1.6, 1.2, 1.0, np.nan, 0.8],
        }
    )
    fig = plots.lag_curves(lags)
    lo, hi = fig.axes[0].get_ylim()
    assert lo <= 0.0 and hi >= 1.6  # the old fixed ylim (0, 1.1) cut r = 1.6 off
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "cut 3 (1 NaN)" in labels and "cut 1" in labels


def test_kde_draws_the_whole_density_and_marks_the_range_of_c():
    rng = np.random.default_rng(1)
    per_sample = pd.DataFrame(
        {"cut": 1, "split": np.repeat(["train", "test"], 200), "c": np.r_[rng.random(200), rng.random(199), np.nan]}
    )
    values = per_sample["c"].to_numpy()[:200]
    grid, density, bw = plots.kde(values)
    assert grid[0] <= values.min() - 2.99 * bw and grid[-1] >= values.max() + 2.99 * bw  # 3 bandwidths past the data
    assert max(density[0], density[-1]) < 0.05 * density.max()
    fig = plots.per_sample_kde(per_sample)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["train", "test (1 NaN)"]
    assert "bandwidth: train" in fig.axes[0].get_title() and "test" in fig.axes[0].get_title()


def test_spectra_count_the_eigenvalues_a_log_scale_cannot_draw():
    spectra = pd.DataFrame(
        {
            "cut": 1,
            "kind": "grad",
            "index": np.arange(1, 6),
            "eig": [1.0, 0.5, 0.1, 1e-12, 0.0],
            "null_q05": 0.1,
            "null_q95": 0.3,
        }
    )
    fig = plots.spectra_vs_null(spectra)
    assert fig.axes[0].get_title() == "grad, cut 1\n2 eigenvalues ≈ 0 not drawn"
    assert fig.axes[0].get_lines()[0].get_ydata().tolist() == [1.0, 0.5, 0.1]


def test_drift_figure_says_when_drift_was_not_recorded():
    drift = pd.DataFrame(
        {"cut": 1, "split": "test", "t1": [0, 1, 2], "drift": np.nan, "agree_final": [0.1, 0.9, 1.0], "acc_final": 0.5}
    )
    assert plots.drift_vs_consistency(drift).axes[0].get_title().endswith("(drift not recorded)")


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("name", ["lag", "kde", "drift", "spectra", "perturbation"])
def test_legends_cover_no_panel(name):
    rng = np.random.default_rng(2)
    tables = {
        "lag": lambda: plots.lag_curves(
            pd.DataFrame({"split": "test", "cut": [1, 1, 3, 3], "lag": [0, 1, 0, 1], "rc": [1.0, 0.9, 1.0, 0.8]})
        ),
        "kde": lambda: plots.per_sample_kde(pd.DataFrame({"cut": 1, "split": "test", "c": rng.random(50)})),
        "drift": lambda: plots.drift_vs_consistency(
            pd.DataFrame({"cut": 1, "split": "test", "t1": [0, 1], "drift": [1.0, 0.0], "agree_final": [0.1, 1.0]})
        ),
        "spectra": lambda: plots.spectra_vs_null(
            pd.DataFrame(
                {"cut": 1, "kind": "drift", "index": [1, 2], "eig": [1.0, 0.1], "null_q05": 0.2, "null_q95": 0.3}
            )
        ),
        "perturbation": lambda: plots.perturbation_curves(
            pd.DataFrame(
                [(1, 0.0, "clean", 0, 0.8)]
                + [
                    (1, e, k, d, 0.8 - 0.5 * e * rng.random())  # accuracies: in [0, 1]
                    for e in (0.5, 1.0)
                    for k in ("top", "random", "bottom")
                    for d in (0, 1, 2)
                ],
                columns=["cut", "eps", "kind", "draw", "acc"],
            )
        ),
    }
    fig = tables[name]()
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    box = fig.legends[0].get_window_extent(renderer)
    assert not any(_overlaps(box, ax.get_window_extent(renderer)) for ax in fig.axes)


def _shaded(ax) -> list[tuple[float, float]]:
    """The x extents (data coordinates) of the grey spans of a KDE panel."""
    return [tuple(sorted((p.get_x(), p.get_x() + p.get_width()))) for p in ax.patches]


def test_kde_shades_only_outside_the_range_of_c_and_counts_its_ends():
    """c(x) = k/|W| is discrete with point masses at 0 and 1, which a density smears: each panel gives the share
    of samples at exactly 1 and 0. The grey 'outside [0, 1]' spans never cover a value inside [0, 1], also when
    the data (here c in {0.75, 1}) leave the axis short of 0."""
    c = np.r_[np.full(300, 1.0), np.full(100, 0.75)]
    fig = plots.per_sample_kde(pd.DataFrame({"cut": 1, "split": "test", "c": c}))
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    assert all(hi <= 0.0 or lo >= 1.0 for lo, hi in _shaded(ax)), _shaded(ax)
    assert any(lo == 1.0 for lo, _ in _shaded(ax))  # the kernel's spill past 1 is shaded
    assert "at 1: test 75%" in ax.get_title() and "at 0: test 0%" in ax.get_title()


def test_spectra_titles_stay_inside_the_figure():
    spectra = pd.DataFrame(
        [(cut, "grad", i, e, 0.1, 0.3) for cut in (1, 4, 7, 10) for i, e in enumerate([1.0, 0.5] + [0.0] * 97, 1)],
        columns=["cut", "kind", "index", "eig", "null_q05", "null_q95"],
    )
    fig = plots.spectra_vs_null(spectra)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    assert all(t.x0 >= 0 and t.x1 <= fig.bbox.x1 for t in titles)
    assert not any(_overlaps(a, b) for i, a in enumerate(titles) for b in titles[i + 1 :])


def test_forest_keeps_its_scale_when_one_interval_is_far_wider_and_prints_the_clipped_end():
    """The quick report at 2 seeds: tc_excess_train's interval [-27.9, 0.996] (open below on its log scale) beside
    differences of ~0.01. The axis stays on the other claims' scale; the clipped end is drawn to the edge with its
    value printed; every other interval is drawn whole. Without such an end, nothing is clipped."""
    effects = pd.DataFrame(
        {
            "section": "s",
            "label": ["wide", "a", "b", "none"],
            "diff": [0.625, 0.02, -0.01, np.nan],
            "low": [-27.902, 0.01, -0.03, np.nan],
            "high": [0.996, 0.03, 0.005, np.nan],
            "verdict": ["inconclusive", "reproduces", "inconclusive", "inconclusive"],
        }
    )
    for table, clipped in ((effects, True), (effects.iloc[1:], False)):
        ax = plots.effects_forest(table).axes[0]
        lo, hi = ax.get_xlim()
        segments = {
            line.get_ydata()[0]: [float(x) for x in line.get_xdata()] for line in ax.lines if len(line.get_xdata()) == 2
        }
        assert segments[2] == [0.01, 0.03] and segments[1] == [-0.03, 0.005]
        assert -0.1 < lo < -0.03 and 0.03 < hi < (1.1 if clipped else 0.04)
        if clipped:
            assert segments[3] == [lo, 0.996] and [t.get_text() for t in ax.texts] == ["← -27.9"]
        else:
            assert not ax.texts
