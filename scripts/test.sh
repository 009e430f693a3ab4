#!/usr/bin/env bash
# The test command: install into .venv (scripts/setup.sh), lint, run the suite with .venv's Python
# (slow-marked tests excluded; `.venv/bin/python -m pytest -m slow` runs them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
# The report test opens the HTML page in headless Chromium (Debian package); install it when missing.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "could not install chromium" >&2
fi
export KDISTILL_REQUIRE_CHROMIUM=1
"$PY" -m ruff check src tests benchmarks
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# two workers (pytest-xdist), one module each at a time: the tiny models spend their time in Python, not in
# torch's threads, so two processes nearly halve the wall time on 2 cores
"$PY" -m pytest -q -p no:cacheprovider -n 2 --dist loadscope
