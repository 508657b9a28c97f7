#!/usr/bin/env bash
# The README's test command: install test needs, lint, run the whole suite offline.
# Python: $PYTHON if set (CI sets it to its fresh venv), else the active virtualenv, else a `.venv`
# in the repository, created on first use (a fresh machine: never the system's site-packages).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -n "${VIRTUAL_ENV:-}" ]; then
        PYTHON="$VIRTUAL_ENV/bin/python"
    else
        [ -x .venv/bin/python ] || python3 -m venv .venv
        PYTHON="$PWD/.venv/bin/python"
    fi
fi
export PYTHON
bash scripts/install.sh --dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
"$PYTHON" -m ruff check src tests bench examples
bash scripts/pytest.sh -q "$@"
