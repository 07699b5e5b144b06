"""The analysis of a run: checkpoints, data and an `AnalyzeConfig` in, an `AnalysisResult` out (pure: no MLflow,
no Optuna, no pyplot; only `files` writes files). The formulas live in `tc.core`; here they meet a run.

    inputs       what an analysis gets besides checkpoints and data: `RunContext`, `initial_state` (θ_0)
    splits       what it evaluates: the cuts, the checkpoint selection, the sample splits (`EvalSplit`)
    run          `analyze_run`: the one owner of an analysis, running each metric family below in turn
    composites   the forward passes of the consistency family: `Plan`, composite outputs, whole networks
    consistency  the consistency family (tc_*, tc_full, tc_gain, tc_excess, kappa, drift, half-life, corruptions):
                 `consistency_analysis` and its steps
    controls     its controls: the cross-seed composite and the bf16 agreement
    anisotropy   the anisotropy family (aniso_*): drift and gradient-noise spectra, the perturbation test
    baselines    the baseline generalization measures gm_* on the final checkpoint
    mmd          the feature MMD tc_mmd
    registry     the one list of every logged metric with its meaning (`METRICS`, `HEADLINE`), means over cuts
    result       `AnalysisResult`: tables, metrics, summary, and the figures drawn from them
    plots        the figures (`matplotlib.figure.Figure` objects; never shown, never written)
    files        a result as files in a directory: CSV tables, summary.json, PNG figures (`write_files`)
    surrogates   the sweep's cheap surrogates of tc_test (the same analysis on fewer checkpoints and samples)
"""
