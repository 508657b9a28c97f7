"""Lightning plug-ins of a run directory: atomic checkpoints in the manifest, the metrics.csv
logger, and the run guard (epoch column, divergence stop, fault-injection step point)."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from t5lab import rundir
from t5lab.errors import T5LabError
from t5lab.train.io import atomic_write
from t5lab.train.timing import phase

FIRST_COLUMNS = ["step", "epoch", "samples", "tokens", "train_loss", "lr"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file then renamed (a kill -9 never leaves a truncated
    ``last.ckpt``), their sha256 announced to the run's manifest before the rename and settled
    after (t5lab.rundir), and read with ``torch.load(weights_only=True)``.

    Args:
        run_dir: The run directory whose ``manifest.json`` records the checkpoints (None: none).
    """

    def __init__(self, run_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        path = Path(path)
        run_dir = self.run_dir
        rel = rundir.relative(run_dir, path) if run_dir is not None else ""
        digest: dict[str, str] = {}

        def announce(tmp: Path) -> None:
            if run_dir is not None:
                digest[rel] = rundir.sha256_file(tmp)
                rundir.announce(run_dir, digest)

        points = ("ckpt_tmp", f"{path.stem}_ckpt_tmp")  # T5LAB_FAULT=ckpt_tmp (any) or last_ckpt_tmp
        with phase("checkpointing"):
            atomic_write(path, lambda fh: torch.save(checkpoint, fh), mode="wb", point=points, before_replace=announce)
            if run_dir is not None:
                rundir.settle(run_dir, digest)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Callable | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only=True always: checkpoints hold tensors and plain Python values only. The hash was
        # checked when the run chose this checkpoint (t5lab.train.run.choose_checkpoint).
        return rundir.load_checkpoint(path, verify_hash=False)

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        super().remove_checkpoint(path)
        if self.run_dir is not None:
            rundir.settle(self.run_dir, {}, drop=[rundir.relative(self.run_dir, path)])


def read_metrics_rows(
    path: str | os.PathLike, strict: bool = True
) -> tuple[list[str], list[tuple[int, dict[str, str]]], list[tuple[int, int | None]]]:
    """``(header, [(line number, row), ...], [(line number, step or None), ...])`` of a metrics.csv.

    Empty cells are dropped from the rows. A row with the wrong number of fields (a cut or
    hand-edited line) raises RunDirError naming its line (``strict``), or is returned in the
    third list (its step when the first field still reads as one) and kept out of the rows.
    """
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        rows, bad = [], []
        for fields in reader:
            line = reader.line_num
            if len(fields) != len(header) or (header[:1] == ["step"] and not fields[0].strip().isdigit()):
                if strict:
                    raise rundir.RunDirError(
                        f"{path} line {line}: {len(fields)} fields where the header has {len(header)} "
                        "(a cut or edited row); delete or repair that line"
                    )
                bad.append((line, int(fields[0]) if fields and fields[0].strip().isdigit() else None))
                continue
            rows.append((line, {k: v for k, v in zip(header, fields) if v != ""}))
    return header, rows, bad


class RunCSVLogger(Logger):
    """``metrics.csv`` in the run directory: one row per logged step, rewritten atomically.

    Rows logged at the same step (train and validation) are merged into one. Columns are
    ``step, epoch, samples, tokens, train_loss, lr`` followed by every other metric in order of
    first appearance; ``epoch`` is filled in every row (:class:`RunGuard` tells the logger the
    epoch of the batch being trained). On resume, :meth:`truncate_after` drops rows of steps the
    checkpoint never saw; a malformed row is dropped with a warning, never merged over a real one.
    """

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: dict[int, dict[str, Any]] = {}
        self.columns = list(FIRST_COLUMNS)
        self.epoch: int | None = None  # epoch of the batch being trained (set by RunGuard)
        self.bad: list[tuple[int, int | None]] = []  # malformed lines: (line, step), never merged
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
        header, rows, self.bad = read_metrics_rows(self.path, strict=False)
        for k in header:
            if k not in self.columns:
                self.columns.append(k)
        for _, row in rows:
            step = int(row["step"])
            self.rows.setdefault(step, {}).update(row)
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

    def truncate_after(self, step: int, drop_prefixes: tuple[str, ...] = ("test_",)) -> None:
        """Forget rows logged after ``step`` and the ``test_*`` values (a resumed run logs them again).

        A malformed row after ``step`` is dropped with a warning (the resumed run logs that step
        again); one at or before ``step`` would be lost for good: RunDirError naming the line.
        """
        self._sync()
        for line, at in self.bad:
            if at is None or at <= step:
                raise rundir.RunDirError(
                    f"{self.path} line {line}: a cut or edited row (wrong number of fields) at or before the "
                    f"checkpoint's step {step}; repair or delete that line, then resume again"
                )
            print(f"warning: {self.path} line {line}: a cut row of step {at} dropped, not merged (it is logged again)")
        rows = {s: {k: v for k, v in r.items() if not k.startswith(drop_prefixes)} for s, r in self.rows.items() if s <= step}
        self.rows = {s: r for s, r in rows.items() if set(r) - {"step", "epoch"}}
        if self.path.exists():
            self._write()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        with phase("logging"):
            self._log_metrics(metrics, step)

    def _log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
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
        if "epoch" not in row:
            row["epoch"] = self.epoch if self.epoch is not None else self._epoch_before(step)
        self._write()

    def _epoch_before(self, step: int) -> int | str:
        """The epoch of the latest row at or before ``step`` ('' when none is known)."""
        known = [s for s, r in self.rows.items() if s <= step and r.get("epoch") not in (None, "")]
        return self.rows[max(known)]["epoch"] if known else ""

    def _write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        for step in sorted(self.rows):
            writer.writerow(self.rows[step])
        atomic_write(self.path, lambda fh: fh.write(buf.getvalue()), point="metrics")
        self._mtime = self.path.stat().st_mtime_ns

    @rank_zero_only
    def save(self) -> None:
        pass  # every log_metrics call already rewrote the file

    @rank_zero_only
    def finalize(self, status: str) -> None:
        pass  # nothing buffered; after a failed write, writing again would only fail again


class DivergenceError(T5LabError):
    """Training diverged: the loss exceeded train.divergence x its first value, or a metric is non-finite."""


class RunGuard(pl.Callback):
    """Per-step duties of a run directory that Lightning has no hook for.

    - tells the metrics logger the epoch of the batch being trained (the ``epoch`` column);
    - stops a diverging run (``factor``: train.divergence) when the training loss exceeds ``factor``
      times its first value, or a validation loss is non-finite or beyond that bound: one line,
      no checkpoint of the diverged weights (checkpoints are written at epoch end, after this
      check), no DONE. The first value is floored at ln(vocabulary size), a uniform guess's loss:
      a model started from a trained ``init_from`` begins near 0, where 100 x is noise, not
      divergence. The first value is kept in checkpoints, so a resumed run judges the same way;
    - the ``step`` fault-injection point (t5lab.rundir.fault) after every training batch.

    On CUDA the loss is read on the host only at logging steps (a read every step would drain the
    device queue; t5lab.train.module does the same for its non-finite check).
    """

    def __init__(self, logger: RunCSVLogger | None, factor: float | None, run_dir: str | os.PathLike) -> None:
        self.logger = logger
        self.factor = factor
        self.run_dir = str(run_dir)
        self.first: float | None = None
        self.chance: float | None = None  # ln(vocabulary size), set at fit start

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        vocab = getattr(getattr(getattr(module, "model", None), "config", None), "vocab_size", None)
        self.chance = math.log(vocab) if isinstance(vocab, int) and vocab > 1 else None

    def state_dict(self) -> dict[str, Any]:
        return {"first": self.first}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first = state.get("first")

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.logger is not None:
            self.logger.epoch = trainer.current_epoch

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.factor is not None:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            on_cuda = isinstance(loss, torch.Tensor) and loss.device.type == "cuda"
            if loss is not None and (not on_cuda or trainer.global_step % trainer.log_every_n_steps == 0):
                self._check("train_loss", float(loss), trainer.global_step)
        rundir.fault("step")

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.factor is None or trainer.sanity_checking:
            return
        check, bad = getattr(module, "_raise_if_non_finite", None), getattr(module, "_bad_t", None)
        if check is not None and bad is not None:
            check(bad)  # a non-finite training loss not yet read (CUDA mode) is the cause: say that first
        value = trainer.callback_metrics.get("val_loss")
        if value is not None:
            self._check("val_loss", float(value), trainer.global_step)

    def _check(self, name: str, value: float, step: int) -> None:
        if name == "train_loss":
            if not math.isfinite(value):
                return  # T5LabModule stops on a non-finite training loss itself (before the update on CPU)
            if self.first is None:
                self.first = value
                return
        floored = self.first is not None and self.chance is not None and self.first < self.chance
        ref = self.chance if floored else self.first
        bound = self.factor * ref if ref is not None and self.factor is not None else math.inf
        if math.isfinite(value) and value <= bound:
            return
        if not math.isfinite(value):
            why = "is not finite"
        elif floored:
            why = (
                f"exceeds {self.factor:g} x ln(vocabulary size) {self.chance:.4g} (the first training loss "
                f"{self.first:.4g} is below a uniform guess's)"
            )
        else:
            why = f"exceeds {self.factor:g} x the first training loss {self.first:.4g}"
        ckpt = Path(self.run_dir) / "checkpoints" / "last.ckpt"
        kept = (
            f"the last good checkpoint is {ckpt} (continue with: t5lab train --resume {self.run_dir})"
            if ckpt.is_file()
            else "no checkpoint was written before it"
        )
        raise DivergenceError(
            f"training diverged at step {step}: {name} {value:.4g} {why} (train.divergence={self.factor:g}); "
            f"lower train.lr or set train.gradient_clip_val (train.divergence=null turns the check off); {kept}"
        )


# ------------------------------------------------------------------------------------------------
# Stop at a target (train.stop_at) and the wall-time breakdown (t5lab.train.timing)
# ------------------------------------------------------------------------------------------------

LOSS_LIKE = ("loss", "ppl", "perplexity", "error")


def stop_mode(metric: str, mode: str = "auto") -> str:
    """``min`` (reached when <= the value) or ``max`` (>=); ``auto`` infers it from the name:
    loss-like metrics (``*loss``, ``*ppl``, ``*perplexity``, ``*error``) are ``min``."""
    if mode != "auto":
        return mode
    return "min" if metric.endswith(LOSS_LIKE) else "max"


def stop_targets(stop_at: dict[str, Any]) -> list[tuple[str, float, str]]:
    """``train.stop_at`` as ``[(metric, value, "min" | "max"), ...]``."""
    out = []
    for metric, target in stop_at.items():
        if isinstance(target, int | float):
            out.append((metric, float(target), stop_mode(metric)))
        else:
            out.append((metric, float(target.value), stop_mode(metric, target.mode)))
    return out


def reached(targets: list[tuple[str, float, str]], metrics: dict[str, float]) -> bool:
    """Whether every target is reached (inclusive: 0.99 >= 0.99); a metric not logged is not."""
    for metric, value, mode in targets:
        got = metrics.get(metric)
        if got is None or not math.isfinite(got):
            return False
        if (got > value) if mode == "min" else (got < value):
            return False
    return True


class StopAt(pl.Callback):
    """``train.stop_at``: ends training at the first validation where every target is reached.

    Sets ``trainer.should_stop`` (Lightning's public stop signal): the epoch in progress ends, its
    epoch-end checkpoint is written, and the run goes on to its test evaluation with the stopped
    weights. Lightning's ``EarlyStopping(stopping_threshold=...)`` is not used: it compares strictly
    (a threshold of 1.0 is never passed by an exact match of 1.0), takes one metric only and keeps
    its patience counting alongside.

    When it stops, :attr:`result` holds ``{metric values, "step", "time_s"}`` (``time_s``: seconds
    since the process started, :func:`t5lab.train.timing.process_start`); it is kept in checkpoints,
    so a run resumed after the stop stops again at once and reports the first attempt's figures.
    """

    def __init__(self, stop_at: dict[str, Any]) -> None:
        from t5lab.train.timing import process_start

        self.targets = stop_targets(stop_at)
        self.result: dict[str, Any] | None = None
        self._t0 = process_start()

    def state_dict(self) -> dict[str, Any]:
        return {"result": self.result}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.result = state.get("result")

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.result is not None:
            trainer.should_stop = True  # resumed after the stop: nothing more to train

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        import time

        from lightning.pytorch.trainer.states import TrainerFn

        # only validations inside fit: a trainer.validate() after training has nothing left to stop
        if trainer.sanity_checking or self.result is not None or trainer.state.fn != TrainerFn.FITTING:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        # every rank sees the same reduced metrics; the decision is still shared so no rank trains on alone
        if not trainer.strategy.reduce_boolean_decision(reached(self.targets, metrics), all=False):
            return
        trainer.should_stop = True
        self.result = {
            **{m: metrics[m] for m, _, _ in self.targets if m in metrics},
            "step": int(trainer.global_step),
            "time_s": round(time.time() - self._t0, 3),
        }
        if trainer.global_rank == 0:
            print(f"stop_at reached: {self.describe()}")

    def describe(self) -> str:
        """One line: the metrics against their targets, the step and the time."""
        r = self.result or {}
        said = ", ".join(
            f"{m}={r[m]:.4g} {'<=' if mode == 'min' else '>='} {v:g}" for m, v, mode in self.targets if m in r
        )
        return f"{said} at step {r.get('step')}, {r.get('time_s', 0.0):.1f} s after the process started"


class TimingCallback(pl.Callback):
    """Charges training steps and evaluation loops to their parts of the run's stopwatch."""

    def __init__(self) -> None:
        from t5lab.train.timing import current

        self.watch = current()

    def _push(self, name: str) -> None:
        if self.watch is not None:
            self.watch.push(name)

    def _pop(self) -> None:
        if self.watch is not None:
            self.watch.pop()

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._push("train_steps")

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._pop()

    def on_validation_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._push("eval")

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._pop()

    on_test_start = on_validation_start
    on_test_end = on_validation_end
