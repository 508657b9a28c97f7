"""Lightning plug-ins of a run directory: atomic checkpoints and the metrics.csv logger."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from t5lab.train.io import atomic_write, atomic_write_text

FIRST_COLUMNS = ["step", "epoch", "samples", "tokens", "train_loss", "lr"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file then renamed (a kill -9 never leaves a truncated
    ``last.ckpt``), and read with ``torch.load(weights_only=True)``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        atomic_write(path, lambda fh: torch.save(checkpoint, fh), mode="wb")

    def load_checkpoint(self, path: str | os.PathLike, map_location: Callable | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        # weights_only=True always: checkpoints hold tensors and plain Python values only
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class RunCSVLogger(Logger):
    """``metrics.csv`` in the run directory: one row per logged step, rewritten atomically.

    Rows logged at the same step (train and validation) are merged into one. Columns are
    ``step, epoch, samples, tokens, train_loss, lr`` followed by every other metric in order of
    first appearance. On resume, :meth:`truncate_after` drops rows of steps the checkpoint never saw.
    """

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: dict[int, dict[str, Any]] = {}
        self.columns = list(FIRST_COLUMNS)
        self._mtime: int | None = None
        self._sync()

    def _sync(self) -> None:
        """Re-read the file when another process (a spawned DDP worker) wrote it since we last did."""
        if not self.path.exists():
            return
        mtime = self.path.stat().st_mtime_ns
        if mtime == self._mtime:
            return
        self.rows, self.columns = {}, list(FIRST_COLUMNS)
        with open(self.path, newline="") as fh:
            for row in csv.DictReader(fh):
                step = int(row["step"])
                self.rows[step] = {k: v for k, v in row.items() if v not in ("", None)}
                for k in row:
                    if k not in self.columns:
                        self.columns.append(k)
        self._mtime = mtime

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @property
    def log_dir(self) -> str:
        return str(self.path.parent)

    @property
    @rank_zero_experiment
    def experiment(self) -> RunCSVLogger:
        return self

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the resolved config is config.yaml

    def truncate_after(self, step: int) -> None:
        """Forget rows logged after ``step`` (a resumed run logs them again)."""
        self._sync()
        self.rows = {s: r for s, r in self.rows.items() if s <= step}
        self._write()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._sync()
        step = int(metrics.get("step", step or 0))
        row = self.rows.setdefault(step, {"step": step})
        for k, v in metrics.items():
            if k == "step":
                continue
            if isinstance(v, torch.Tensor):
                v = v.item()
            if k == "epoch":
                v = int(v)
            if k in ("samples", "tokens"):
                v = int(v)
            row[k] = v
            if k not in self.columns:
                self.columns.append(k)
        self._write()

    def _write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        for step in sorted(self.rows):
            writer.writerow(self.rows[step])
        atomic_write_text(self.path, buf.getvalue())
        self._mtime = self.path.stat().st_mtime_ns

    @rank_zero_only
    def save(self) -> None:
        if self.rows:
            self._write()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()
