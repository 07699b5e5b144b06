#!/bin/bash
# The GPU check of issue 21 (docs/scaling.md, "GPU check"): every analysis phase on CUDA against the same
# analysis on the CPU, on the same checkpoints, and the quick start on the GPU.
#
#   bash scripts/gpu_check.sh --prepare   # here, once: Fashion-MNIST's files into .gpu/ (git-ignored)
#   bash scripts/gpu_check.sh [OUT]       # on the GPU machine (the `device` tool: carry .gpu), results in OUT
#
# On the GPU machine it
#   1. unpacks .gpu/fashion-mnist/*.gz where torchvision reads them (TC_DATA_DIR): nothing is downloaded;
#   2. runs benchmarks/analyze_phases.py with --device cuda, then --device cpu on the same checkpoints
#      (--cache_dir: trained once), each writing its metrics and phase times as JSON;
#   3. prints every metric's CPU-vs-GPU agreement (scripts/compare_metrics.py: equal counts, |Δ| of the rest)
#      and the phase times side by side;
#   4. if mlflow is importable there, times the quick start (benchmarks/quickstart_time.py), whose analysis runs
#      on CUDA (`device=auto`); the GPU image has no mlflow: carry its wheels (the device tool's README says how).
# Each step has a timeout (170 + 170 + 200 s, at most 540 s in all), so the whole check fits one 10-minute device
# call (three 240 s steps would not).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .gpu/fashion-mnist
    exclude=$(git rev-parse --git-path info/exclude)  # a worktree's .git is a file, not a directory
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
    cp /usr/share/datasets/fashion-mnist/*.gz .gpu/fashion-mnist/
    du -sh .gpu
    exit 0
fi
OUT=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

export TC_DATA_DIR=/tmp/tc-data
raw=$TC_DATA_DIR/FashionMNIST/raw
mkdir -p "$raw"
for f in .gpu/fashion-mnist/*.gz; do
    [ -e "$f" ] || { echo "no .gpu/fashion-mnist: run 'bash scripts/gpu_check.sh --prepare' here and carry .gpu"; exit 2; }
    gunzip -c "$f" > "$raw/$(basename "$f" .gz)"
done

status=0
for dev in cuda cpu; do
    echo "== analyze_phases on $dev =="
    timeout 170 $PY benchmarks/analyze_phases.py --cache_dir /tmp/tc-phases --device "$dev" \
        --json "$OUT/phases_$dev.json" 2>&1 | tee "$OUT/phases_$dev.txt" || status=1
done
if [ -s "$OUT/phases_cuda.json" ] && [ -s "$OUT/phases_cpu.json" ]; then
    $PY scripts/compare_metrics.py "$OUT/phases_cpu.json" "$OUT/phases_cuda.json" | tee "$OUT/agreement.txt"
fi
if $PY -c "import mlflow" 2>/dev/null; then
    echo "== quick start (analysis on CUDA) =="
    timeout 200 $PY benchmarks/quickstart_time.py 2>&1 | tee "$OUT/quickstart.txt" || status=1
else
    echo "== quick start skipped: no mlflow on this machine (carry its wheels to run it) =="
fi
exit $status
