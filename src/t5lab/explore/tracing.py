"""Trace the encoder and decoder calls of a model, e.g. during ``generate()``.

``print(tr)`` after ``with trace(model) as tr: model.generate(...)`` shows what the KV cache buys:
the encoder runs once, then the decoder once per new token, each time on one new position with a
cache that has grown by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from t5lab.compat import passed_cache
from t5lab.explore._common import SEQ2SEQ, model_kind


@dataclass
class TraceEvent:
    """One forward call: which part ran, on what input, with how much cache."""

    index: int
    part: str  # "encoder" or "decoder"
    input_shape: tuple[int, ...]  # (B, T) of input_ids / inputs_embeds[..., 0]
    cache_length: int  # positions already in the self-attention KV cache (0 without a cache)
    mask_shape: tuple[int, ...] | None  # None: no mask passed (transformers drops an all-ones mask)


@dataclass
class Trace:
    """The ordered calls recorded by :func:`trace`."""

    events: list[TraceEvent] = field(default_factory=list)

    def calls(self, part: str) -> list[TraceEvent]:
        """The events of one part ("encoder" or "decoder")."""
        return [e for e in self.events if e.part == part]

    @property
    def cache_lengths(self) -> list[int]:
        """The cache length seen by each decoder call."""
        return [e.cache_length for e in self.calls("decoder")]

    def summary(self) -> str:
        """One line: number of encoder and decoder calls and the cache length of each decoder call."""
        enc, dec = self.calls("encoder"), self.calls("decoder")
        return (
            f"{len(enc)} encoder call(s), {len(dec)} decoder call(s); "
            f"decoder cache lengths {self.cache_lengths}"
        )

    def __str__(self) -> str:
        lines = [f"{'#':>3}  {'part':<8} {'input (B, T)':<14} {'cache':>5}  mask"]
        for e in self.events:
            shape = "(" + ", ".join(map(str, e.input_shape)) + ")"
            mask = "-" if e.mask_shape is None else "(" + ", ".join(map(str, e.mask_shape)) + ")"
            lines.append(f"{e.index:>3}  {e.part:<8} {shape:<14} {e.cache_length:>5}  {mask}")
        lines.append(self.summary())
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.events)


def _cache_length(cache: Any) -> int:
    if cache is None:
        return 0
    if isinstance(cache, (tuple, list)):  # legacy tuple cache: ((k, v), ...) with k (B, H, T, D)
        return int(cache[0][0].shape[-2]) if cache and cache[0] else 0
    length = cache.get_seq_length()
    return int(length.item() if torch.is_tensor(length) else length)


def _input_shape(args: tuple, kwargs: dict) -> tuple[int, ...]:
    x = kwargs.get("input_ids")
    if x is None and args and torch.is_tensor(args[0]):
        x = args[0]
    if x is None:
        embeds = kwargs.get("inputs_embeds")
        return tuple(embeds.shape[:-1]) if embeds is not None else ()
    return tuple(x.shape)


@contextmanager
def trace(model: Any) -> Iterator[Trace]:
    """Record every encoder and decoder call made inside the ``with`` block.

    Seq2seq models (``t5``, ``pseudo_dec``) are traced at their encoder and decoder stacks; causal
    LMs (``decoder_only``, ``gpt2``) at the model itself (every call is a decoder call).

    Yields:
        A :class:`Trace` that fills up as the model runs; ``print`` it for a table.
    """
    record = Trace()

    def make_hook(part: str):
        def hook(_module, args, kwargs):
            mask = kwargs.get("attention_mask")
            record.events.append(
                TraceEvent(
                    index=len(record.events),
                    part=part,
                    input_shape=_input_shape(args, kwargs),
                    cache_length=_cache_length(passed_cache(kwargs)) if part == "decoder" else 0,
                    mask_shape=tuple(mask.shape) if torch.is_tensor(mask) else None,
                )
            )

        return hook

    if model_kind(model) == SEQ2SEQ:
        targets = [("encoder", model.get_encoder()), ("decoder", model.get_decoder())]
    else:
        targets = [("decoder", model)]
    handles = [m.register_forward_pre_hook(make_hook(part), with_kwargs=True) for part, m in targets]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()
