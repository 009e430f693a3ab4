#!/usr/bin/env bash
# The test command: install, lint, run the suite (slow-marked tests excluded; `pytest -m slow` runs them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report test opens the HTML page in headless Chromium (Debian package); install it when missing.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "could not install chromium" >&2
fi
export KDISTILL_REQUIRE_CHROMIUM=1
python3 -m ruff check src tests benchmarks
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pytest -q -p no:cacheprovider
