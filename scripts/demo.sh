#!/usr/bin/env bash
# Set up on a fresh machine, then run mmq's main job on its built-in generated data set.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet -e .
mmq demo "$@"
