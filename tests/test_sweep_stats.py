import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tc import sweep

SPACE = {
    "lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
    "width": {"type": "categorical", "choices": [8, 16, 32]},
}


def _grid_trials(seed=0):
    rng = np.random.default_rng(seed)
    rows = [{"lr": lr, "width": w} for lr, w in itertools.product([0.01, 0.1, 1.0], [8, 16, 32])]
    df = pd.DataFrame(rows)
    df["test_acc"] = 0.5 + 0.1 * np.log10(df["lr"]) + 0.01 * df["width"] + rng.normal(0, 0.001, len(df))
    df["gen_gap"] = rng.random(len(df))
    return df


def test_pairwise_kendall_matches_brute_force_and_tau_b_without_ties():
    rng = np.random.default_rng(1)
    mu, g = rng.random(12), rng.random(12)
    brute = sum(np.sign(mu[i] - mu[j]) * np.sign(g[i] - g[j]) for i in range(12) for j in range(12) if i != j)
    assert sweep.kendall_pairs(mu, g) == pytest.approx(brute / (12 * 11))
    assert sweep.kendall_pairs(mu, g) == pytest.approx(stats.kendalltau(mu, g).statistic)


def test_granulated_kendall_on_a_grid():
    df = _grid_trials()
    df["perfect"] = df["test_acc"]  # a measure equal to the target: τ = 1 in every group
    df["width_only"] = df["width"]  # tracks one hyperparameter only
    psi, per_h, counts, pairs, entered = sweep.granulated_kendall(df, "perfect", "test_acc", SPACE)
    assert psi == pytest.approx(1.0) and counts == {"lr": 3, "width": 3} and entered == ["lr", "width"]
    assert pairs == {"lr": 9, "width": 9}  # 3 groups of 3 trials: 3 pairs each
    psi, per_h, *_ = sweep.granulated_kendall(df, "width_only", "test_acc", SPACE)
    assert per_h["width"] == pytest.approx(1.0) and per_h["lr"] == 0.0 and psi == pytest.approx(0.5)


def test_granulated_kendall_groups_within_tolerance():
    df = pd.DataFrame({"lr": [0.1, 0.105, 0.5, 0.52], "width": [8, 16, 8, 16], "m": [1, 2, 3, 4], "t": [1, 2, 3, 5]})
    _, per_h, counts, *_ = sweep.granulated_kendall(df, "m", "t", SPACE, tol=0.05)
    assert counts["width"] == 2 and per_h["width"] == 1.0  # lr 0.1 ~ 0.105 and 0.5 ~ 0.52 on a log scale
    assert counts["lr"] == 2 and per_h["lr"] == 1.0


def _jiang_brute_force(df, measure, target, grid):
    """Jiang et al. (2020) eq. (4)-(5) written out on an exact grid: for each h, every combination of the
    other hyperparameters' values is one group; τ over the group's model pairs whose h differs."""
    psi = {}
    for h in grid:
        others = [k for k in grid if k != h]
        taus = []
        for combo in itertools.product(*(grid[k] for k in others)):
            mask = np.ones(len(df), bool)
            for k, v in zip(others, combo, strict=True):
                mask &= (df[k] == v).to_numpy()
            sel = df[mask]
            mu, g, hv = sel[measure].to_numpy(), sel[target].to_numpy(), sel[h].to_numpy()
            s = [
                np.sign(mu[a] - mu[b]) * np.sign(g[a] - g[b])
                for a in range(len(sel))
                for b in range(len(sel))
                if a != b and hv[a] != hv[b]
            ]
            if s:
                taus.append(np.mean(s))
        psi[h] = float(np.mean(taus)) if taus else math.nan
    return float(np.nanmean(list(psi.values()))), psi


def test_granulated_kendall_matches_jiangs_definition_on_a_grid_with_repeated_settings():
    grid = {"lr": [0.01, 0.1, 1.0], "width": [8, 16, 32], "batch_size": [64, 128]}
    space = {
        "lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
        "width": {"type": "categorical", "choices": grid["width"]},
        "batch_size": {"type": "categorical", "choices": grid["batch_size"]},
    }
    rng = np.random.default_rng(4)
    cells = list(itertools.product(*grid.values()))
    # every setting once, and a random third of them repeated (e.g. a second seed)
    rows = cells + [cells[i] for i in rng.choice(len(cells), len(cells) // 3, replace=False)]
    df = pd.DataFrame(rows, columns=list(grid))
    df["t"] = rng.random(len(df))
    df["m"] = df["t"] + rng.normal(0, 0.3, len(df))
    expected_psi, expected = _jiang_brute_force(df, "m", "t", grid)
    got = sweep.granulated_kendall(df, "m", "t", space, tol=0.01)
    assert got.per_h == pytest.approx(expected)
    assert got.psi == pytest.approx(expected_psi) and got.entered == list(grid)
    assert got.groups == {"lr": 6, "width": 6, "batch_size": 9}


def test_granulated_kendall_ignores_pairs_that_repeat_a_setting():
    # four trials, three at one setting: the only evidence about lr is the three pairs across lr values
    df = pd.DataFrame({"lr": [0.1, 0.1, 0.1, 1.0], "m": [3, 1, 0, 2], "t": [0, 1, 2, 3]})
    space = {"lr": SPACE["lr"]}
    got = sweep.granulated_kendall(df, "m", "t", space, min_groups=1, min_hyperparameters=1)
    assert got.psi == pytest.approx(1 / 3) and got.pairs == {"lr": 3}  # the old code gave -1/3 (all 6 pairs)
    assert got.per_h["lr"] == pytest.approx(_jiang_brute_force(df, "m", "t", {"lr": [0.1, 1.0]})[1]["lr"])


def test_granulated_kendall_reports_which_hyperparameters_entered_and_is_nan_when_too_few():
    df = _grid_trials()
    df["m"] = df["test_acc"]
    one_width = df[df["width"] == 8]  # lr varies in one group only; width never varies
    got = sweep.granulated_kendall(one_width, "m", "test_acc", SPACE)
    assert got.groups == {"lr": 1, "width": 0} and got.entered == [] and math.isnan(got.psi)
    got = sweep.granulated_kendall(one_width, "m", "test_acc", SPACE, min_groups=1, min_hyperparameters=1)
    assert got.entered == ["lr"] and got.psi == pytest.approx(1.0)


def test_partial_kendall_with_one_control_is_kendalls_formula():
    rng = np.random.default_rng(2)
    z = rng.random(30)
    df = pd.DataFrame({"m": z + rng.random(30), "t": z + rng.random(30), "lr": z})
    t = lambda a, b: stats.kendalltau(df[a], df[b]).statistic  # noqa: E731
    expected = (t("m", "t") - t("m", "lr") * t("t", "lr")) / math.sqrt(
        (1 - t("m", "lr") ** 2) * (1 - t("t", "lr") ** 2)
    )
    assert sweep.partial_kendall(df, "m", "t", ["lr"]) == pytest.approx(expected)


def test_correlation_table_has_every_coefficient_and_ci():
    df = _grid_trials()
    df["tc_test"] = df["test_acc"] + np.random.default_rng(3).normal(0, 0.01, len(df))
    table = sweep.correlation_table(df, ["tc_test"], SPACE, draws=200)
    assert list(table["target"]) == ["test_acc", "gen_gap"]
    row = table.iloc[0]
    assert row["spearman"] > 0.9 and row["spearman_ci_low"] <= row["spearman"] <= row["spearman_ci_high"]
    for col in (
        "kendall_p",
        "kendall_pairs",
        "granulated_kendall",
        "worst_psi",
        "partial_kendall",
        "n_groups_lr",
        "n_pairs_width",
        "kendall_ci_low",
        "partial_kendall_ci_high",
    ):
        assert col in table.columns


def test_search_space_files_are_validated(tmp_path):
    good = tmp_path / "s.yaml"
    good.write_text(
        "lr: {type: float, low: 0.01, high: 0.1, log: true}\nwidth: {type: categorical, choices: [8, 16]}\n"
    )
    assert sweep.load_space(str(good))["width"]["choices"] == [8, 16]
    cases = {
        "bad.yaml": ("lr: [unclosed", "not valid YAML"),
        "unknown.json": ('{"dropout": {"type": "float", "low": 0, "high": 1}}', "not a tunable"),
        "range.json": ('{"lr": {"type": "float", "low": 1, "high": 0.1}}', "low < high"),
        "kind.json": ('{"lr": {"type": "normal"}}', "type"),
    }
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=words):
            sweep.load_space(str(tmp_path / name))
    with pytest.raises(ValueError, match="no such file"):
        sweep.load_space(str(tmp_path / "absent.yaml"))


def test_bad_storage_urls_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot open"):
        sweep.open_storage("nosuchdialect://x/y")
    with pytest.raises(ValueError, match="does not exist"):
        sweep.open_storage(str(tmp_path / "missing" / "journal.log"))


def test_measure_columns_leave_out_per_cut_variants():
    cols = ["tc_test", "tc_test_d4", "aniso_drift_pvalue", "drift_test_d10", "test_acc", "lr"]
    assert sweep.measure_columns(cols) == ["tc_test", "aniso_drift_pvalue"]
