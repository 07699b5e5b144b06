"""The sweep: many trainings of one model family over a search space, each analyzed, then every measure ranked
against generalization across them (SPEC 6). The only package that imports Optuna. Its modules, lowest first:

- `space`: the search space: the default one fitted to the data set, loading and checking a user's, the
  settings every trial shares, a trial's values (`suggest`) and the grid of sampler=grid.
- `budget`: which trials count toward n_trials and why (`counts_toward_budget`, `budget_used`), surplus
  trials, a grid's cap.
- `study`: the Optuna study the workers share: storage, samplers re-seeded per trial, pruner, creating or
  joining it, dead workers' trials, and the loop that runs one worker's trials (`run_worker`).
- `outcomes`: how every trial ended (finished, converged, failed, crashed, pruned) and why; what the
  correlations may say at this many trials (`MIN_INTERPRETABLE_TRIALS`).
- `console`: what a sweep prints: one line per trial with the time left, and the closing lines.
- `figures`: what a sweep draws: the headline's scatter and every measure's τ, the headline marked.
- `summary`: the trials table, the converged trials, the correlation table, and the sweep run's metrics,
  figures, files (`summary.json` too) and description.
- `trial`: one trial (train each seed, analyze, return test accuracy: `objective`) and its failure policy.
- `job`: one worker end to end (`prepare`, `run_sweep`), what `entrypoints/sweep.py` calls.

The rank statistics themselves are pure and live in `tc.stats.rankcorr`, `tc.stats.bootstrap` and
`tc.stats.multiplicity`.
"""
