#!/usr/bin/env bash
# One-time set-up on a fresh machine: torch, tc with its test and UI extras, the default data set, chromium.
# Works offline except for the package registries (PyPI, Debian). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -m)" in
  # These pairs are the ones this workplace keeps on local disk; elsewhere pip fetches them as usual.
  x86_64) torch_pins=(torch==2.14.1 torchvision==0.29.1) ;;
  aarch64) torch_pins=(torch==2.9.1 torchvision==0.24.1) ;;
  *) torch_pins=(torch torchvision) ;;
esac
python -m pip install --quiet --disable-pip-version-check "${torch_pins[@]}"
python -m pip install --quiet --disable-pip-version-check -e '.[test,ui]'

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
