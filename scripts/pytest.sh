#!/usr/bin/env bash
# Runs pytest with "$PYTHON" (default python3) and makes "no tests ran" a failure: pytest exits 5
# when it collected nothing (a wrong path, a -k that matches nothing), which must never pass as green.
set -uo pipefail
PY=${PYTHON:-python3}
"$PY" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests (arguments: $*); check the test paths" >&2
    exit 1
fi
exit "$rc"
