#!/usr/bin/env bash
# Set up everything on a fresh machine and run all tests: the Rust core (cargo test) and
# the Python package (pytest). Builds the extension in place (editable install).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
python3 -m pip install --quiet -e ".[test]"
cargo test --release -p mmq-core
python3 -m pytest tests "$@"
