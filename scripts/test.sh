#!/usr/bin/env bash
# Set up everything on a fresh machine and run all tests: the Rust core (cargo test) and
# the Python package (pytest). Builds the extension in place (editable install) into the
# Python that scripts/_python.sh picks (a project .venv on an externally managed system
# Python).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python.sh
"$PY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$PY" -m pip install --quiet -e ".[test]"
cargo test --release -p mmq-core
"$PY" -m pytest tests "$@"
