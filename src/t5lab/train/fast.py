"""The harness's fast path: decide "auto" settings by device, and length-bucketed batches.

Config keys (``"auto"`` is the default of each; see docs/benchmarks.md for their measured effect):

- ``train.precision``: ``auto`` picks ``bf16-mixed`` only where bf16 matmuls are native (CUDA with
  bf16, or a CPU whose bf16 matmul rate measurably beats fp32: AMX / AVX512-BF16). On an AVX2-only
  CPU bf16 is emulated and ~100x slower than fp32, so ``auto`` is ``32`` there.
- ``train.compile``: ``auto`` compiles the training forward with ``torch.compile`` on CUDA only.
  On CPU (2 shared AVX2 cores, tiny T5: d_model 128, 2+2 layers, one thread) compiling took
  ~100-140 s per graph, and paid only where the step is overhead-bound: at batch 8, 1.58x on one
  fixed batch shape (``dynamic=False``) and 1.23x on length-bucketed batches (``dynamic=True``, one
  graph for every shape); at batch 32 a fixed shape ran 0.83x (no gain: half the step is GEMMs at
  the machine's rate); on packed fixed-shape batches (``data.pack_length=64``, two shapes) 1.05x over
  eager packing and still slower than bucketing. A ~7 ms/step saving repays ~100 s of compiling
  after ~14,000 steps, far beyond a tiny run (the quickstart is 600 steps), so ``auto`` stays off
  on CPU; set ``train.compile=true`` for long small-batch runs.
- ``train.fused_optimizer``: ``auto`` uses ``torch.optim.AdamW(fused=True)`` (one kernel per
  parameter group instead of a Python loop over tensors), except with a mixed precision
  (``16-mixed`` or ``bf16-mixed``) + gradient clipping: Lightning's ``MixedPrecision`` plugin
  refuses to clip for optimizers that unscale internally, fused AdamW among them (seen on an
  AVX512/AMX CPU, where ``precision: auto`` is ``bf16-mixed``).
- ``data.bucketing``: ``auto`` groups training examples of similar length into a batch when the
  training split's lengths vary, so that batches carry little padding (the ``group_by_length``
  idea of HF ``Trainer`` and fairseq's length-sorted batching). The order stays a pure function of
  ``(seed, epoch)``, so resume remains exact.

Everything here imports torch lazily enough to keep ``t5lab --help`` fast.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

Auto = bool | str  # True | False | "auto"


# ------------------------------------------------------------------------------------------------
# Device facts
# ------------------------------------------------------------------------------------------------


def _on_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _matmul_seconds(dtype: torch.dtype, n: int, repeats: int = 3) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up (kernel selection)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def cpu_bf16_is_fast(n: int = 256) -> bool:
    """True when this CPU multiplies bf16 matrices faster than fp32 (native AMX / AVX512-BF16).

    Below AVX512 the answer is no without measuring. On AVX512 / AMX CPUs it is measured once per
    process (a few ms): the capability string alone does not say whether the CPU has AVX512-BF16.
    A 1.2x margin keeps noise on a shared machine from flipping the answer.
    """
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return False  # AVX2 / NEON-less / default builds have no bf16 dot-product instructions
    return _matmul_seconds(torch.float32, n) > 1.2 * _matmul_seconds(torch.bfloat16, n)


def resolve_precision(precision: str, accelerator: str = "cpu") -> str:
    """The Lightning precision string for a ``train.precision`` setting (``auto`` resolved).

    Args:
        precision: ``auto``, ``32``, ``bf16-mixed`` or ``16-mixed``.
        accelerator: The ``trainer.accelerator`` setting.

    Returns:
        ``32``, ``bf16-mixed`` or ``16-mixed``.
    """
    if precision != "auto":
        return precision
    if _on_cuda(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator == "mps":
        return "32"
    return "bf16-mixed" if cpu_bf16_is_fast() else "32"


def bf16_autocast(precision: str, device: str = "cpu") -> torch.autocast:
    """The autocast Lightning's ``bf16-mixed`` plugin runs training and validation steps under
    (``MixedPrecision.autocast_context_manager``: no weight-cast cache); disabled at any other
    ``precision`` (a resolved one: ``32``, ``bf16-mixed``)."""
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16-mixed", cache_enabled=False)


def resolve_compile(setting: Auto, accelerator: str = "cpu") -> bool:
    """Whether to ``torch.compile`` the training forward (``auto``: on CUDA only; the CPU
    measurements that keep it off there are in the module doc)."""
    if setting != "auto":
        return bool(setting)
    return _on_cuda(accelerator)


def resolve_fused(setting: Auto, optimizer: str = "adamw", precision: str = "32", clip: float | None = None) -> bool:
    """Whether AdamW runs fused (``auto``: yes, unless a mixed precision with gradient clipping).

    Raises:
        ValueError: ``fused_optimizer=true`` with an optimizer that has no fused kernel, or with a
            mixed precision and gradient clipping (Lightning cannot clip those).
    """
    cannot_clip = precision in ("16-mixed", "bf16-mixed") and bool(clip)
    if setting == "auto":
        return optimizer == "adamw" and not cannot_clip
    if setting and optimizer != "adamw":
        raise ValueError(
            f"train.fused_optimizer=true: optimizer {optimizer!r} has no fused kernel; use optimizer=adamw "
            "or fused_optimizer=auto"
        )
    if setting and cannot_clip:
        raise ValueError(
            f"train.fused_optimizer=true with train.precision={precision} and gradient clipping: Lightning cannot "
            "clip an optimizer that unscales internally; use fused_optimizer=auto, precision=32 or gradient_clip_val=null"
        )
    return bool(setting)


def adamw_kwargs(setting: Auto, precision: str = "32", clip: float | None = None) -> dict[str, Any]:
    """Extra ``torch.optim.AdamW`` keyword arguments for a ``train.fused_optimizer`` setting."""
    return {"fused": True} if resolve_fused(setting, "adamw", precision, clip) else {}


def resolve_bucketing(setting: Auto, lengths: Sequence[int | tuple[int, ...]]) -> bool:
    """Whether to bucket training batches by length (``auto``: when lengths vary at all)."""
    if setting != "auto":
        return bool(setting)
    return len(set(lengths)) > 1


def maybe_compile(module: torch.nn.Module, setting: Auto, accelerator: str = "cpu") -> torch.nn.Module:
    """Compile the transformers model of a LightningModule in place, when the setting asks for it.

    ``nn.Module.compile()`` compiles the model's ``__call__`` in place, so state-dict keys,
    checkpoints and ``save_pretrained`` are those of the plain model, and ``generate`` still works
    (it calls the compiled model). ``torch.compile`` of the whole LightningModule is not used:
    dynamo (torch 2.13) fails on its dict-batch ``forward`` with an internal error.

    Returns:
        ``module`` itself (compiled in place or not).
    """
    if resolve_compile(setting, accelerator):
        getattr(module, "model", module).compile()
    return module


# ------------------------------------------------------------------------------------------------
# Length bucketing
# ------------------------------------------------------------------------------------------------


def example_length(example: Any) -> tuple[int, int]:
    """Sort key of an encoded example: (input tokens, label tokens); labels may be a class id."""
    labels = example.labels
    return len(example.input_ids), (len(labels) if isinstance(labels, list) else 0)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar-length examples, reshuffled every epoch, sharded by rank.

    Each epoch: a seeded permutation of all indices (the same one :class:`EpochSampler` would draw),
    trimmed to a multiple of ``world`` and sharded by rank; each rank cuts its shard into pools of
    ``pool`` batches, sorts every pool by length and cuts it into batches; then the batch order is
    shuffled, so that batch lengths do not rise and fall in a saw-tooth. Pools keep randomness in
    which examples meet; sorting inside a pool removes most of the padding.

    Args:
        lengths: One sort key per example (e.g. :func:`example_length`).
        batch_size: Examples per batch (the last batch of a pool may be smaller).
        seed: The data seed; the order is a pure function of ``(seed, epoch)``.
        rank: This process's rank; ``world``: the number of ranks.
        pool: Batches per sorting pool.
    """

    def __init__(
        self,
        lengths: Sequence[Any],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        pool: int = 50,
    ) -> None:
        if batch_size < 1 or pool < 1:
            raise ValueError(f"batch_size and pool must be >= 1, got {batch_size} and {pool}")
        self.lengths = list(lengths)
        self.batch_size, self.seed, self.rank, self.world, self.pool = batch_size, seed, rank, world, pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start (also after a restore)."""
        self.epoch = epoch

    def _shard(self) -> list[int]:
        n = len(self.lengths)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=g).tolist()
        order = order[: n - n % self.world]  # every rank runs the same number of steps (DDP)
        return order[self.rank :: self.world]

    def batches(self) -> list[list[int]]:
        """This epoch's batches of example indices, in training order."""
        shard = self._shard()
        size = self.pool * self.batch_size
        out: list[list[int]] = []
        for start in range(0, len(shard), size):
            chunk = sorted(shard[start : start + size], key=lambda i: self.lengths[i])  # stable
            out += [chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7_919)
        return [out[i] for i in torch.randperm(len(out), generator=g).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        per_rank = len(self.lengths) // self.world
        full, rest = divmod(per_rank, self.pool * self.batch_size)
        return full * self.pool + math.ceil(rest / self.batch_size)


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Fraction of the tokens of right-padded batches that are padding (0 = no waste)."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    return 1.0 - real / padded if padded else 0.0
