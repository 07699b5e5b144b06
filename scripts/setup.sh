#!/usr/bin/env bash
# One-time set-up on a fresh machine, into the active Python environment (best a fresh one:
# `python3 -m venv .venv && . .venv/bin/activate`): every package tc needs at the version in requirements.lock,
# hash-checked; tc itself (editable, with its test, UI and auth extras' packages, which the lock holds); the
# default data set; chromium. Works offline except for the package registries (PyPI, Debian). Safe to run again.
# `bash scripts/lock.sh` refreshes the lock.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install=(python -m pip install --quiet --disable-pip-version-check)
target=$(python -c 'import platform, sys; print(f"{platform.system()}-{platform.machine()}-{sys.version_info[0]}.{sys.version_info[1]}")')
# An environment of its own: a virtual environment, or the active conda environment (CONDA_PREFIX is its root).
if python -c '
import os, sys
conda = os.environ.get("CONDA_PREFIX")
own = sys.prefix != sys.base_prefix or (conda and os.path.realpath(conda) == os.path.realpath(sys.prefix))
sys.exit(bool(own))'; then
  echo "setup: $(command -v python) is no virtual or conda environment; the lock's versions replace what it holds" >&2
fi
if [ "$target" = Linux-x86_64-3.11 ]; then
  # The lock is resolved for this target (scripts/lock.sh). --require-hashes: every file is checked against
  # the lock's sha256, and a package missing from the lock is an error rather than an unpinned install.
  "${pip_install[@]}" --require-hashes -r requirements.lock
  # tc itself: its dependencies are all in the lock, and so is setuptools, its build backend, so no isolated
  # build environment fetches an unpinned one.
  "${pip_install[@]}" --no-deps --no-build-isolation -e .
else
  # Elsewhere the lock's markers and wheels may not apply (other Pythons pull other packages, and aarch64 gets
  # another torch): install from pyproject.toml's ranges rather than refuse, so that tc still runs there, and
  # say so, because those versions are not the ones CI tested.
  echo "setup: requirements.lock is for Linux-x86_64-3.11 and this is $target: installing from" \
       "pyproject.toml's ranges instead (newest versions that fit, not pinned, not what CI tested)" >&2
  case "$(uname -m)" in
    # The torch pair this workplace keeps on local disk for aarch64; elsewhere pip picks the newest in range.
    aarch64) torch_pins=(torch==2.9.1 torchvision==0.24.1) ;;
    *) torch_pins=(torch torchvision) ;;
  esac
  "${pip_install[@]}" "${torch_pins[@]}"
  "${pip_install[@]}" -e '.[test,ui,auth]'
fi

# Fashion-MNIST, the default data set, from Debian's package (tc decompresses it on first use).
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST not installed; run 'sudo apt-get install dataset-fashion-mnist'," \
         "or pass -P download=true to train (needs internet)" >&2
  fi
fi
# Chromium (Debian's package) for the browser tests of the MLflow UI and the README screenshots.
if ! command -v chromium >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium not installed; run 'sudo apt-get install chromium' (the UI tests skip without it)" >&2
  fi
fi
python -c "import tc, torch, mlflow, optuna; print('setup: ok (torch', torch.__version__, ', mlflow', mlflow.__version__ + ')')"
