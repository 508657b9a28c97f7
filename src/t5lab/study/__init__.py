"""Studies: architecture comparisons over seeds with confidence intervals (``t5lab study``, docs/study.md).

``plan(study_file)`` expands and checks a study, ``run_study(study_file)`` trains what has not
finished and writes the report, ``write_report(study_dir)`` rebuilds it; ``t5lab.study.stats``
holds the statistics (t-intervals, Welch's t-test) as pure functions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["plan", "run_study", "write_report"]


def __getattr__(name: str) -> Any:  # lazy: `t5lab --help` must not import torch
    if name in ("plan", "run_study"):
        from t5lab.study import runner

        return getattr(runner, name)
    if name == "write_report":
        from t5lab.study.report import write_report

        return write_report
    raise AttributeError(f"module 't5lab.study' has no attribute {name!r}")
