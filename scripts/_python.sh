# Sourced by scripts/demo.sh, scripts/test.sh and .ci/run: sets PY, the Python that mmq
# is installed into and run with, so that the README's two commands work on any machine
# with a python3 and a Rust toolchain:
#   - MMQ_PYTHON, when set, as given;
#   - an active virtualenv (VIRTUAL_ENV) or any python3 whose environment accepts
#     packages (pyenv, conda, a container's, a user's), as is;
#   - a python3 whose environment is externally managed (PEP 668: the system Python of
#     Debian, Ubuntu, Fedora...), where `pip install` is refused: a project virtualenv,
#     .venv, created once and reused.
if ! command -v cargo >/dev/null 2>&1; then
    echo "mmq: building needs a Rust toolchain (cargo): https://rustup.rs" >&2
    exit 1
fi
if [ -n "${MMQ_PYTHON:-}" ]; then
    PY=$MMQ_PYTHON
elif ! command -v python3 >/dev/null 2>&1; then
    echo "mmq: needs python3 (3.9 or newer)" >&2
    exit 1
elif [ -z "${VIRTUAL_ENV:-}" ] && python3 -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    if [ ! -x .venv/bin/python ]; then
        echo "mmq: $(command -v python3) is externally managed (PEP 668): creating the project virtualenv .venv" >&2
        python3 -m venv .venv || {
            echo "mmq: cannot create .venv; install the venv module (Debian/Ubuntu: apt install python3-venv)" >&2
            exit 1
        }
    fi
    PY=$PWD/.venv/bin/python
else
    PY=python3
fi
export PY
