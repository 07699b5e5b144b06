"""The tracking layer: the only part of `tc` that imports MLflow. Import the module you need; this file holds no code.

Modules, lowest first (each imports only modules above it in this list):

- `labels`: the text of run names, Markdown descriptions and tags (pure: configs and metric dicts in,
  strings out), and the sweep's `gen_gap` and `trial_attrs` (pure, light: no pandas, scipy or torch).
- `cache`: the local checkpoint cache ($TC_CACHE_DIR/checkpoints/<run id>/): privacy checks, size, pruning.
- `client`: MLflow access: the client, runs by id, params and `config.json`, metrics, child runs and how runs
  end, the default experiment, a run's training time per epoch.
- `refusals`: what a refused command leaves (one FAILED run named `refused: <reason>`, `tc.error`, exit 2),
  for every entry point and both jobs.
- `writers`: who is training a run (tags `tc.writer`, heartbeat) and whether that process is alive; the
  staging dir where a training run's files wait.
- `resume`: a run's resume state (`resume/state.pt`): read, checked, deleted; whether a run may be resumed.
- `ui`: names, descriptions and tags written onto runs (the text from `labels`).
- `analyses`: the versioned, atomic write-back of an analysis into its training run (`analysis/v<N>/` and the
  pointer tag `tc.analysis_version`), and reading the current analysis back.
- `checkpoints`: a run's checkpoints: the training callback `CheckpointCallback`, the index, verified
  downloads into the cache, and loading everything an analysis of the run needs (`load_analysis_inputs`).
- `own_loop`: logging from the user's own training loop (`tc.log_run_info`, `tc.CheckpointLogger`,
  `tc.log_checkpoint`).
- `jobs`: one path per job: `train_job` (train into a logged run) and `analyze_job` (analyze a logged run),
  which the entry points, the sweep's trials and the report call.
"""
