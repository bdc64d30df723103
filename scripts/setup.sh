#!/usr/bin/env bash
# Creates .venv and installs spikerl-ray with its test, nir and wandb extras. torch is installed
# first and pinned, so that pip takes the CPU build on this kind of machine instead of a CUDA
# download; the extras are installed with torch held at that version (Norse would otherwise be
# free to pull another).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[test,nir,wandb]" \
  -c <(python -c "import torch; print('torch==' + torch.__version__.split('+')[0])")
