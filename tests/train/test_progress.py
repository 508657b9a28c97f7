"""The progress bar counts optimizer steps of the whole run (not "Epoch 9/-2")."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch

from t5lab.train.progress import StepProgressBar, run_total


def test_run_total():
    assert run_total(600, -1, 7) == 600
    assert run_total(-1, 3, 7) == 21
    assert math.isinf(run_total(-1, -1, 7))


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.w(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(6, 2))
        return torch.utils.data.DataLoader(data, batch_size=2)  # 3 steps an epoch


def test_bar_spans_the_run_in_steps(tmp_path):
    bar = StepProgressBar()
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=7, max_epochs=-1, callbacks=[bar], logger=False,
                         enable_checkpointing=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(_Tiny())
    tqdm = bar.train_progress_bar
    assert (tqdm.n, tqdm.total) == (7, 7)  # 7 steps over 3 epochs: one bar, in steps
    assert tqdm.desc.startswith("step (epoch 2)") and "-2" not in tqdm.desc
