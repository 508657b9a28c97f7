"""`t5lab bench`: speed measured side by side against the transformers reference.

>>> from t5lab.bench import run_bench
>>> rows = run_bench(["lm_training"], shape="tiny", repeats=2)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform

from t5lab.bench.core import Comparison, Measurement, interleaved
from t5lab.fileio import atomic_write_text

__all__ = ["Comparison", "Measurement", "interleaved", "run_bench", "format_table", "markdown_table"]


def run_bench(cases: list[str] | None = None, shape: str | None = None, repeats: int = 3,
              out: str | os.PathLike | None = None, **options) -> list[Comparison]:
    """Run the named comparisons (all when None) and optionally write the raw numbers as JSON.

    Args:
        cases: names from :data:`t5lab.bench.cases.CASES` (None: all but the opt-in ones,
            :data:`t5lab.bench.cases.OPT_IN`: time_to_accuracy runs only when named).
        shape: "small" or "tiny"; None keeps each case's own default.
        repeats: timed rounds per candidate (after warm-up), interleaved.
        out: path of a JSON file with every row, its ratio and the machine it ran on.
    """
    import torch

    from t5lab.bench.cases import CASES, OPT_IN
    from t5lab.errors import T5LabError

    names = [n for n in CASES if n not in OPT_IN] if not cases else cases
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise T5LabError(f"unknown bench case(s) {unknown}; choose from {sorted(CASES)}")
    rows: list[Comparison] = []
    for name in names:
        kwargs = dict(repeats=repeats, **options.get(name, {}))
        if shape is not None and "shape" in CASES[name].__code__.co_varnames:
            kwargs["shape"] = shape
        rows.extend(CASES[name](**kwargs))
    if out is not None:
        payload = {
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpus": os.cpu_count(), "torch": torch.__version__,
                        "threads": torch.get_num_threads()},
            "rows": [r.as_dict() for r in rows],
        }
        atomic_write_text(out, json.dumps(payload, indent=2))
    return rows


def format_table(rows: list[Comparison]):
    """A rich table: case, candidate vs reference, both values, the ratio and the target."""
    from rich.table import Table

    table = Table(title="t5lab bench (medians of interleaved repeats)")
    for col in ("case", "candidate", "reference", "metric", "candidate", "reference", "ratio", "target"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*format_row(r))
    return table


def _num(x: float | None, fmt: str = ".4g", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{suffix}"


def format_row(r: Comparison) -> list[str]:
    """The table cells of one row (``-`` where a record has no reference)."""
    return [r.case, r.candidate, r.reference, r.metric, _num(r.candidate_value), _num(r.reference_value),
            _num(r.raw_ratio, ".2f", "x"), r.target]


def markdown_table(rows: list[Comparison]) -> str:
    """The same table as Markdown (for docs/benchmarks.md)."""
    head = ["case", "candidate", "reference", "metric", "candidate", "reference", "ratio", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(format_row(r)) + " |" for r in rows]
    return "\n".join(lines)
