"""Issue 23 in the report: section 1's claims on tc_gain (a stored report's tc_excess claims still re-render), and
section 2b, label noise as its own seed-paired experiment (a report made before it says it was not run)."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from tc.report import experiments, files, render, results, sections, verdicts
from tc.stats.replicates import REPRODUCES
from tests.test_report import _metrics, _stored_report

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "docs" / "report"


def _noise_metrics(s):
    metrics = _metrics(s)
    for seed in range(s.label_seeds):
        noise = 0.01 * seed
        for arm in experiments.NOISE_ARMS:
            metrics[f"{arm}/s{seed}"]["converged"] = 1.0
        metrics[f"clean/s{seed}"] |= {"tc_full_test": 0.95, "tc_gain_test": 0.01 + noise, "epochs_trained": 9}
        metrics[f"clean/s{seed}"] |= {"gm_sum_train_loss": 0.1 + noise, "gm_steps_to_criterion": 150 + seed}
        metrics[f"noisy/s{seed}"] |= {"tc_full_test": 0.9, "tc_gain_test": 0.02 + noise, "epochs_trained": 20}
        metrics[f"noisy/s{seed}"] |= {"gm_sum_train_loss": 0.3 + noise, "gm_steps_to_criterion": 400 + 2 * seed}
        metrics[f"noisy/s{seed}"] |= {"test_acc": 0.7 + noise, "tc_kappa_test": 0.8 + noise}
    return metrics


def test_the_noisy_arm_is_the_clean_arm_at_10_percent_noise_with_the_same_seeds_and_analysis():
    for quick in (True, False):
        s = experiments.settings(quick, 6, ROOT)
        runs = experiments.training_runs(s)
        for seed in range(s.label_seeds):
            clean, noisy = runs[f"clean/s{seed}"], runs[f"noisy/s{seed}"]
            assert noisy == {**clean, "label_noise": 0.1} and clean["label_noise"] == 0.0
            assert experiments.train_config(noisy).target_loss > 0  # trained to the same criterion
        plan = {name: (key, params) for name, key, params in experiments.analyses(s, {})}
        for seed in range(s.label_seeds):
            (key, noisy), (_, clean) = plan[f"noisy/s{seed}"], plan[f"clean/s{seed}"]
            assert key == f"noisy/s{seed}" and noisy == clean
            assert experiments.analyze_config(noisy).measures  # the anchors come with the measures
            assert plan[f"random/s{seed}"][1] == {**clean, "measures": "false"}  # section 2's random arm: unchanged
    quick = experiments.settings(True, 6, ROOT)
    assert quick.label_seeds == 2 and experiments.train_config(quick.labels).epochs <= 150  # toy scale


def test_the_noise_claims_are_seed_paired_and_need_both_arms_to_fit_their_labels():
    s = experiments.settings(True, 6, ROOT)
    metrics = _noise_metrics(s)
    noise = verdicts.section_effects(metrics)["noise"]
    assert [e.claim.metric for e in noise] == [
        "test_acc",
        "tc_kappa_test",
        "tc_full_test",
        "tc_gain_test",
        "gm_sum_train_loss",
        "gm_steps_to_criterion",
    ]
    by = {e.claim.metric: e for e in noise}
    assert all(e.n == 2 and e.claim.a == "clean" and e.claim.b == "noisy" for e in noise)
    assert by["test_acc"].diff == pytest.approx(0.095) and by["test_acc"].verdict == REPRODUCES
    assert by["gm_steps_to_criterion"].diff == pytest.approx(-250.5)  # paired by seed: (150 - 400, 151 - 402)
    assert by["gm_steps_to_criterion"].verdict == REPRODUCES  # predicted: clean − noisy < 0
    assert by["tc_gain_test"].claim.expected == 0
    metrics["noisy/s1"]["train_eval_acc"] = 0.98  # 10% noisy labels at the criterion's loss: need not be 0.99
    assert verdicts.section_effects(metrics)["noise"] == noise
    metrics["noisy/s1"]["converged"] = 0.0  # a noisy run stopped at the epoch cap: nothing is tested
    assert {e.verdict for e in verdicts.section_effects(metrics)["noise"]} == {verdicts.NOT_NOISE_TESTED}
    del metrics["clean/s0"]["converged"]  # unknown: not tested either
    metrics["noisy/s1"]["converged"] = 1.0
    assert {e.verdict for e in verdicts.section_effects(metrics)["noise"]} == {verdicts.NOT_NOISE_TESTED}
    text = "\n".join(sections.noise_section(results.Results(s, _noise_metrics(s), {}, pd.DataFrame(), pd.DataFrame())))
    assert (
        "τ = -0.72" in text
        and "10% of its training labels" in text
        and "`gm_steps_to_criterion: clean − noisy`" in text
    )
    assert "Not run" not in text
    assert "sweep" not in text.split("predictive of generalization", 1)[1].split("Here label noise")[0]  # no sweep
    for noise, says in (([0.0, 0.1], "still varies it"), ([0.0, 0.0], "does not vary it")):  # what the sweep did
        trials = pd.DataFrame({"label_noise": noise, "test_acc": [0.8, 0.9]})
        r = results.Results(s, _noise_metrics(s), {}, trials, pd.DataFrame())
        assert f"This report's sweep {says}" in "\n".join(sections.noise_section(r))
        # the form `produce` and a re-render make: one SweepResult per environment, the one-sweep fields empty
        env = s.environments[0]
        sweep = results.SweepResult(env, trials, pd.DataFrame(), cfg=experiments.sweep_config(s, env))
        r = results.Results(s, _noise_metrics(s), {}, pd.DataFrame(), pd.DataFrame(), sweeps=(sweep,))
        assert f"This report's sweep {says}" in "\n".join(sections.noise_section(r))


def test_section_1_claims_tc_gain_and_says_what_it_is():
    s = experiments.settings(True, 6, ROOT)
    r = results.Results(s, _metrics(s), {"heat": "h.png"}, pd.DataFrame(), pd.DataFrame())
    text = "\n".join(sections.consistency_section(r))
    assert "tc_gain = tc − tc_full" in text and "| tc_full | tc_gain |" in text
    assert {e.claim.metric for e in results.effects_of(r)["consistency"]} >= {"tc_gain_test", "tc_gain_train"}


def test_a_stored_table_with_tc_excess_claims_and_no_noise_section_rerenders(tmp_path):
    """The legacy path: an effects.csv stored before tc_gain and section 2b (the published one's shape)."""
    _stored_report(tmp_path)
    path = tmp_path / "report" / "effects.csv"
    table = pd.read_csv(path)
    table = table[table["section"] != "noise"]
    table["label"] = table["label"].str.replace("tc_gain_", "tc_excess_")
    table.to_csv(path, index=False)
    text = (tmp_path / "REPORT.md").read_text()
    start, end = text.index("## 2b."), text.index("## 3.")
    (tmp_path / "REPORT.md").write_text(text[:start] + text[end:])
    effects = verdicts.effects_from_table(table)
    assert [e.claim for e in effects["consistency"]] == list(experiments.CONSISTENCY_V1) and effects["noise"] == []
    assert files.write_rerendered(tmp_path, "2001-02-03") == []
    after = (tmp_path / "REPORT.md").read_text()
    assert "`tc_excess_test (base)`" in after and "`tc_gain_test (base)`" not in after
    noise = after[after.index("## 2b.") : after.index("## 3.")]
    assert after.index("## 2.") < after.index("## 2b.") and "**Not run in this report**" in noise
    with pytest.raises(ValueError, match="consistency: tc_gain_train"):  # neither version complete: refused
        verdicts.effects_from_table(table[table["label"] != "tc_excess_train (base)"])


@pytest.mark.skipif(not (PUBLISHED / "settings.json").is_file(), reason="no stored report")
def test_the_published_report_rerenders(tmp_path):
    """`python entrypoints/report.py --rerender true` on a copy of docs/REPORT.md and docs/report/."""
    shutil.copy(ROOT / "docs" / "REPORT.md", tmp_path / "REPORT.md")
    shutil.copytree(PUBLISHED, tmp_path / "report")
    files.write_rerendered(tmp_path, "2001-02-03")
    text = (tmp_path / "REPORT.md").read_text()
    assert text.count("## 2b.") == 1 and render.RERENDER_NOTE in text
    if "tc_excess_test (base)" in (PUBLISHED / "effects.csv").read_text():  # a report made before tc_gain
        assert "**Not run in this report**" in text and "`tc_excess_test (base)`" in text


def test_the_label_noise_tau_the_text_quotes_is_the_published_sweeps():
    """Section 2b quotes label noise's τ from the sweep published before issue 23 (its trials are a fixture now)."""
    trials = pd.read_csv(ROOT / "tests" / "fixtures" / "legacy_report" / "report" / "trials.csv")
    conv = trials[trials["converged"] == 1]
    assert len(conv) == 50
    tau = stats.kendalltau(conv["label_noise"], conv["test_acc"]).statistic
    assert round(tau, 2) == sections.LABEL_NOISE_TAU_V1
