#!/usr/bin/env bash
# The main job of the README: set up, then a short training run of the spiking agent on the
# embedded default (a local Ray started in-process), then an evaluation of its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT=${OUT:-runs/quickstart}
spikerl train --method spikerl --env Pendulum-v1 --steps "${STEPS:-15000}" --seed 0 \
  --warmup-steps 1000 --out "$OUT" --force
spikerl evaluate "$(ls -d "$OUT"/checkpoints/iter_* | tail -n 1)" --episodes 10
