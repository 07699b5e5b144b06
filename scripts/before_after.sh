#!/bin/bash
# The runs a before/after comparison needs (docs/house-before-after.md): the quick start and a 4-trial sweep,
# each into a fresh sqlite store under OUT. Run it once per checkout (e.g. a `git worktree` of the commit
# before a change, and one after), in the same Python environment, then compare each pair of stores with
#   python scripts/compare_stores.py sqlite:///BEFORE/qs/mlflow.db sqlite:///AFTER/qs/mlflow.db
# usage: bash scripts/before_after.sh <checkout> <out dir>
set -euo pipefail
CHECKOUT=$(cd "$1" && pwd); mkdir -p "$2/qs" "$2/sw"; OUT=$(cd "$2" && pwd)
cd "$CHECKOUT"
export PYTHONPATH=$CHECKOUT  # this checkout's tc, also in the processes `mlflow run` starts
MLFLOW_TRACKING_URI=sqlite:///$OUT/qs/mlflow.db mlflow run . --env-manager local --experiment-name tc \
    > "$OUT/qs/log.txt" 2>&1
MLFLOW_TRACKING_URI=sqlite:///$OUT/sw/mlflow.db mlflow run . --env-manager local --experiment-name tc -e sweep \
    -P n_trials=4 -P study_name=digits-demo -P search_space=examples/digits_space.yaml \
    -P storage="$OUT/sw/journal.log" > "$OUT/sw/log.txt" 2>&1
echo "runs in $OUT/qs and $OUT/sw"
