"""LightningDataModule: task splits -> encoded examples -> seeded, rank-sharded batches.

Exact resume needs the data order to be a pure function of (seed, epoch): :class:`EpochSampler`
draws each epoch's permutation from its own generator seeded with ``seed + epoch`` (the training
loader, a :class:`ResumableLoader`, sets the trainer's epoch at every epoch start and continues a
checkpointed epoch where it stopped), and every DataLoader gets a seeded ``generator`` so that
creating an iterator never consumes the global torch RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from t5lab.formulation import Example, Formulation
from t5lab.train.timing import phase


class EpochSampler(Sampler[int]):
    """Indices of one rank's shard; a fresh seeded permutation per epoch when ``shuffle``.

    Training shards drop the remainder so every rank runs the same number of steps (DDP needs it).
    Evaluation shards pad with ``-1`` (skipped by the metrics) so that no example is dropped or
    counted twice.
    """

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1, pad: bool = False):
        self.n, self.seed, self.shuffle, self.rank, self.world, self.pad = n, seed, shuffle, rank, world, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad:
            per_rank = math.ceil(self.n / self.world)
            order = order + [-1] * (per_rank * self.world - self.n)
        else:
            order = order[: self.n - self.n % self.world]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return math.ceil(self.n / self.world) if self.pad else self.n // self.world


class ExampleDataset(Dataset):
    """Encoded examples; index -1 (an evaluation pad) returns ``None``."""

    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[int, Example | None]:
        return i, (self.examples[i] if i >= 0 else None)


class TrainCollator:
    """Picklable collate function for training batches (needed by worker processes and spawn).

    With ``packing`` the batch's examples are packed into fewer rows
    (:meth:`Formulation.collate_packed`); the layout is a pure function of the batch, so exact
    resume and DDP sharding are unaffected.
    """

    def __init__(self, formulation: Formulation, packing: bool = False, pack_length: int | None = None):
        self.formulation = formulation
        self.packing = packing
        self.pack_length = pack_length

    def __call__(self, items: list[tuple[int, Example]]) -> dict[str, torch.Tensor]:
        examples = [e for _, e in items]
        with phase("data"):
            if self.packing:
                return self.formulation.collate_packed(examples, self.pack_length)
            return self.formulation.collate(examples)


class EvalCollator:
    """Evaluation batch: the teacher-forcing batch, generation prompts, references and indices."""

    def __init__(self, formulation: Formulation):
        self.formulation = formulation

    def __call__(self, items: list[tuple[int, Example | None]]) -> dict[str, Any]:
        with phase("data"):
            return self._collate(items)

    def _collate(self, items: list[tuple[int, Example | None]]) -> dict[str, Any]:
        first = next(e for _, e in items if e is not None) if any(e is not None for _, e in items) else None
        examples = [e if e is not None else first for _, e in items]
        f = self.formulation
        out: dict[str, Any] = {
            "batch": f.collate(examples),
            "index": torch.tensor([i for i, _ in items]),  # (B,), -1 = padding, not counted
        }
        if f.kind != "classification":
            out["prompts"] = f.collate_prompts(examples)
            width = max(len(e.target) for e in examples)
            out["target"] = torch.tensor([e.target + [-100] * (width - len(e.target)) for e in examples])  # (B, L)
        return out


class ResumableLoader(DataLoader):
    """The training DataLoader: its epoch's order comes from the trainer's epoch, and it resumes
    through Lightning's stateful-loader protocol. Two Lightning 2.6 behaviours on a restart from an
    epoch-end checkpoint made a resumed run differ from an uninterrupted one
    (tests/train/test_resume_identity.py):

    - when the epoch's last batch was not a validation step, ``TrainingEpochLoop`` finds the epoch
      not done (it waits for a validation while restarting) and asks for one more batch;
    - ``set_epoch`` is given ``epoch_progress.current.processed``, which after such a restart runs
      one ahead of ``trainer.current_epoch``: every later epoch would take the next one's order.

    So the order is set from ``epoch()`` (the trainer's current epoch; None: the sampler's own) at
    the first ``next()``, after Lightning's ``set_epoch``. Lightning keeps ``state_dict()`` (the epoch
    and the batches handed out in it) in the checkpoint (``loops.fit_loop.state_dict.combined_loader``)
    and gives it to ``load_state_dict`` before the restart's first ``iter()``, which then yields only
    the rest of that epoch: nothing after an epoch-end checkpoint.
    """

    def __init__(self, *args: Any, epoch: Callable[[], int | None] = lambda: None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = epoch
        self._position = (0, 0)  # (epoch, batches handed out in it)
        self._restored: tuple[int, int] | None = None

    def _ordering(self) -> Any:
        """What holds the epoch: the bucketing batch sampler, else the sampler (:class:`EpochSampler`)."""
        return self.batch_sampler if hasattr(self.batch_sampler, "set_epoch") else self.sampler

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self._position
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._restored = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[Any]:
        restored, self._restored = self._restored, None
        return self._batches(restored)

    def _batches(self, restored: tuple[int, int] | None) -> Iterator[Any]:
        ordering = self._ordering()
        epoch, skip = restored or (self._epoch(), 0)
        if epoch is None:
            epoch = ordering.epoch
        ordering.set_epoch(epoch)
        self._position = (epoch, skip)
        if skip >= len(self):
            return
        for i, batch in enumerate(super().__iter__()):
            if i >= skip:  # a mid-epoch restore: the batches before it were trained already
                self._position = (epoch, i + 1)
                yield batch


class T5LabDataModule(pl.LightningDataModule):
    """Batches of the train / val / test splits for one formulation.

    Args:
        formulation: How records become examples and batches.
        splits: ``{"train": [...], "val": [...], "test": [...]}`` task records.
        batch_size: Training batch size per device.
        eval_batch_size: Evaluation batch size per device.
        seed: Seeds the training order (a new permutation per epoch).
        num_workers: DataLoader workers.
        bucketing: Batch training examples of similar length (:class:`t5lab.train.fast.BucketBatchSampler`).
        packing: Pack each training batch into fewer rows (``t5lab.train.packing``; bucketing, if
            on, chooses the batch first). Evaluation batches are never packed.
        pack_length: Tokens per packed row (None: the batch's longest example).
        curriculum: ``(start, batches)`` of a length curriculum (:mod:`t5lab.train.curriculum`):
            the first ``batches`` training batches draw inputs of at most ``start`` tokens at
            first, then linearly more; None: none.
    """

    def __init__(
        self,
        formulation: Formulation,
        splits: dict[str, list[Any]],
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        bucketing: bool = False,
        packing: bool = False,
        pack_length: int | None = None,
        curriculum: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.formulation = formulation
        self.records = splits
        self.examples = {name: formulation.encode_all(records) for name, records in splits.items()}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.bucketing = bucketing  # training batches of similar length (t5lab.train.fast)
        self.packing = packing
        self.pack_length = pack_length
        self.curriculum = curriculum  # (start, batches): t5lab.train.curriculum

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, train: bool) -> DataLoader:
        examples = self.examples.get(split) or []
        rank, world = self._rank_world()
        sampler = EpochSampler(len(examples), self.seed, shuffle=train, rank=rank, world=world, pad=not train)
        if train and (self.bucketing or self.curriculum):
            from t5lab.train.fast import BucketBatchSampler, example_length

            if self.bucketing:
                batches = BucketBatchSampler([example_length(e) for e in examples], self.batch_size, self.seed, rank, world)
            else:
                batches = BatchSampler(sampler, self.batch_size, drop_last=False)
            if self.curriculum:
                from t5lab.train.curriculum import CurriculumBatchSampler

                start, n = self.curriculum
                batches = CurriculumBatchSampler([len(e.prompt) for e in examples], batches, self.batch_size,
                                                 start, n, self.seed, rank, world)
            return ResumableLoader(ExampleDataset(examples), batch_sampler=batches, collate_fn=self._train_collator(),
                                   num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed),
                                   persistent_workers=self.num_workers > 0, epoch=self._current_epoch)
        return (ResumableLoader if train else DataLoader)(
            ExampleDataset(examples),
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            collate_fn=self._train_collator() if train else EvalCollator(self.formulation),
            num_workers=self.num_workers,
            # a seeded generator: creating iterators must not draw from the global RNG
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=self.num_workers > 0,
            **({"epoch": self._current_epoch} if train else {}),
        )

    def _current_epoch(self) -> int | None:
        return self.trainer.current_epoch if self.trainer is not None else None

    def _train_collator(self) -> TrainCollator:
        return TrainCollator(self.formulation, self.packing, self.pack_length)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
