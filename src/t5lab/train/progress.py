"""The training progress bar: optimizer steps out of ``train.max_steps``.

Lightning's bars count the batches of the current epoch and label them ``Epoch N/max_epochs-1``,
which reads "Epoch 9/-2" for a run bounded by ``max_steps`` alone (``max_epochs=-1``). t5lab runs are
step-bounded, so one bar spans the whole run: ``global_step`` of ``max_steps`` (or of
``max_epochs`` x batches per epoch when only epochs bound it), the epoch in its label.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


def run_total(max_steps: int, max_epochs: int | None, steps_per_epoch: float) -> float:
    """Optimizer steps of the whole run: ``max_steps`` when set (> 0), else epochs x steps per epoch
    (``inf`` when neither bounds it)."""
    if max_steps is not None and max_steps > 0:
        return max_steps
    if max_epochs is not None and max_epochs > 0 and math.isfinite(steps_per_epoch):
        return max_epochs * steps_per_epoch
    return math.inf


class StepProgressBar(TQDMProgressBar):
    """One bar for the run: ``step 120/600`` with the epoch and the logged metrics beside it."""

    def _total(self, trainer: Any) -> float:
        per_epoch = self.total_train_batches / max(trainer.accumulate_grad_batches, 1)
        return run_total(trainer.max_steps, trainer.max_epochs, per_epoch)

    def on_train_epoch_start(self, trainer: Any, *_: Any) -> None:
        bar = self.train_progress_bar
        total = self._total(trainer)
        bar.total = None if math.isinf(total) else int(total)
        bar.n = trainer.global_step
        bar.set_description(f"step (epoch {trainer.current_epoch})")
        bar.refresh()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar.disable or (step % max(self.refresh_rate, 1) and step != bar.total):
            return
        bar.n = step
        bar.set_postfix(self.get_metrics(trainer, pl_module))
        bar.refresh()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        bar = self.train_progress_bar
        if not bar.disable:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()
