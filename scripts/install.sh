#!/usr/bin/env bash
# Installs t5lab (editable) and what it needs. `--dev` adds the test and lint tools.
# torch comes first, pinned to the CPU build on this disk, only when no torch is installed:
# an open `torch` requirement would otherwise pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi
"$PY" -m pip install --quiet -e ".${extras}"
