"""A length curriculum: training batches drawn from short inputs first, then from all of them.

``data.curriculum: {start: S, steps: N}`` limits training step ``t < N`` to examples whose input
has at most :func:`length_limit` tokens: ``S`` at step 0, growing linearly to the longest training
input at step ``N``; from step ``N`` on, batches are the usual ones (the epoch's permutation, or
its length buckets). "Start with the easy examples and let the limit grow" is Bengio et al. 2009,
"Curriculum learning" (ICML, sec. 2); the linear growth of the length limit is the sequence
length warm-up of Li et al. 2022, arXiv:2108.06084 (sec. 4), here a filter on whole examples,
because a synthetic task's target belongs to its whole input and cannot be truncated with it.

An input's length is ``len(example.prompt)``: the tokens generation starts from, eos included
(the encoder input of seq2seq variants, ``input </s>`` of decoder-only ones), so one setting
means the same inputs for every variant with one tokenizer.

Exact resume and DDP need the batches to be a pure function of the data seed and the position in
training: batch ``k`` of epoch ``e`` is global batch ``g = e * batches_per_epoch + k``; while
``g`` is under the curriculum its examples are drawn (without replacement within the batch) from
the eligible ones by a generator seeded with ``(seed, g)``, and every rank takes its slice of the
same draw, so ranks never see the same example in one step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler


def length_limit(step: int, start: int, steps: int, longest: int) -> int:
    """The longest input (tokens) a training step may draw under the curriculum.

    ``start`` at step 0, rising linearly (rounded down) to ``longest`` at ``steps``; ``longest``
    from then on, and never below ``start``.

    >>> [length_limit(t, start=4, steps=4, longest=12) for t in range(6)]
    [4, 6, 8, 10, 12, 12]
    """
    if step >= steps or start >= longest:
        return max(start, longest)
    return start + (longest - start) * step // steps


class CurriculumBatchSampler(Sampler[list[int]]):
    """Training batches under a length curriculum, then those of ``base``.

    Args:
        lengths: Input length (tokens) of every training example.
        base: The batch sampler used once the curriculum is over (and for the epoch length):
            :class:`t5lab.train.fast.BucketBatchSampler` or a ``BatchSampler`` over an
            :class:`t5lab.train.data.EpochSampler`.
        batch_size: Examples per batch and rank.
        start: The length limit at the first batch (tokens, eos included).
        batches: Batches under the curriculum (optimizer steps times gradient accumulation).
        seed: The data seed.
        rank: This process's rank; ``world``: the number of ranks.

    Raises:
        ValueError: ``start`` shorter than every training input (the first batch would be empty).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        base: Any,
        batch_size: int,
        start: int,
        batches: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.lengths = torch.as_tensor(list(lengths))
        shortest = int(self.lengths.min())
        if start < shortest:
            raise ValueError(
                f"data.curriculum.start={start}: every training input has more tokens (the shortest "
                f"{shortest}, eos included); set start >= {shortest}"
            )
        self.base, self.batch_size, self.start, self.batches = base, batch_size, start, batches
        self.seed, self.rank, self.world = seed, rank, world
        self.longest = int(self.lengths.max())
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start (also after a restore)."""
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)
        else:  # torch's BatchSampler over an EpochSampler
            self.base.sampler.set_epoch(epoch)

    def limit(self, batch: int) -> int:
        """The length limit of global batch ``batch``."""
        return length_limit(batch, self.start, self.batches, self.longest)

    def draw(self, batch: int) -> list[int]:
        """This rank's examples of global batch ``batch`` under the curriculum."""
        eligible = torch.nonzero(self.lengths <= self.limit(batch)).flatten()
        g = torch.Generator().manual_seed(self.seed * 100_003 + 52_711 * (batch + 1))
        need = self.batch_size * self.world
        if len(eligible) >= need:
            picked = eligible[torch.randperm(len(eligible), generator=g)[:need]]
        else:  # fewer eligible examples than one step takes: draw with replacement
            picked = eligible[torch.randint(len(eligible), (need,), generator=g)]
        return picked[self.rank :: self.world].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        first = self.epoch * len(self)
        for k, batch in enumerate(self.base):
            g = first + k
            yield self.draw(g) if g < self.batches else batch

    def __len__(self) -> int:
        return len(self.base)

