"""tc.analysis.plots builds `Figure()` objects: importing it leaves matplotlib's global state alone, and the figures
hold the tables' values."""

import os
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tc.analysis import plots
from tc.analysis.files import save_figures
from tests.conftest import ROOT


def test_importing_tc_plots_keeps_the_users_backend():
    """A fresh interpreter (a module imported once cannot be imported again to watch it): the backend the user
    chose before importing tc, here through MPLBACKEND, is still the backend afterwards, and no module that
    draws figures imports pyplot (whose import alone touches matplotlib's global state)."""
    code = (
        "import sys, matplotlib; before = matplotlib.get_backend(); "
        "import tc.analysis.plots, tc.analysis.run, tc.report.files, tc.sweep.study; "
        "print(before, matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    backend = "svg"  # not Agg, which tc used to force
    env = {**os.environ, "MPLBACKEND": backend, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, pyplot = out.stdout.split()
    assert before == after == backend and pyplot == "False"


def _matrices() -> pd.DataFrame:
    rows = []
    for cut in (1, 3):
        for split in ("train", "test"):
            for t1 in (0, 5, 9):
                for t2 in (5, 9):
                    rows.append({"cut": cut, "split": split, "t1": t1, "t2": t2, "rc": (cut + t1 + 2 * t2) / 40})
    return pd.DataFrame(rows)


def test_figures_are_not_registered_with_pyplot_and_hold_the_tables_values(tmp_path):
    import matplotlib.pyplot as plt  # only to watch pyplot's figure manager

    open_before = plt.get_fignums()
    matrices = _matrices()
    heat = plots.consistency_heatmaps(matrices)
    lags = pd.DataFrame({"split": ["test"] * 4, "cut": [1, 1, 3, 3], "lag": [0, 1, 0, 1], "rc": [1.0, 0.5, 1.0, 0.8]})
    lag = plots.lag_curves(lags)
    assert isinstance(heat, Figure) and isinstance(lag, Figure)
    assert plt.get_fignums() == open_before  # pyplot knows none of them: nothing to close, nothing leaks
    # the heatmap of (cut 3, test) is the rc table pivoted t1 x t2 (oracle: pandas)
    (ax,) = [a for a in heat.axes if a.get_title() == "test, cut 3"]
    want = matrices.query("cut == 3 and split == 'test'").pivot(index="t1", columns="t2", values="rc").to_numpy()
    assert np.array_equal(ax.images[0].get_array(), want)
    assert len(heat.axes) == 2 * 2 + 1  # cuts x splits, and the colour bar
    lines = {
        line.get_label(): line.get_ydata().tolist() for line in lag.axes[0].get_lines() if "cut" in line.get_label()
    }
    assert lines == {"cut 1": [1.0, 0.5], "cut 3": [1.0, 0.8]}
    save_figures({"heat.png": heat, "lag.png": lag}, tmp_path)
    image = mpimg.imread(tmp_path / "lag.png")
    assert image.shape[:2] == (round(3.5 * 110), 4 * 110)  # figsize (4, 3.5) inches at dpi 110
    assert image[..., :3].std() > 0  # something was drawn
