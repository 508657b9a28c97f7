#!/usr/bin/env bash
# Runs pytest and makes "no tests ran" a failure: pytest exits 5 when it collected nothing (a wrong
# path, a -k that matches nothing), which must never pass as green. Python: $PYTHON, else the active
# virtualenv, else the repository's .venv (what scripts/test.sh creates), else python3.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ]; then
    PY="$VIRTUAL_ENV/bin/python"
elif [ -x "$root/.venv/bin/python" ]; then
    PY="$root/.venv/bin/python"
else
    PY=python3
fi
"$PY" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests (arguments: $*); check the test paths" >&2
    exit 1
fi
exit "$rc"
