"""The report command end to end, in its quick form (digits, 6 trials) and into a temporary directory."""

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tc.report import costs, experiments, files, produce, render, results, robustness, sections, verdicts
from tc.report.environments import Environment
from tests.conftest import ROOT
from tests.paths import resolves
from tests.test_mlflow_run import mlflow_run


@pytest.mark.slow
def test_quick_report_is_generated_with_every_section_and_figure(mlflow_store, tmp_path):
    proc = mlflow_run("report", "quick=true", f"out_dir={tmp_path}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "REPORT.md").read_text()
    for heading in (
        "## 1. Temporal consistency",
        "## 2. Random labels",
        "## 2b. Label noise",
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
    envs = [e.name for e in experiments.settings(True, 6, ROOT).environments]
    per_env = [f"{kind}_{e}.{ext}" for e in envs for kind, ext in (("sweep_scatter", "png"), ("sweep_bars", "png"))]
    per_env += [f"{kind}_{e}.csv" for e in envs for kind in ("trials", "correlations", "costs")]
    for fig in (
        "base_consistency_heatmaps.png",
        "effects.png",
        "effects.csv",
        "base_anisotropy_spectra.png",
        "robust.csv",
        "per_cut.csv",
        "calibration.csv",
        *per_env,
    ):
        assert (tmp_path / "report" / fig).is_file(), fig
        assert f"report/{fig}" in text or fig.endswith(".csv")
    assert "**Verdict.**" in text and "**Verdict (headline" in text
    assert "### 6." in text and "Across environments" in text
    trials = pd.read_csv(tmp_path / "report" / f"trials_{envs[0]}.csv")
    assert {"err_hat_full_test", "err_hat_tc_test"} <= set(trials.columns)  # calibration beside GDE
    assert any(c.startswith("tc_kappa_test_d") for c in trials.columns)  # per-cut τ
    assert len(pd.read_csv(tmp_path / "report" / "per_cut.csv")) >= len(envs)
    effects = pd.read_csv(tmp_path / "report" / "effects.csv")
    assert (effects["n_seeds"] == 2).all() and effects["low"].notna().all()  # every claim measured at both seeds


# ---- tc.report: the bar, the costs and the sections, on made-up measurements (fast) ----


def test_meets_the_bar_needs_tau_above_half_above_every_baseline_and_cheap_enough():
    assert verdicts.meets_the_bar(0.6, 0.4, 1.0)
    assert not verdicts.meets_the_bar(0.49, 0.1, 1.0)  # too weak
    assert not verdicts.meets_the_bar(0.6, 0.6, 1.0)  # not better than the best baseline
    assert not verdicts.meets_the_bar(0.6, 0.1, 2.5)  # too expensive
    assert verdicts.meets_the_bar(0.6, 0.1, None)  # cost unknown


def test_costs_are_seconds_over_each_trials_epoch_and_measures_inherit_their_analysis_cost():
    measured = costs.epoch_costs(
        [
            ({"analysis_seconds": 4.0, "gm_margin_seconds": 1.0, "tc_test": 0.9, "train_seconds": 20.0}, 2.0),
            ({"analysis_seconds": 6.0, "tc_test_cheap_k2_n100_seconds": 3.0, "anisotropy_seconds": 1.0}, 3.0),
            ({"analysis_seconds": 8.0}, 2.0),
            ({"analysis_seconds": 99.0}, None),
        ]
    )
    # train_seconds, a trial's own training time, is no timed step of the analysis
    assert measured == {"analysis": 8 / 3, "gm_margin": 0.5, "tc_test_cheap_k2_n100": 1.0, "anisotropy": 1 / 3}
    assert costs.cost_of("tc_kappa_test", measured) == 8 / 3 and costs.cost_of("gm_margin", measured) == 0.5
    assert costs.cost_of("aniso_drift_topk_var", measured) == 1 / 3 and costs.cost_of("other", measured) is None
    assert costs.cost_of("train", measured) is None


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
    for name, _, _ in experiments.analyses(s, {}):
        arm, seed = name.split("/s")
        noise = 0.01 * (int(seed) - 0.5)
        m = {"tc_test": 0.9 + noise, "tc_test_crossseed": 0.2, "tc_gain_test": 0.4 + noise, "test_acc": 0.8}
        m["train_eval_acc"] = random_fit if arm == "random" else 1.0
        m["tc_kappa_test"] = (random_kappa if arm == "random" else clean_kappa) + noise
        out[name] = m
    return out


def _env_trials(rng, tau, n=40, per_cut=True):
    """Converged trials of one environment whose tc_kappa_test has Kendall τ ~`tau` with test accuracy (a Gaussian
    copula), its per-cut variants, GDE's disagreement and the single-run error estimates."""
    rho = np.sin(np.pi * tau / 2)
    z = rng.standard_normal((n, 2))
    acc = 0.95 + 0.01 * (rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1])
    kappa = 0.9 + 0.02 * z[:, 0]
    df = pd.DataFrame({"test_acc": acc, "tc_kappa_test": kappa, "converged": 1, "epochs_trained": 20.0})
    df["gm_disagreement"] = (1 - acc) * 0.6 + rng.normal(0, 0.002, n)
    df["err_hat_full_test"] = (1 - acc) + rng.normal(0, 0.002, n)
    df["err_hat_tc_test"] = (1 - acc) + rng.normal(0, 0.01, n)
    if per_cut:
        df["tc_kappa_test_d1"] = rng.normal(size=n)
        df["tc_kappa_test_d2"] = kappa
    return df


def _two_env_results(s, taus, corr=None, seed=0):
    rng = np.random.default_rng(seed)
    sweeps = []
    for k, tau in enumerate(taus):
        env = Environment(f"env{k}", f"environment {k}", {})
        sweeps.append(
            results.SweepResult(
                env,
                _env_trials(rng, tau),
                corr if corr is not None else pd.DataFrame(),
                {"analysis": 0.5},
                cfg=experiments.sweep_config(s),
            )
        )
    return results.Results(s, _metrics(s), _figures(), pd.DataFrame(), pd.DataFrame(), sweeps=tuple(sweeps))


def test_report_has_every_section_in_order_and_verdicts_follow_the_primary_test():
    s = experiments.settings(True, 24, Path("."))
    cases = (
        (
            (0.6, 0.6),
            0.7,
            0.3,
            "it **predicts** test accuracy in every environment",
            "**better than** the best baseline",
        ),
        (
            (0.6, 0.0),
            0.35,
            0.4,
            "**no evidence** that it predicts test accuracy in every environment (worst: `env1`)",
            "**not distinguishable from**",
        ),
        ((0.0, 0.6), 0.05, 0.4, "**no evidence**", "**worse than**"),
    )
    for taus, tau_tc, tau_gm, predicts, versus in cases:
        text = render.render(_two_env_results(s, taus, _corr(tau_tc, tau_gm)))
        headings = [line for line in text.splitlines() if line.startswith("## ")]
        assert [h.split()[1] for h in headings] == ["1.", "2.", "2b.", "3.", "4.", "5.", "6.", "Compute"]
        assert predicts in text and versus in text, taus
        assert "## 6. Does consistency predict generalization? 80 converged trials in 2 environments" in text
        for sub in ("### 6.1 environment 0 (`env0`)", "### 6.2 environment 1 (`env1`)", "### 6.3 Across environments"):
            assert sub in text, sub
        section = text.split("## 6. Does")[1]
        assert "| measure | dir. | τ `env0` [95% CI] | τ `env1` [95% CI] | pooled" in section
        assert "| cut | τ `env0` [95% CI] | τ `env1` [95% CI] |" in section and "\n| 2 | " in section
        assert "| `env1` | `err_hat_full_test` | 40 |" in section and "**Secondary hypothesis" in section
    # one environment (the one-sweep form, as a test or a caller before issue 23 makes it): the same section
    trials = pd.DataFrame({"tc_kappa_test": [0.1, 0.2, 0.3], "converged": [1, 1, 0]})
    r = results.Results(s, _metrics(s), _figures(), trials, _corr(0.7, 0.3), {"analysis": 1.0}, {"sweep": 3})
    text = render.render(r)
    assert "## 6. Does consistency predict generalization? 2 converged trials" in text
    assert "**better than** the best baseline" in text and "**Verdict.**" in text
    assert s.n_trials == 6 and experiments.settings(False, 48, Path(".")).n_trials == 48


def test_trials_per_environment_are_its_own_size_unless_the_report_gives_one_for_all():
    from tc.config import ReportConfig
    from tc.report.environments import environments

    assert ReportConfig().trials == 0  # the default: each environment's own size
    for quick in (True, False):
        s = experiments.settings(quick, 0, Path("."))
        sizes = [experiments.trials_for(s, env) for env in s.environments]
        assert sizes == [env.n_trials for env in environments(quick, Path("."))]
        assert experiments.sweep_config(s, s.environments[1]).n_trials == sizes[1]
        given = experiments.settings(quick, 5, Path("."))
        assert [experiments.trials_for(given, env) for env in given.environments] == [5, 5]
    s = experiments.settings(False, 0, Path("."))
    unsized = replace(s, environments=(replace(s.environments[0], n_trials=None),))
    assert experiments.trials_for(unsized) == 3  # the fewest a rank correlation is computed on


def test_the_cost_note_states_the_test_every_each_sweep_ran_with():
    """A trial's costs divide by its training time as it ran, which holds a test-set pass at each evaluated epoch:
    the note says how often each environment's sweep evaluated it (its stored `test_every`), not the default's."""
    s = experiments.settings(True, 24, Path("."))
    r = _two_env_results(s, (0.6, 0.6), _corr(0.7, 0.3))
    assert {sw.cfg.test_every for sw in r.sweeps} == {0}  # the report's sweeps: SweepConfig's default
    design = render.render(r).split("## 6. Does")[1].split("### 6.1")[0]
    assert "with the test set evaluated at the last epoch only (the sweep's `test_every=0`)" in design
    every = replace(r.sweeps[1], cfg=replace(r.sweeps[1].cfg, test_every=1))
    design = render.render(replace(r, sweeps=(r.sweeps[0], every))).split("## 6. Does")[1].split("### 6.1")[0]
    assert "`env0` at the last epoch only (`test_every=0`), `env1` at every epoch (`test_every=1`)" in design
    assert "no per-epoch test pass" not in design


def test_a_failed_environment_leaves_the_primary_test_without_a_verdict_and_the_report_still_renders():
    """One environment's sweep failed (empty tables, its error): the report still renders (produce promises that the
    other environments still report), the failed environment is a column of n/a, and "in every environment" cannot
    be tested: no verdict, not a verdict over the environments that ran."""
    s = experiments.settings(True, 24, Path("."))
    r = _two_env_results(s, (0.6, 0.6), _corr(0.7, 0.3))
    failed = results.SweepResult(r.sweeps[1].env, pd.DataFrame(), pd.DataFrame(), cfg=r.sweeps[1].cfg, error="E: x")
    text = render.render(replace(r, sweeps=(r.sweeps[0], failed)))
    across = text.split("### 6.3 Across environments")[1]
    assert "**No verdict.** The sweep failed: E: x" in text
    assert "| measure | dir. | τ `env0` [95% CI] | τ `env1` [95% CI] | pooled" in across
    assert "was not measured with a test accuracy in every environment: no verdict" in across
    assert "it **predicts** test accuracy in every environment" not in across
    assert "**not tested**: an environment has no comparison." in across  # not "not shown": no p to show


def test_random_label_verdict_needs_memorisation_and_follows_the_seed_interval():
    s = experiments.settings(True, 6, Path("."))
    figures = {**{k: f"report/{v}" for k, v in experiments.BASE_FIGURES.items()}, "forest": "report/effects.png"}
    empty = pd.DataFrame()

    def headline(**kw):
        text = render.render(results.Results(s, _metrics(s, **kw), figures, empty, empty))
        return text.split("**Verdict (headline")[1].split("\n")[0]

    assert "reproduces" in headline(clean_kappa=0.9, random_kappa=0.5)
    assert "does not reproduce" in headline(clean_kappa=0.5, random_kappa=0.9)
    assert "not tested" in headline(random_fit=0.6)  # random labels not memorised: the control says nothing


def test_all_effects_table_holds_every_claim_with_its_seed_count():
    s = experiments.settings(True, 6, Path("."))
    table = verdicts.all_effects(_metrics(s))
    claims = (
        experiments.CONSISTENCY + experiments.LABELS + experiments.NOISE + experiments.CONTROLS + experiments.ANISOTROPY
    )
    assert len(table) == len(claims)
    row = table[table["label"] == "tc_kappa_test: clean − random"].iloc[0]
    assert row["n_seeds"] == 2 and row["diff"] == pytest.approx(0.4) and row["verdict"] == "reproduces"
    frozen = table[table["label"] == "test_acc: frozen − base"].iloc[0]
    assert frozen["verdict"] == "does not reproduce"  # equal accuracies: inside the 0.01 margin


def test_abs_interval_of_tau():
    assert verdicts.abs_interval(-0.2, 0.5) == (0.0, 0.5)
    assert verdicts.abs_interval(-0.6, -0.2) == (0.2, 0.6)


def test_write_puts_the_report_its_forest_figure_and_tables_in_out(tmp_path):
    s = experiments.settings(True, 6, Path("."))
    figures = {k: f"report/{v}" for k, v in experiments.BASE_FIGURES.items()}
    (tmp_path / "report").mkdir()
    r = results.Results(s, _metrics(s), figures, pd.DataFrame({"trial": [0]}), _corr(0.5, 0.2))
    path = files.write(r, tmp_path)
    assert path == tmp_path / "REPORT.md" and "(report/effects.png)" in path.read_text()
    names = ("effects.png", "effects.csv", "trials_digits-mlp.csv", "correlations_digits-mlp.csv", "robust.csv")
    for name in (*names, "costs_digits-mlp.csv", "per_cut.csv", "calibration.csv", "settings.json"):
        assert (tmp_path / "report" / name).is_file(), name
    assert len(pd.read_csv(tmp_path / "report" / "effects.csv")) == len(verdicts.all_effects(r.metrics))


def test_nested_train_and_analyze_log_like_the_entry_points(mlflow_store):
    """The report's in-process path: a child training run with every checkpoint, and a child analyze run whose
    metrics land on the training run, both FINISHED under the parent."""
    import mlflow

    from tc.config import AnalyzeConfig, TrainConfig
    from tc.tracking import checkpoints
    from tc.tracking import client as tc_client
    from tc.tracking import jobs as runs

    cfg = TrainConfig(dataset="digits", model="mlp", width=16, epochs=3, train_size=128, batch_size=32)
    with mlflow.start_run() as parent:
        run_id = runs.train_job(cfg)
        acfg = AnalyzeConfig(run_id=run_id, splits="test", max_samples=40, anisotropy=False, measures=False)
        result = runs.analyze_job(acfg).result
    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 and set(children["status"]) == {"FINISHED"}
    logged = tc_client.get_run(run_id).data.metrics
    assert logged["tc_test"] == pytest.approx(result.metrics["tc_test"]) and "test_acc" in logged
    assert len(checkpoints.download_checkpoints(run_id, Path("cache"))) == 4  # steps 0 and three epochs


# ---- the text states what it read (issue 19.9) ------------------------------------------------------------


def _figures():
    return {**{k: f"report/{v}" for k, v in experiments.BASE_FIGURES.items()}, "forest": "report/effects.png"}


def test_freeze_cut_is_the_end_of_the_models_first_stage():
    for depth in (8, 14, 20, 32):
        n = (depth - 2) // 6  # ResNet-(6n+2): stem, then 3 stages of n blocks
        assert experiments.freeze_cut({"model": "resnet20", "depth": depth, "width": 8}) == 1 + n
    assert experiments.freeze_cut({"model": "resnet20", "width": 16}) == 4  # the default depth, 20
    s = experiments.settings(True, 6, Path("."))
    frozen = experiments.training_runs(s)["frozen/s0"]
    assert frozen["freeze_cut"] == 2 and frozen["freeze_epoch"] == experiments.FREEZE_EPOCH


def test_rendered_text_follows_the_settings_and_the_machine(monkeypatch):
    from tc.analysis import anisotropy as anisotropy_metrics
    from tc.core import sgd_noise as noise

    s = experiments.settings(False, 48, Path("."))
    default_text = render.render(results.Results(s, _metrics(s), _figures(), pd.DataFrame(), pd.DataFrame()))
    for said in (
        "stage cuts, corruptions at severity 3",
        "(the last 50% of training)",
        "top-3 explained variance",
        "seeds with Holm p < 0.05",
        "5 draws per seed",
        "about 4 GPU-hours for the seeded experiments at 5 seeds per arm",
        "about 32 GPU-hours for 96 two-seed sweep trials (2 environments)",  # 48 in each
    ):
        assert said in default_text, said
    s = experiments.Settings(
        {**s.base, "depth": 14, "lr": 0.05, "schedule": "step", "batch_size": 32, "checkpoint_every": 7},
        3,
        {**s.labels, "width": 96, "lr": 0.02, "target_loss": 0.03, "epochs": 77},
        4,
        12,
        (
            Environment(
                "digits-mlp", "MLP on 8x8 digits", {"epochs": 123, "target_loss": 0.02, "seeds": 1, "sampler": "random"}
            ),
        ),
        250,
        False,
        {"window": 0.25, "aniso_k": 4, "cuts": "all", "severities": "2"},
    )
    assert all(params["window"] == 0.25 for name, _, params in experiments.analyses(s, {}) if name.startswith("base"))
    monkeypatch.setattr(sections, "ALPHA", 0.01)
    draws = lambda cfg: noise.PerturbOptions(k=cfg.aniso_k, draws=7)  # noqa: E731
    monkeypatch.setattr(anisotropy_metrics, "perturb_options", draws)
    trials = pd.DataFrame({"lr": [0.1] * 4, "width": [8] * 4, "converged": [1, 1, 0, 1]})
    space = {"lr": {"type": "float", "low": 0.01, "high": 1.0}, "width": {"type": "categorical", "choices": [8]}}
    machine = "7 CPU cores, GPU Test-9000"
    r = results.Results(s, _metrics(s), _figures(), trials, pd.DataFrame(), machine=machine, space=space)
    text = render.render(r)
    for said in (
        "this machine (7 CPU cores, GPU Test-9000)",
        "resnet20 (depth 14, width 16)",
        "SGD lr 0.05 step, batch 32, a checkpoint every 7 steps, at 3 seeds",
        "on 250 samples per split, all cuts, corruptions at severity 2",
        "(the last 25% of training)",
        "width 96",
        "constant lr 0.02",
        "<= 0.03 (cap 77 epochs)",
        "at 4 seeds per arm",
        "the blocks before cut 3",  # ResNet-14's first stage ends at cut 3
        "Margins: differences under 0.01",
        "top-4 explained variance",
        "seeds with Holm p < 0.01",
        "7 draws per seed",
        "`sweep` over lr, width with Optuna's random sampler",
        "the digits MLP trained at 1 seed per configuration until its training cross-entropy is <= 0.02 "
        "(cap 123 epochs)",
        "4 trials ran; 1 hit the cap",
        "With 3 seeds the half-width is 4.3",
        "about 2 GPU-hours for the seeded experiments at 3 seeds per arm",  # 3 x 2 arms x 20 min
        "about 2 GPU-hours for 12 one-seed sweep trials (1 environment)",  # 12 x 10 min
    ):
        assert said in text, said
    stale = ("2 CPU cores", "lr 0.1 cosine", "two seeds", "cap 300", "cut 4", "last 50%", "last half", "top-3")
    for word in (*stale, "Holm p < 0.05", "5 draws", "5 seeds per arm", "48-trial", "two-seed", "stages cuts"):
        assert word not in text, word


def test_describe_machine_reads_the_device(monkeypatch):
    import torch

    monkeypatch.setattr(experiments.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert experiments.describe_machine("auto") == "3 CPU cores, no GPU"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test-9000")
    assert experiments.describe_machine("auto") == "3 CPU cores, GPU Test-9000"
    assert experiments.describe_machine("cpu") == "3 CPU cores, no GPU"


# ---- the report survives a sweep with too few trials (issue 19.9) ------------------------------------------


def _few_trials(n_converged: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"lr": [0.1] * (n_converged + 1), "converged": [1] * n_converged + [0], "tc_kappa_test": 0.9, "run_id": "x"}
    )


def test_a_sweep_with_fewer_than_3_converged_trials_gives_a_report_that_says_so(tmp_path):
    art, figs = tmp_path / "art", tmp_path / "out" / "report"
    art.mkdir()
    figs.mkdir(parents=True)
    _few_trials(2).to_csv(art / "trials.csv", index=False)  # what the sweep writes below 3 trials: no figures
    trials, corr = files.sweep_tables(art, figs)
    assert len(trials) == 3 and corr.empty and not art.exists() and not any(figs.iterdir())
    s = experiments.settings(True, 6, Path("."))
    r = results.Results(s, _metrics(s), {**_figures(), **files.sweep_figures(figs)}, trials, corr)
    path = files.write(r, tmp_path / "out")
    text = path.read_text()
    assert "## 6. Does consistency predict generalization? 2 converged trials" in text
    assert "**No verdict.** Only 2 converged trials: a rank correlation needs at least 3" in text
    assert "sweep_scatter.png" not in text and "sweep_bars.png" not in text  # no link to a figure not made
    failed = replace(r, trials=pd.DataFrame(), sweep_error="ExecutionException: run failed")
    assert "**No verdict.** The sweep failed: ExecutionException: run failed" in render.render(failed)
    # the stored tables of either report can be read back (re-rendered) without the sweep's correlations
    assert len(results.sweeps_of(files.from_tables(figs))[0].trials) == 3
    files.write(failed, tmp_path / "out")
    (back,) = results.sweeps_of(files.from_tables(figs))
    assert back.trials.empty and back.corr.empty and back.costs == {}
    assert back.error == "ExecutionException: run failed"


def test_sweep_results_of_a_logged_sweep_with_too_few_trials_and_no_leftover_folders(mlflow_store, tmp_path):
    import mlflow

    from tc.tracking import client

    with mlflow.start_run() as trial:
        mlflow.log_metric("analysis_seconds", 6.0)
        mlflow.log_metric("epochs_trained", 3)
        for epoch in range(3):
            mlflow.log_metric("epoch", epoch, step=epoch)
    art = tmp_path / "art"
    art.mkdir()
    _few_trials(1).assign(run_id=trial.info.run_id).to_csv(art / "trials.csv", index=False)
    with mlflow.start_run() as sweep_run:
        mlflow.log_artifact(str(art / "trials.csv"))
    figs = tmp_path / "figs"
    figs.mkdir()
    trials, corr, costs = produce.sweep_results(sweep_run.info.run_id, figs)
    assert len(trials) == 2 and corr.empty and set(costs) == {"analysis"}
    assert costs["analysis"] == pytest.approx(6.0 / (3 * client.seconds_per_epoch(trial.info.run_id)))  # in runs
    assert list(figs.iterdir()) == []


def test_a_figure_download_leaves_no_empty_analysis_folders(mlflow_store, tmp_path):
    import mlflow

    from tc.tracking import analyses

    png = tmp_path / "heat.png"
    png.write_bytes(b"not really a png")
    with mlflow.start_run() as run:
        mlflow.set_tag(analyses.ANALYSIS_VERSION_TAG, "3")
        mlflow.log_artifact(str(png), "analysis/v3")
    figs = tmp_path / "figs"
    figs.mkdir()
    assert produce.download_figure(run.info.run_id, "heat.png", figs, "base_heat.png") == "report/base_heat.png"
    assert [p.relative_to(figs).as_posix() for p in figs.rglob("*")] == ["base_heat.png"]  # no .tmp/analysis/v3
    assert (figs / "base_heat.png").read_bytes() == b"not really a png"


def test_produce_runs_every_experiment_logs_the_report_and_survives_a_failed_sweep(mlflow_store, tmp_path, monkeypatch):
    """`produce` on stand-ins for the train and analyze jobs (a child run each; the analysis logs a metric and the
    base figures as the current analysis): one training run per `training_runs` key, every analysis of
    `analyses`, the base figures downloaded, an earlier report's sweep figures removed, the sweep's failure
    stated, and REPORT.md and report_runs.json logged to the report run."""
    import mlflow

    from tc.tracking import analyses, client

    s = experiments.settings(True, 6, ROOT)  # the quick sweep's search space is a file under ROOT
    analyzed = []

    def train(cfg):
        with client.nested_run() as run_id:
            client.client().log_param(run_id, "seed", cfg.seed)
        return run_id

    def analyze(cfg):
        analyzed.append(cfg.run_id)
        with client.nested_run():
            client.client().log_metric(cfg.run_id, "tc_test", 0.9)
            for name in experiments.BASE_FIGURES.values():
                (tmp_path / name).write_bytes(b"png")
                client.client().log_artifact(cfg.run_id, str(tmp_path / name), "analysis/v1")
            client.client().set_tag(cfg.run_id, analyses.ANALYSIS_VERSION_TAG, "1")

    def launch(entry, params):
        assert entry == "sweep" and all(isinstance(v, str) for v in params.values())
        raise RuntimeError("no sweep here")

    monkeypatch.setattr(produce, "train_job", train)
    monkeypatch.setattr(produce, "analyze_job", analyze)
    out = tmp_path / "out"
    (out / "report").mkdir(parents=True)
    (out / "report" / "sweep_scatter.png").write_bytes(b"an earlier report's")
    with mlflow.start_run() as run:
        path = produce.produce(s, out, run.info.run_id, launch)
    assert not (out / "report" / "sweep_scatter.png").exists()  # this report's sweep made none
    assert path == out / "REPORT.md"
    text = path.read_text()
    assert "**No verdict.** The sweep failed: RuntimeError: no sweep here" in text
    for name in experiments.BASE_FIGURES.values():
        assert (out / "report" / f"base_{name}").read_bytes() == b"png"
    assert "(report/base_consistency_heatmaps.png)" in text and "(report/base_perturbation.png)" in text
    record = json.loads((Path(client.client().download_artifacts(run.info.run_id, "report_runs.json"))).read_text())
    assert set(record["runs"]) == set(experiments.training_runs(s)) and record["sweep_run_ids"] == {
        e.name: None for e in s.environments
    }
    assert len(analyzed) == len(experiments.analyses(s, record["runs"]))
    assert {"train base", "analyze base", "analyze splice"} <= set(record["timing_s"])
    logged = {a.path for a in client.client().list_artifacts(run.info.run_id)}
    assert logged == {"REPORT.md", "report_runs.json"}


# ---- re-rendering from the stored tables -----------------------------------------------------------------


def _sweep_of(n=12, seed=0):
    """A stored sweep: trials over the default space (one capped), measures with a rank twin, and the
    correlations the sweep computes on its converged trials (the report's options: 1000 draws, seed 0)."""
    from tc.stats import rankcorr
    from tc.sweep import space as sweep_space
    from tc.sweep import summary as sweep_summary

    rng = np.random.default_rng(seed)
    space = sweep_space.default_space(1438)
    trials = pd.DataFrame(
        {
            k: rng.choice(v["choices"], n) if "choices" in v else rng.uniform(v["low"], v["high"], n)
            for k, v in space.items()
        }
    )
    trials["test_acc"] = rng.random(n)
    trials["gen_gap"] = rng.random(n)
    # a measure that clearly predicts on these 11 converged trials, whatever the space's columns drew before it
    trials["tc_kappa_test"] = trials["test_acc"] + rng.normal(0, 0.05, n)
    trials["tc_test"] = 0.5 * trials["tc_kappa_test"] + 0.5
    trials["gm_disagreement"] = -trials["test_acc"] + rng.normal(0, 0.1, n)
    trials["converged"] = [1] * (n - 1) + [0]
    conv = sweep_summary.split_converged(trials)[0]
    corr = rankcorr.correlation_table(conv, ["tc_kappa_test", "tc_test", "gm_disagreement"], space)
    return trials, corr, space


def _stored_report(tmp_path, metrics=None, s=None, **fields):
    s = s or experiments.settings(False, 48, Path("."))
    trials, corr, space = _sweep_of()
    names = files.sweep_figure_names("digits-mlp")
    figures = {**_figures(), **{k: f"report/{v}" for k, v in names.items()}}
    costs = {"analysis": 1.5, "gm_disagreement": 0.02}
    r = results.Results(s, metrics or _metrics(s), figures, trials, corr, costs, space=space, **fields)
    (tmp_path / "report").mkdir()
    for name in names.values():
        (tmp_path / "report" / name).write_bytes(b"")
    files.write(r, tmp_path)
    return r


def test_rerendering_an_unchanged_report_changes_only_its_note(tmp_path):
    r = _stored_report(tmp_path, seconds=3900.0, machine="2 CPU cores, no GPU")
    before = (tmp_path / "REPORT.md").read_text()
    effects_before = pd.read_csv(tmp_path / "report" / "effects.csv")
    assert files.write_rerendered(tmp_path, "2001-02-03") == []
    after = (tmp_path / "REPORT.md").read_text()
    note = [line for line in after.splitlines() if line.startswith(render.RERENDER_NOTE)]
    verdict = robustness.primary_verdict(robustness.robust_of(results.sweeps_of(r)))
    assert len(note) == 1 and "2001-02-03" in note[0]
    assert (
        "Verdicts: the primary test, `tc_kappa_test` with test accuracy in every environment (section 6): "
        f"{verdict} (unchanged)." in note[0]
    )
    assert after.replace(note[0] + "\n\n", "") == before  # every other line as it was
    assert "in 65 min on this machine (2 CPU cores, no GPU)" in after  # the run's, from settings.json
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "report" / "effects.csv"), effects_before)
    files.write_rerendered(tmp_path, "2001-02-04")  # twice: still one note, the later date
    again = (tmp_path / "REPORT.md").read_text()
    assert again.count(render.RERENDER_NOTE) == 1 and again.replace("2001-02-04", "2001-02-03") == after


def test_rerender_reads_verdicts_again_off_the_stored_intervals(tmp_path):
    s = experiments.settings(False, 48, Path("."))
    metrics = _metrics(s)
    for seed, drop in enumerate((0.004, 0.006, 0.008, 0.005, 0.007)):  # frozen − base: about −0.006 ± 0.002
        metrics[f"frozen/s{seed}"]["test_acc"] = 0.8 - drop
        metrics[f"base/s{seed}"]["test_acc"] = 0.8
    _stored_report(tmp_path, metrics)
    table = pd.read_csv(tmp_path / "report" / "effects.csv")
    row = table["label"] == "test_acc: frozen − base"
    assert table.loc[row, "verdict"].item() == "does not reproduce"  # inside the 0.01 margin
    table.loc[row, "verdict"] = "reproduces"  # what the sign-first rule stored
    table.to_csv(tmp_path / "report" / "effects.csv", index=False)
    text = (tmp_path / "REPORT.md").read_text().replace("**does not reproduce**", "**reproduces**")
    (tmp_path / "REPORT.md").write_text(text)
    changes = files.write_rerendered(tmp_path, "2001-02-03")
    assert changes == ["`test_acc: frozen − base` (controls): reproduces → does not reproduce"]
    text = (tmp_path / "REPORT.md").read_text()
    assert changes[0] in text and "| < −0.01 | 5 | **does not reproduce** |" in text
    stored = pd.read_csv(tmp_path / "report" / "effects.csv")
    assert stored.loc[stored["label"] == "test_acc: frozen − base", "verdict"].item() == "does not reproduce"


def test_effects_from_table_refuses_a_table_missing_a_claim():
    s = experiments.settings(True, 6, Path("."))
    table = verdicts.all_effects(_metrics(s))
    with pytest.raises(ValueError, match="test_acc: frozen"):
        verdicts.effects_from_table(table[table["label"] != "test_acc: frozen − base"])


def test_write_stores_the_settings_and_a_rerender_follows_them_not_the_full_reports(tmp_path):
    """A quick report re-renders as a quick report: settings, sweep config and space come from settings.json."""
    s = experiments.settings(True, 6, Path("."))
    r = _stored_report(tmp_path, s=s, seconds=120.0, machine="3 CPU cores, no GPU")
    stored = json.loads((tmp_path / "report" / "settings.json").read_text())
    assert set(stored) == {"settings", "environments", "seconds", "machine", "notes"}
    back = files.from_tables(tmp_path / "report")
    (sweep,) = results.sweeps_of(back)
    assert back.settings == s and sweep.cfg == experiments.sweep_config(s) and sweep.space == r.space
    assert (back.seconds, back.machine, back.sweep_error, back.notes) == (120.0, "3 CPU cores, no GPU", "", ())
    files.write_rerendered(tmp_path, "2001-02-03")
    text = (tmp_path / "REPORT.md").read_text()
    assert "-e report -P quick=true` in 2 min" in text and "With 2 seeds the half-width" in text
    assert "at 2 seeds per configuration" in text and "cap 150 epochs" in text  # the quick sweep's settings


def test_rerender_refuses_without_settings_json(mlflow_store, tmp_path, capsys):  # a refusal leaves a run: a store
    from entrypoints import report as entry

    _stored_report(tmp_path)
    (tmp_path / "report" / "settings.json").unlink()
    before = (tmp_path / "REPORT.md").read_text()
    with pytest.raises(ValueError, match=r"settings\.json is missing"):
        files.write_rerendered(tmp_path, "2001-02-03")
    assert entry.main(["--rerender", "true", "--out_dir", str(tmp_path)]) == 2
    assert "settings.json is missing" in capsys.readouterr().err
    assert (tmp_path / "REPORT.md").read_text() == before
    assert entry.main(["--rerender", "true", "--quick", "true", "--out_dir", str(tmp_path)]) == 2  # not applicable


def test_rerender_refuses_when_the_recomputed_correlations_differ_from_the_stored_ones(tmp_path):
    _stored_report(tmp_path)
    path = tmp_path / "report" / "correlations_digits-mlp.csv"
    stored = pd.read_csv(path)
    # the columns the multiplicity rules set may differ (they are rewritten) ...
    stored.assign(role="headline", kendall_p_holm=0.5, same_ranks_as="").to_csv(path, index=False)
    files.write_rerendered(tmp_path, "2001-02-03")
    # ... a number the data set may not
    before = (tmp_path / "REPORT.md").read_text()
    changed = stored.copy()
    changed.loc[0, "kendall"] += 1e-6
    changed.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"differ .*kendall: stored"):
        files.write_rerendered(tmp_path, "2001-02-04")
    assert (tmp_path / "REPORT.md").read_text() == before
    assert files.correlation_differences(stored, stored.iloc[1:]) == [f"row {tuple(stored.iloc[0, :2])} only stored"]
    assert files.correlation_differences(stored, stored.drop(columns="spearman")) == ["column spearman only stored"]


def test_a_change_of_the_primary_verdict_is_listed_and_a_legacy_headline_role_is_confirmatory(tmp_path):
    r = _stored_report(tmp_path)
    robust = pd.read_csv(tmp_path / "report" / "robust.csv")
    assert robustness.primary_verdict(robust) == verdicts.PREDICTS
    robust.loc[robust["measure"] == "tc_kappa_test", "p_iut"] = 0.2  # what a report under another rule stated
    robust.to_csv(tmp_path / "report" / "robust.csv", index=False)
    changes = files.write_rerendered(tmp_path, "2001-02-03")
    change = (
        "the primary test, `tc_kappa_test` with test accuracy in every environment (section 6): no evidence → predicts"
    )
    assert changes == [change] and change in (tmp_path / "REPORT.md").read_text()
    # a table stored before the roles were renamed says `headline` for the confirmatory row
    old = r.corr.assign(role=r.corr["role"].replace("confirmatory", "headline"))
    row = old.set_index("measure").loc["tc_kappa_test"]
    assert verdicts.is_confirmatory("tc_kappa_test", row[row["target"] == "test_acc"].iloc[0])


# the one-sweep report published before issue 23 (docs/ at commit 4eb747d: its text and tables, not its figures),
# kept as a fixture since docs/ now holds the two-environment report
PUBLISHED = ROOT / "tests" / "fixtures" / "legacy_report"


def test_the_published_one_sweep_report_rerenders_with_its_legacy_tables(tmp_path):
    """REPORT.md and report/ as published before issue 23 (one sweep: trials.csv, correlations.csv, costs.csv
    in epochs, settings.json with `sweep_extra`) re-render: read as one environment, its file names kept, its costs
    turned into training runs, the cross-environment tables added, and the text says the design came after the
    trials. The published verdict (the one sweep's confirmatory row) is unchanged under the primary test."""
    import shutil

    shutil.copy(PUBLISHED / "REPORT.md", tmp_path / "REPORT.md")
    shutil.copytree(PUBLISHED / "report", tmp_path / "report")
    stored = json.loads((tmp_path / "report" / "settings.json").read_text())
    assert "sweep_extra" in stored["settings"] and "environments" not in stored  # the legacy form
    back = files.from_tables(tmp_path / "report")
    (sweep,) = results.sweeps_of(back)
    assert back.legacy_tables and sweep.env.name == "digits-mlp" and len(sweep.trials) == 52
    # stored before SweepConfig.analysis existed: its trials computed every measure (tc_train, gm_sharpness, ...),
    # not the later default core; read back as measures, as before core became the default
    assert "analysis" not in stored["sweep_config"] and sweep.cfg.analysis == "measures"
    assert {"tc_train", "gm_sharpness", "tc_mmd", "tc_test_crossseed"} <= set(sweep.trials.columns)
    epochs = pd.read_csv(tmp_path / "report" / "costs.csv").set_index("step")["epochs"]
    per_run = sweep.trials["epochs_trained"].mean()  # the costs were measured over every trial of trials.csv
    assert sweep.costs["analysis"] == pytest.approx(epochs["analysis"] / per_run)
    assert costs.cost_of("gm_disagreement", sweep.costs) == pytest.approx(1 + epochs["gm_disagreement"] / per_run)
    changes = files.write_rerendered(tmp_path, "2001-02-03")
    assert changes == []
    text = (tmp_path / "REPORT.md").read_text()
    assert (
        "Verdicts: the primary test, `tc_kappa_test` with test accuracy in every environment (section 6): predicts"
        in text
    )
    assert "### 6.2 Across environments" in text and "a re-reading, not a confirmation" in text
    # its sweep evaluated the test set at every epoch (stored before test_every: read back as 1), and its costs
    # divide by that training time
    assert "with the test set evaluated at every epoch (the sweep's `test_every=1`)" in text
    assert "at the last epoch only" not in text.split("## 6. Does")[1].split("### 6.1")[0]
    assert "| `gm_disagreement` | − | -0.84 [-0.90, -0.77] |" in text
    # SPEC's bar in epochs: the stored cost itself (30.07), turned back with the same epochs per run
    assert f"at most 2 training epochs: here {epochs['analysis']:.1f}, at {per_run:.0f} epochs per run" in text
    assert "Full tables: `report/trials.csv`" in text  # its own tables' names, kept
    for name in ("robust.csv", "per_cut.csv", "calibration.csv", "correlations.csv"):
        assert (tmp_path / "report" / name).is_file(), name
    assert not any((tmp_path / "report").glob("trials_*.csv"))
    cal = pd.read_csv(tmp_path / "report" / "calibration.csv").set_index("estimate")
    # the numbers: mean |disagreement - error| 0.034, mean |(1 - tc_full_test) - error| 0.021
    assert cal.loc["gm_disagreement", "mae"] == pytest.approx(0.034, abs=5e-4)
    assert cal.loc["err_hat_full_test", "mae"] == pytest.approx(0.021, abs=5e-4)


def _no_launch(entry: str, params: dict[str, str]) -> str:
    raise AssertionError(f"no entry point is launched here ({entry})")


def test_a_sweep_that_raises_anything_gives_a_report_that_says_so_also_when_rerendered(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    s = experiments.settings(False, 48, Path("."))

    def fails(*args):
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no run")

    monkeypatch.setattr(produce, "sweep_until_converged", lambda *args: "sweep-run-id")
    monkeypatch.setattr(produce, "sweep_results", fails)  # the sweep ran; reading its results failed
    sweep_id, done = produce.run_sweep(s, "study", {}, tmp_path, _no_launch)
    trials, corr, costs, space, error = done.trials, done.corr, done.costs, done.space, done.error
    assert sweep_id == "sweep-run-id" and trials.empty and corr.empty and costs == {} and space == {}
    assert error == "MlflowException: RESOURCE_DOES_NOT_EXIST: no run"
    # a programming error in the sweep itself
    monkeypatch.setattr(produce, "sweep_until_converged", lambda *args: 1 / 0)
    assert produce.run_sweep(s, "study", {}, tmp_path, _no_launch)[1].error == "ZeroDivisionError: division by zero"
    r = results.Results(s, _metrics(s), _figures(), trials, corr, costs, sweep_error=error)
    files.write(r, tmp_path)
    stored = json.loads((tmp_path / "report" / "settings.json").read_text())
    assert stored["environments"]["digits-mlp"]["sweep_error"] == error
    files.write_rerendered(tmp_path, "2001-02-03")
    assert f"**No verdict.** The sweep failed: {error}" in (tmp_path / "REPORT.md").read_text()


# ---- the paths that text names ----------------------------------------------------------------------------

NAMED_PATH = re.compile(r"\btc\.report(?:\.[A-Za-z_]\w*)+")


def test_every_tc_report_path_that_a_text_namesresolves():
    """The paths the docs, the published report (its re-render note and settings.json's notes), tc's own
    docstrings and messages, and the note a re-render writes name: each is a module or a name a reader can
    import, also after tc.report became a package."""
    sources = [*(ROOT / "docs").rglob("*.md"), ROOT / "docs/report/settings.json", ROOT / "README.md"]
    sources += [*(ROOT / "tc").rglob("*.py"), *(ROOT / "entrypoints").glob("*.py")]
    named = {(m, p.relative_to(ROOT).as_posix()) for p in sources for m in NAMED_PATH.findall(p.read_text())}
    named |= {(m, "the re-render note") for m in NAMED_PATH.findall(render._rerender_note("2001-02-03", [], []))}
    assert {m for m, _ in named} >= {"tc.report.rerender", "tc.report.files.write"}  # the scan finds them
    assert sorted((where, m) for m, where in named if not resolves(m)) == []
    assert not resolves("tc.report.no_such_name") and not resolves("tc.report.files.no_such_name")


def test_per_cut_cells_on_part_of_an_environments_trials_say_on_how_many():
    """ResNet-8 and -14 in one environment: cuts 2 and 4 exist in the ResNet-8 trials only, 5 and 7 in the
    ResNet-14 ones; such a τ is over those trials, and the table must say so (docs/REPORT.md printed it bare)."""
    from tc.report.robust_section import per_cut_lines

    pc = pd.DataFrame(
        [("a", 1, 0.2, 0.1, 0.3, 50), ("a", 4, 0.45, 0.2, 0.6, 25), ("b", 1, 0.3, 0.2, 0.4, 91)],
        columns=["env", "cut", "tau", "low", "high", "n"],
    )
    lines = per_cut_lines(pc, ["a", "b"])
    assert "| 1 | 0.20 [0.10, 0.30] | 0.30 [0.20, 0.40] |" in lines
    assert "| 4 | 0.45 [0.20, 0.60] (n = 25 of 50) | n/a |" in lines
    full = per_cut_lines(pc[pc["cut"] == 1], ["a", "b"])
    assert not any("of 50" in x or "(n = k of m)" in x for x in full)  # every trial: no note


def test_secondary_hypothesis_reads_contradicted_where_gde_is_significantly_closer():
    """Δ = |estimate − error| − |GDE − error|: an interval wholly above 0 is evidence against the hypothesis, not
    an absence of evidence ("not shown" hid that in docs/REPORT.md's conv environment)."""
    from tc.report.robust_section import calibration_lines
    from tc.report.robustness import GDE, SECONDARY

    def cal(lows):
        rows = []
        for env, low in lows.items():
            for est in (SECONDARY, GDE):
                vs = (low + 0.008, low, low + 0.016, 0.99) if est == SECONDARY else (np.nan,) * 4
                rows.append((env, est, 50, 0.03, 0.02, 0.04, 0.5, 0.4, 0.6, 0.1, 0.05, 0.15, *vs))
        cols = ["env", "estimate", "n", "mae", "mae_low", "mae_high", "slope", "slope_low", "slope_high"]
        cols += ["intercept", "intercept_low", "intercept_high", "vs_gde", "vs_gde_low", "vs_gde_high", "p_vs_gde"]
        return pd.DataFrame(rows, columns=cols)

    text = "\n".join(calibration_lines(cal({"a": -0.0001, "b": 0.001}), ["a", "b"]))
    assert "**contradicted**" in text and "`b` Δ = 0.009 [0.001, 0.017]" in text and "`a` Δ" not in text
    text = "\n".join(calibration_lines(cal({"a": -0.0001, "b": -0.002}), ["a", "b"]))
    assert "**not shown** at these trials." in text and "contradicted" not in text
