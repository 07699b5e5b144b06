"""The one list of every metric an analysis logs (`tc.analysis.analyze_run`), with its meaning.

Keys are patterns: `{split}` is an analysis split (train, test, corrupt), `{cut}` a cut index (the metric
at one cut; the key without `_d{cut}` is the mean over the cuts, `tc.analysis.mean_over_cuts`), `{kind}`
drift or grad, `{corruption}` a corruption name, `{measure}` a baseline measure gm_*. `tests/test_metrics.py`
checks that every key a real analysis logs matches exactly one pattern, and that README's table agrees.
"""

from __future__ import annotations

HEADLINE = (
    "tc_train",
    "tc_test",
    "tc_kappa_test",
    "tc_full_test",
    "tc_excess_test",
    "tc_window_checkpoints",
    "tc_corrupt",
    "half_life_test",
    "tc_test_crossseed",
    "drift_test",
    "aniso_drift_topk_var",
    "aniso_drift_min_pvalue",
    "aniso_grad_topk_var",
    "aniso_grad_min_pvalue",
    "aniso_perturb_top_acc",
    "aniso_perturb_random_acc",
    "aniso_perturb_bottom_acc",
)
