#!/usr/bin/env bash
# Set up on a fresh machine, then run mmq's main job on its built-in generated data set.
# Installs into the Python that scripts/_python.sh picks (a project .venv on an
# externally managed system Python).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python.sh
"$PY" -m pip install --quiet -e .
"$PY" -m mmq.cli demo "$@"
