"""The report command end to end, in its quick form (digits, 6 trials) and into a temporary directory."""

from pathlib import Path

import pandas as pd
import pytest

from tc import report
from tests.test_mlflow_run import mlflow_run


@pytest.mark.slow
def test_quick_report_is_generated_with_every_section_and_figure(mlflow_store, tmp_path):
    proc = mlflow_run("report", "quick=true", f"out_dir={tmp_path}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "REPORT.md").read_text()
    for heading in (
        "## 1. Temporal consistency",
        "## 2. Random labels",
        "## 3. Feature drift",
        "## 4. Controls",
        "## 5. Anisotropy",
        "## 6. Does consistency predict generalization",
        "## Compute used",
    ):
        assert heading in text
    section1 = text.split("## 1.")[1].split("## 2.")[0].splitlines()
    split_rows = [line for line in section1 if line.startswith(("| train |", "| test |", "| corrupt |"))]
    assert len(split_rows) == 3 and not any("n/a" in line for line in split_rows)  # every split measured
    for fig in (
        "base_consistency_heatmaps.png",
        "effects.png",
        "effects.csv",
        "base_anisotropy_spectra.png",
        "sweep_scatter.png",
        "sweep_bars.png",
        "correlations.csv",
        "trials.csv",
    ):
        assert (tmp_path / "report" / fig).is_file(), fig
        assert f"report/{fig}" in text or fig.endswith(".csv")
    assert "**Verdict.**" in text and "**Verdict (headline" in text
    effects = pd.read_csv(tmp_path / "report" / "effects.csv")
    assert (effects["n_seeds"] == 2).all() and effects["low"].notna().all()  # every claim measured at both seeds


# ---- tc.report: the bar, the costs and the sections, on made-up measurements (fast) ----


def test_meets_the_bar_needs_tau_above_half_above_every_baseline_and_cheap_enough():
    assert report.meets_the_bar(0.6, 0.4, 1.0)
    assert not report.meets_the_bar(0.49, 0.1, 1.0)  # too weak
    assert not report.meets_the_bar(0.6, 0.6, 1.0)  # not better than the best baseline
    assert not report.meets_the_bar(0.6, 0.1, 2.5)  # too expensive
    assert report.meets_the_bar(0.6, 0.1, None)  # cost unknown


def test_costs_are_seconds_over_each_trials_epoch_and_measures_inherit_their_analysis_cost():
    costs = report.epoch_costs(
        [
            ({"analysis_seconds": 4.0, "gm_margin_seconds": 1.0, "tc_test": 0.9}, 2.0),
            ({"analysis_seconds": 8.0}, 2.0),
            ({"analysis_seconds": 99.0}, None),
        ]
    )
    assert costs == {"analysis": 3.0, "gm_margin": 0.5}
    assert report.cost_of("tc_kappa_test", costs) == 3.0 and report.cost_of("gm_margin", costs) == 0.5
    assert report.cost_of("aniso_drift_topk_var", costs) is None and report.cost_of("other", costs) is None


def _corr(tau_tc, tau_gm, p_tc=0.001):
    rows = []
    for measure, tau, p in (("tc_kappa_test", tau_tc, p_tc), ("gm_sharpness", tau_gm, 0.01), ("tc_mmd", 0.1, 0.5)):
        for target in ("test_acc", "gen_gap"):
            rows.append(
                dict(
                    measure=measure,
                    target=target,
                    kendall=tau,
                    kendall_ci_low=tau - 0.1,
                    kendall_ci_high=tau + 0.1,
                    kendall_p_holm=p,
                    spearman=tau,
                    granulated_kendall=0.5,
                    worst_psi=0.0,
                    partial_kendall=0.1,
                )
            )
    return pd.DataFrame(rows)


def _metrics(s, clean_kappa=0.9, random_kappa=0.5, random_fit=1.0):
    """Made-up per-seed results of every analysis, with seed noise, for the rendering tests."""
    out = {}
    for name, _, _ in report.analyses(s, {}):
        arm, seed = name.split("/s")
        noise = 0.01 * (int(seed) - 0.5)
        m = {"tc_test": 0.9 + noise, "tc_test_crossseed": 0.2, "tc_excess_test": 0.4 + noise, "test_acc": 0.8}
        m["train_eval_acc"] = random_fit if arm == "random" else 1.0
        m["tc_kappa_test"] = (random_kappa if arm == "random" else clean_kappa) + noise
        out[name] = m
    return out


def test_report_has_every_section_in_order_and_verdicts_follow_the_intervals():
    s = report.settings(True, 24, Path("."))
    figures = {**{k: f"report/{v}" for k, v in report.BASE_FIGURES.items()}, "forest": "report/effects.png"}
    trials = pd.DataFrame({"tc_kappa_test": [0.1, 0.2, 0.3], "converged": [1, 1, 0]})
    cases = (
        (0.7, 0.3, "it **predicts** test accuracy", "**better than** the best baseline"),
        (0.35, 0.4, "it **predicts** test accuracy", "**not distinguishable from**"),
        (0.05, 0.4, "**no evidence**", "**worse than**"),
    )
    for tau_tc, tau_gm, predicts, versus in cases:
        r = report.Results(s, _metrics(s), figures, trials, _corr(tau_tc, tau_gm), {"analysis": 1.0}, {"sweep": 3})
        text = report.render(r)
        headings = [line for line in text.splitlines() if line.startswith("## ")]
        assert [h.split()[1] for h in headings] == ["1.", "2.", "3.", "4.", "5.", "6.", "Compute"]
        assert predicts in text and versus in text, (tau_tc, tau_gm)
        assert "## 6. Does consistency predict generalization? 2 converged trials" in text
    assert s.n_trials == 6 and report.settings(False, 48, Path(".")).n_trials == 48


def test_random_label_verdict_needs_memorisation_and_follows_the_seed_interval():
    s = report.settings(True, 6, Path("."))
    figures = {**{k: f"report/{v}" for k, v in report.BASE_FIGURES.items()}, "forest": "report/effects.png"}
    empty = pd.DataFrame()

    def headline(**kw):
        text = report.render(report.Results(s, _metrics(s, **kw), figures, empty, empty))
        return text.split("**Verdict (headline")[1].split("\n")[0]

    assert "reproduces" in headline(clean_kappa=0.9, random_kappa=0.5)
    assert "does not reproduce" in headline(clean_kappa=0.5, random_kappa=0.9)
    assert "not tested" in headline(random_fit=0.6)  # random labels not memorised: the control says nothing


def test_all_effects_table_holds_every_claim_with_its_seed_count():
    s = report.settings(True, 6, Path("."))
    table = report.all_effects(_metrics(s))
    claims = report.CONSISTENCY + report.LABELS + report.CONTROLS + report.ANISOTROPY
    assert len(table) == len(claims)
    row = table[table["label"] == "tc_kappa_test: clean − random"].iloc[0]
    assert row["n_seeds"] == 2 and row["diff"] == pytest.approx(0.4) and row["verdict"] == "reproduces"
    frozen = table[table["label"] == "test_acc: frozen − base"].iloc[0]
    assert frozen["verdict"] == "does not reproduce"  # equal accuracies: inside the 0.01 margin


def test_abs_interval_of_tau():
    assert report.abs_interval(-0.2, 0.5) == (0.0, 0.5)
    assert report.abs_interval(-0.6, -0.2) == (0.2, 0.6)


def test_write_puts_the_report_its_forest_figure_and_tables_in_out(tmp_path):
    s = report.settings(True, 6, Path("."))
    figures = {k: f"report/{v}" for k, v in report.BASE_FIGURES.items()}
    (tmp_path / "report").mkdir()
    r = report.Results(s, _metrics(s), figures, pd.DataFrame({"trial": [0]}), _corr(0.5, 0.2))
    path = report.write(r, tmp_path)
    assert path == tmp_path / "REPORT.md" and "(report/effects.png)" in path.read_text()
    for name in ("effects.png", "effects.csv", "trials.csv", "correlations.csv"):
        assert (tmp_path / "report" / name).is_file(), name
    assert len(pd.read_csv(tmp_path / "report" / "effects.csv")) == len(report.all_effects(r.metrics))


def test_nested_train_and_analyze_log_like_the_entry_points(mlflow_store):
    """The report's in-process path: a child training run with every checkpoint, and a child analyze run whose
    metrics land on the training run, both FINISHED under the parent."""
    import mlflow

    from tc import runs, tracking
    from tc.config import AnalyzeConfig, TrainConfig

    cfg = TrainConfig(dataset="digits", model="mlp", width=16, epochs=3, train_size=128, batch_size=32)
    with mlflow.start_run() as parent:
        run_id = runs.train_nested(cfg)
        acfg = AnalyzeConfig(run_id=run_id, splits="test", max_samples=40, anisotropy=False, measures=False)
        result = runs.analyze_nested(acfg)
    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 and set(children["status"]) == {"FINISHED"}
    logged = tracking.get_run(run_id).data.metrics
    assert logged["tc_test"] == pytest.approx(result.metrics["tc_test"]) and "test_acc" in logged
    assert len(tracking.download_checkpoints(run_id, Path("cache"))) == 4  # steps 0 and three epochs
