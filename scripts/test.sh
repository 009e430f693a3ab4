#!/usr/bin/env bash
# The test command: install, lint, run the suite (slow-marked tests excluded; `pytest -m slow` runs them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m ruff check src tests benchmarks
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pytest -q -p no:cacheprovider
