"""The files of a study directory that the runner writes and the report reads (see
:mod:`t5lab.study.runner` for the layout); both import them from here."""

from __future__ import annotations

import json
from pathlib import Path

PLAN = "plan.json"
TIMINGS = "timings.json"


def read_timings(root: Path) -> dict[str, float]:
    """Wall seconds per run directory from ``timings.json``; empty when missing or unreadable."""
    path = root / TIMINGS
    if not path.is_file():
        return {}
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError):
        return {}
