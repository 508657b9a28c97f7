#!/usr/bin/env bash
# The README's test command: install test needs, lint, run the whole suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
PY=${PYTHON:-python3}
"$PY" -m ruff check src tests bench examples
"$PY" -m pytest -q "$@"
