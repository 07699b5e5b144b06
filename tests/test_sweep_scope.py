"""Issue 21: a sweep trial analyzes only what the sweep reads (`SweepConfig.analysis` = core, the default; every
measure, as the report ranks them, and the full analysis one parameter away), and the report's cost column counts
the whole cost of each measure (`tc.report.costs`)."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tc.config import AnalyzeConfig, SweepConfig, TrainConfig
from tc.report import costs
from tc.sweep.summary import measure_columns
from tc.sweep.trial import analysis_config, analyze_trial, analyzed_seed
from tc.tracking import analyses, jobs

TINY = TrainConfig(dataset="digits", model="mlp", width=16, epochs=3, batch_size=128, train_size=256)

# ---- the cost column: synthetic metric dicts, with and without the per-phase timers ----

# today's timers only: the consistency analysis' and the anisotropy's sums
LEGACY = {"analysis_seconds": 6.0, "anisotropy_seconds": 3.0, "gm_margin_seconds": 0.3, "gm_disagreement_seconds": 0.06}
LEGACY |= {"tc_test_cheap_k1_n100_seconds": 1.5, "train_seconds": 300.0, "tc_test": 0.9}
# the per-phase timers of issue 21 besides them, by the names the analysis emits (tc.analysis.consistency, .run,
# .anisotropy): tc_<split> times a split's composites and whole networks together
PHASED = LEGACY | {"tc_train_seconds": 1.2, "tc_test_seconds": 0.9, "tc_corrupt_seconds": 2.1}
PHASED |= {"splits_seconds": 0.6, "controls_seconds": 0.45, "aniso_grad_seconds": 1.5, "aniso_stats_seconds": 0.15}
PHASED |= {"aniso_features_seconds": 0.3, "aniso_perturb_seconds": 0.9}


def test_epoch_costs_read_every_timer_of_the_analysis_and_the_second_seeds_training():
    got = costs.epoch_costs([(PHASED, 3.0), (PHASED, 3.0)], second_epochs=[10.0, 14.0])
    assert got[costs.SECOND_SEED] == 12.0
    assert got["tc_corrupt"] == pytest.approx(0.7) and got["splits"] == pytest.approx(0.2)
    assert got["controls"] == pytest.approx(0.15) and got["aniso_grad"] == pytest.approx(0.5)
    assert "train" not in got and "tc_test" in got  # train_seconds is training, tc_test_seconds a phase
    timers = {k.removesuffix("_seconds") for k in PHASED if k.endswith("_seconds")} - {"train"}
    assert set(got) == timers | {costs.SECOND_SEED}  # every timer of the analysis is read, and nothing else
    assert costs.SECOND_SEED not in costs.epoch_costs([(LEGACY, 3.0)])  # seeds=1: no second seed


def test_cost_of_falls_back_to_the_analysis_sums_without_the_phase_timers():
    c = costs.epoch_costs([(LEGACY, 3.0)], second_epochs=[12.0])  # analysis 2, anisotropy 1 epochs
    assert costs.cost_of("tc_window_checkpoints", c) == 0.0  # a count: no computation (was the analysis' 2)
    assert costs.cost_of("tc_kappa_test", c) == 2.0 and costs.cost_of("tc_corrupt_jpeg", c) == 2.0
    assert costs.cost_of("tc_excess_test", c) == 2.0  # tc and tc_full are both inside the one sum: counted once
    assert costs.cost_of("aniso_drift_topk_var", c) == 1.0 and costs.cost_of("gm_margin", c) == pytest.approx(0.1)
    # a second training run: 12 epochs, not the 0.02 of the disagreement's own forward passes
    assert costs.cost_of("gm_disagreement", c) == pytest.approx(0.02 + 12)
    assert costs.cost_of("tc_test_crossseed", c) == 2.0 + 12
    assert costs.cost_of("tc_test_seed_sd", c) == 2 * 2.0 + 12  # the measure on both seeds, and the second's run
    assert costs.cost_of("gm_disagreement_seed_sd", c) == pytest.approx(2 * 0.02 + 12)
    assert costs.cost_of("tc_test_cheap_k1_n100", c) == 0.5
    assert costs.cost_of("other", c) is None and costs.cost_of("train", c) is None
    # without the second seed's training (seeds=1, or an older sweep) a measure that needs it has no known cost
    alone = costs.epoch_costs([(LEGACY, 3.0)])
    assert costs.cost_of("gm_disagreement", alone) is None and costs.cost_of("tc_test_seed_sd", alone) is None


def test_cost_of_sums_the_phases_a_measure_needs_when_they_are_timed():
    c = costs.epoch_costs([(PHASED, 3.0)], second_epochs=[12.0])
    assert costs.cost_of("tc_test", c) == pytest.approx(0.3)
    assert costs.cost_of("tc_kappa_train", c) == pytest.approx(0.4)
    assert costs.cost_of("tc_full_test", c) == pytest.approx(0.3)  # timed with the split's composites
    assert costs.cost_of("tc_excess_test", c) == pytest.approx(0.3)  # tc_test and tc_full_test: one timer
    # the corrupt split's composites plus making the splits
    assert costs.cost_of("tc_corrupt_jpeg", c) == pytest.approx(0.7 + 0.2)
    assert costs.cost_of("tc_corrupt", c) == pytest.approx(0.7 + 0.2)
    assert costs.cost_of("tc_test_crossseed", c) == pytest.approx(0.15 + 12)
    assert costs.cost_of("gm_disagreement", c) == pytest.approx(0.02 + 12)
    assert costs.cost_of("gm_margin_seed_sd", c) == pytest.approx(2 * 0.1 + 12)
    assert costs.cost_of("aniso_grad_topk_var", c) == pytest.approx(0.5 + 0.05)
    assert costs.cost_of("aniso_drift_min_pvalue", c) == pytest.approx(0.1 + 0.05)
    assert costs.cost_of("aniso_perturb_top_acc", c) == pytest.approx(0.1 + 0.3)
    assert costs.cost_of("tc_test_cheap_k1_n100", c) == 0.5
    assert costs.cost_of("tc_window_checkpoints", c) == 0.0


def test_every_timer_the_analysis_registers_is_a_timed_step():
    """A `<step>_seconds` metric of the analysis' registry (`tc.analysis.registry.METRICS`) that `cost_of` did
    not read would drop that step from every measure's cost."""
    from tc.analysis.registry import METRICS

    example = {"{gm}": "gm_margin", "{split}": "corrupt", "{k}": "1", "{n}": "100"}
    steps = []
    for key in METRICS:
        if key.endswith("_seconds"):
            for pattern, value in example.items():
                key = key.replace(pattern, value)
            steps.append(key.removesuffix("_seconds"))
    assert "analysis" in steps and "tc_mmd" in steps
    assert [s for s in steps if not costs.TIMED_STEP.fullmatch(s)] == []


# ---- the trial's analysis: measures against full on a tiny digits run ----


def test_the_sweeps_analysis_parameter_picks_the_trials_analysis():
    default = analysis_config(SweepConfig(analyze_matrix="full"), "r", "s")
    assert (default.outputs, default.matrix, default.reference_run_id) == ("measures", "final", "s")
    # core: the test split's scores, no controls, no costly measures, no anisotropy
    assert (default.splits, default.controls, default.costly_measures, default.anisotropy) == ("test", 0, 0, 0)
    every = analysis_config(SweepConfig(analysis="measures", anisotropy=True), "r", "s")
    assert (every.outputs, every.matrix, every.splits) == ("measures", "final", AnalyzeConfig.splits)
    assert every.controls and every.costly_measures and every.anisotropy
    full = analysis_config(SweepConfig(analysis="full", analyze_matrix="full"), "r", None)
    assert (full.outputs, full.matrix, full.splits, full.controls, full.costly_measures) == (
        "full", "full", AnalyzeConfig.splits, True, True
    )  # fmt: skip
    with pytest.raises(ValueError, match="analysis"):
        SweepConfig(analysis="some")
    with pytest.raises(ValueError, match="outputs"):
        AnalyzeConfig(run_id="r", outputs="tables")


def _files(run_id: str) -> set[str]:
    where = analyses.analysis_dir(run_id)
    return {f.path.rsplit("/", 1)[-1] for f in MlflowClient().list_artifacts(run_id, where)}


def test_a_trials_measures_analysis_equals_the_full_one_on_every_measure_and_writes_no_tables(mlflow_store):
    # full at matrix=full: the lag curves and half-lives measures leaves out change no measure of the table
    cfg = SweepConfig(max_samples=40, anisotropy=False, analyze_matrix="full")
    with mlflow.start_run() as sweep_run, mlflow.start_run(nested=True) as trial_run:
        first = jobs.train_job(TINY, run_id=trial_run.info.run_id)  # still RUNNING, as in a sweep
        second = jobs.train_job(replace(TINY, seed=1), tags={"tc.seed_of": first})
        got, files = {}, {}
        for mode in ("core", "measures", "full"):
            mode_cfg = replace(cfg, analysis=mode)
            analyze_trial(
                analysis_config(mode_cfg, first, second), sweep_run.info.run_id, analyzed_seed(mode_cfg, second)
            )
            got[mode] = analyses.current_analysis(first)[1]
            second_tags = MlflowClient().get_run(second).data.tags
            files[mode] = (_files(first), _files(second) if "tc.analysis" in second_tags else None)
    measures, full = got["measures"], got["full"]
    table = measure_columns(list(full))
    assert table == measure_columns(list(measures))  # what the correlation table reads, in both
    assert {"tc_test", "tc_corrupt", "tc_full_train", "tc_test_crossseed", "gm_disagreement", "tc_mmd"} <= set(table)
    assert any(m.startswith("tc_test_cheap_") for m in table)  # the cheap surrogates
    assert "half_life_test" in full and "half_life_test" not in measures  # the two analyses did differ
    assert {m: measures[m] for m in table} == {m: full[m] for m in table}  # equal values, bit for bit
    spread = sorted(k for k in full if k.endswith("_seed_sd"))
    assert spread and spread == sorted(k for k in measures if k.endswith("_seed_sd"))
    assert {k: measures[k] for k in spread} == {k: full[k] for k in spread}
    # measures: the summary alone, in both seeds' runs; full: the tables and the figures
    assert files["measures"] == ({"summary.json"}, {"summary.json"})
    for written in files["full"]:
        assert {"matrices.csv", "per_sample.csv", "corrupt.csv", "summary.json", "per_sample_kde.png"} <= written
    # core: what the sweep's own question reads, each with the value the report's analysis gives it
    core = got["core"]
    ranked = measure_columns(list(core))
    assert {"tc_kappa_test", "tc_test", "tc_full_test", "drift_test", "gm_disagreement", "gm_margin"} <= set(ranked)
    assert {"gm_sum_train_loss", "gm_log_spectral_product", "gm_dist_init"} <= set(ranked)
    assert any(m.startswith("tc_test_cheap_") for m in ranked)
    not_core = {"tc_train", "tc_corrupt", "tc_full_train", "tc_test_crossseed", "gm_sharpness", "tc_mmd"}
    assert not not_core & set(core) and not_core <= set(table)  # left out of core alone
    assert set(ranked) < set(table)
    assert {m: core[m] for m in ranked} == {m: measures[m] for m in ranked}  # equal values, bit for bit
    # the second seed: core's reference (gm_disagreement above), not analyzed (no spreads)
    assert not [k for k in core if k.endswith("_seed_sd")]
    assert files["core"] == ({"summary.json"}, None)


def test_the_reports_costs_read_each_trials_second_seed_training(mlflow_store, tmp_path):
    """`tc.report.produce.sweep_results`: a trial with a second seed (its run tagged `tc.seed_of`: the trial's run)
    makes `SECOND_SEED` one training run, so that gm_disagreement costs a training run beside its analysis, and
    every step is in runs of the trial (its seconds over its training's, issue 23)."""
    import pandas as pd

    from tc.report import produce

    ids = []
    for epochs in (10.0, 14.0):
        with mlflow.start_run() as trial:
            mlflow.log_metrics({"analysis_seconds": 6.0, "gm_disagreement_seconds": 0.3, "epochs_trained": 3})
            for epoch in range(3):
                mlflow.log_metric("epoch", epoch, step=epoch)
        with mlflow.start_run(tags={"tc.seed_of": trial.info.run_id}):
            mlflow.log_metric("epochs_trained", epochs)
        ids.append(trial.info.run_id)
    art = tmp_path / "art"
    art.mkdir()
    trials = pd.DataFrame({"lr": [0.1, 0.2], "converged": 1, "tc_kappa_test": [0.9, 0.8], "run_id": ids})
    trials.to_csv(art / "trials.csv", index=False)
    with mlflow.start_run() as sweep_run:
        mlflow.log_artifact(str(art / "trials.csv"))
    figs = tmp_path / "figs"
    figs.mkdir()
    got = produce.sweep_results(sweep_run.info.run_id, figs)[2]
    assert got[costs.SECOND_SEED] == 1.0 and 0 < got["gm_disagreement"] < got["analysis"]
    assert costs.cost_of("gm_disagreement", got) == pytest.approx(got["gm_disagreement"] + 1.0)
