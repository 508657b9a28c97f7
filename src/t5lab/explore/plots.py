"""Metric curves of a run and side-by-side comparison of runs (a sweep read at a glance)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t5lab.errors import T5LabError
from t5lab.fileio import atomic_savefig as _atomic_savefig

X_AXES = ("step", "samples", "tokens", "epoch")


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (no display on servers)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save a figure atomically (no half-written PNG remains), at the explorer's default dpi."""
    return _atomic_savefig(fig, path, dpi=kwargs.pop("dpi", 110), **kwargs)


def _load(run_or_dir: Any) -> Any:
    from t5lab.explore.run import Run, load_run

    return run_or_dir if isinstance(run_or_dir, Run) else load_run(run_or_dir, load_model=False)


def plot_metrics(
    run_or_dir: Any,
    metrics: str | list[str] = ("val_loss", "train_loss"),
    out: str | os.PathLike = "metrics.png",
    x: str = "step",
    log_y: bool = False,
) -> Path:
    """Plot metric curves of a run against steps, samples, tokens or epochs, to a PNG.

    Args:
        run_or_dir: a :class:`~t5lab.explore.run.Run` or a run directory.
        metrics: metric column names of ``metrics.csv``.
        out: the PNG path.
        x: ``"step"``, ``"samples"``, ``"tokens"`` or ``"epoch"``.
        log_y: logarithmic y axis.

    Returns:
        The path of the PNG.

    Raises:
        T5LabError: an unknown metric or x axis.
    """
    run = _load(run_or_dir)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if x not in X_AXES:
        raise T5LabError(f"unknown x axis {x!r}; use one of {', '.join(X_AXES)}")
    for name in metrics:
        run.metrics.check(name)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in metrics:
        xs, ys = run.metrics.series(name, x=x)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
    ax.set_xlabel(x)
    ax.set_ylabel(", ".join(metrics))
    if log_y:
        ax.set_yscale("log")
    ax.set_title(run.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = atomic_savefig(fig, out)
    plt.close(fig)
    return path


def lower_is_better(metric: str) -> bool:
    """Losses and perplexities go down; accuracies and rewards go up."""
    return any(word in metric for word in ("loss", "ppl", "perplexity", "error", "kl"))


@dataclass
class CompareRow:
    """One run in a comparison."""

    run: str
    variant: str
    params: int | None
    tokens_per_s: float | None
    best: float | None
    best_step: int | None
    steps_to_threshold: int | None


@dataclass
class Comparison:
    """The result of :func:`compare`: one row per run, the threshold used, and the PNG."""

    metric: str
    threshold: float | None
    rows: list[CompareRow] = field(default_factory=list)
    out: Path | None = None

    def __str__(self) -> str:
        head = f"{'run':<28} {'variant':<13} {'params':>9} {'tokens/s':>10} {'best ' + self.metric:>16} {'steps to thr':>12}"
        lines = [head]
        for r in self.rows:
            lines.append(
                f"{r.run[:28]:<28} {r.variant:<13} {_fmt_int(r.params):>9} {_fmt(r.tokens_per_s, 1):>10} "
                f"{_fmt(r.best, 4):>16} {_fmt_int(r.steps_to_threshold):>12}"
            )
        if self.threshold is not None:
            lines.append(f"threshold: {self.metric} {'<=' if lower_is_better(self.metric) else '>='} {self.threshold:.4g}")
        return "\n".join(lines)


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _fmt_int(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def compare(
    run_dirs: list[Any],
    metric: str = "val_loss",
    out: str | os.PathLike | None = "compare.png",
    x: str = "step",
    threshold: float | None = None,
    measure_throughput: bool = True,
) -> Comparison:
    """Compare runs (e.g. variants of a sweep): one plot of their curves and a table.

    The table has per run: variant, parameter count, training throughput (tokens/s: from the
    run's logged timings, else measured now with a few forward + backward passes on its training
    batches), best value of ``metric`` and the first step where it reaches ``threshold``. Without a threshold the
    worst of the runs' best values is used, a level every run reaches, so the column reads as
    "how fast does each variant get there" (the comparison of causal decoder, non-causal decoder
    and encoder-decoder in Wang et al. 2022, arXiv 2204.05832).

    Args:
        run_dirs: run directories or loaded runs.
        metric: a column of ``metrics.csv``.
        out: PNG path (None: no plot).
        x: x axis of the plot (``"step"``, ``"samples"``, ``"tokens"``, ``"epoch"``).
        threshold: the level for "steps to reach".
        measure_throughput: measure tokens/s when the run logged no timings (loads the model).

    Returns:
        A :class:`Comparison`; ``print`` it for the table.
    """
    if not run_dirs:
        raise T5LabError("no runs to compare; give at least one run directory")
    if x not in X_AXES:
        raise T5LabError(f"unknown x axis {x!r}; use one of {', '.join(X_AXES)}")
    runs = [_load(r) for r in run_dirs]
    for run in runs:
        run.metrics.check(metric)
    lower = lower_is_better(metric)
    bests = []
    for run in runs:
        _, ys = run.metrics.series(metric)
        bests.append((min(ys) if lower else max(ys)) if ys else None)
    if threshold is None:
        valid = [b for b in bests if b is not None]
        threshold = (max(valid) if lower else min(valid)) if valid else None
    result = Comparison(metric, threshold)
    for run, best in zip(runs, bests):
        steps, ys = run.metrics.series(metric, x="step")
        reached = None
        best_step = None
        for s, y in zip(steps, ys):
            if best is not None and y == best and best_step is None:
                best_step = int(s)
            if threshold is not None and reached is None and (y <= threshold if lower else y >= threshold):
                reached = int(s)
        result.rows.append(
            CompareRow(run.name, run.variant, run.num_parameters(), run.tokens_per_second(measure_throughput), best, best_step, reached)
        )
    if out is not None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for run, row in zip(runs, result.rows):
            xs, ys = run.metrics.series(metric, x=x)
            ax.plot(xs, ys, label=f"{row.variant} ({row.run})")
        if threshold is not None and math.isfinite(threshold):
            ax.axhline(threshold, color="gray", linestyle="--", linewidth=0.8, label="threshold")
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        result.out = atomic_savefig(fig, out)
        plt.close(fig)
    return result
