#!/usr/bin/env bash
# The test command of the README: set up, then run the whole suite (learning tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
exec python -m pytest -q -p no:cacheprovider --durations=15 "$@"
