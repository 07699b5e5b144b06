#!/usr/bin/env bash
# Refresh requirements.lock: every package that `scripts/setup.sh` installs (tc's dependencies and all its
# extras, and what they pull in), pinned with the sha256 of every file of that version (pip's --require-hashes).
#
#   bash scripts/lock.sh            after editing pyproject.toml: re-resolve, keeping every pin that still fits
#   bash scripts/lock.sh --upgrade  move every package to the newest version the ranges (and pins below) allow
#
# With nothing changed it rewrites the committed lock byte for byte (pip-compile keeps existing pins), so
# `bash scripts/lock.sh && git diff --exit-code requirements.lock` checks that the lock is current.
# The lock is for Linux x86_64 with Python 3.11 (markers are evaluated for the Python that runs this script,
# and CI and the quick start's machine are that); scripts/setup.sh falls back to the ranges elsewhere.
# It reads pip's own configuration (index URLs, find-links), so it resolves against the same indexes that
# `pip install` uses; the lock itself names no index, so it installs from PyPI or from a mirror alike.
set -euo pipefail
cd "$(dirname "$0")/.."

# The torch pair the lock pins: the newest pair this workplace keeps on local disk (the CUDA build that PyPI
# also serves for Linux x86_64). pyproject.toml's ranges admit it; raise these, and the ranges, together.
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
# The tool that writes the lock, pinned, so that the same inputs give the same file. Only pip and pip-tools are
# pinned in this throwaway venv: their own dependencies (click, build, wheel, ...) come unpinned, which is safe
# because they only run the resolver and never reach requirements.lock.
TOOLS=(pip==23.2.1 pip-tools==7.6.2)

python=${PYTHON:-python3}
target=$("$python" -c 'import platform, sys; print(f"{platform.system()}-{platform.machine()}-{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "$target" != "Linux-x86_64-3.11" ]; then
  echo "lock: requirements.lock is resolved for Linux-x86_64-3.11; this Python is $target (set PYTHON=...)" >&2
  exit 1
fi

tools_dir=$(mktemp -d)
trap 'rm -rf "$tools_dir"' EXIT
"$python" -m venv "$tools_dir/venv"
"$tools_dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOLS[@]}"

pins=()
for p in "${TORCH_PINS[@]}"; do pins+=(--upgrade-package "$p"); done
# CUSTOM_COMPILE_COMMAND: the header names this script, not the pip-compile line it runs.
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$tools_dir/venv/bin/python" -m piptools compile \
  --quiet --no-config --generate-hashes --allow-unsafe --strip-extras --all-extras \
  --no-emit-index-url --no-emit-find-links --newline LF \
  "${pins[@]}" "$@" --output-file requirements.lock pyproject.toml
echo "lock: requirements.lock has $(grep -c '^[a-z0-9]' requirements.lock) packages"
