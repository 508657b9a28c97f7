"""Trace the encoder and decoder calls of a model, e.g. during ``generate()``.

``print(tr)`` after ``with trace(model) as tr: model.generate(...)`` shows what the KV cache buys:
the encoder runs once, then the decoder once per new token, each time on one new position with a
cache that has grown by one.

The calls are recorded at the stacks that :mod:`t5lab.explore.hooks` finds (its
:func:`~t5lab.explore.hooks.model_stacks`), so a trace and the named hook points see the same
encoder and decoder; ``trace(model, names=[...])`` also records the shape of those hook points'
activations in each call. Models outside the T5 family (GPT-2) are traced at the model itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from t5lab.compat import passed_cache
from t5lab.errors import T5LabError
from t5lab.explore._common import SEQ2SEQ, model_kind
from t5lab.explore.hooks import hooks, model_stacks, select_names


@dataclass
class TraceEvent:
    """One forward call: which part ran, on what input, with how much cache."""

    index: int
    part: str  # "encoder" or "decoder"
    input_shape: tuple[int, ...]  # (B, T) of input_ids / inputs_embeds[..., 0]
    cache_length: int  # positions already in the self-attention KV cache (0 without a cache)
    mask_shape: tuple[int, ...] | None  # None: no mask passed (transformers drops an all-ones mask)
    activations: dict[str, tuple[int, ...]] = field(default_factory=dict)  # hook point -> shape (names=)


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


def _targets(model: Any) -> list[tuple[str, Any]]:
    """(part, module) pairs whose calls are recorded: the T5 stacks, else the model's own parts."""
    try:
        return list(model_stacks(model).items())
    except T5LabError:  # not a T5-family model (GPT-2)
        if model_kind(model) == SEQ2SEQ:
            return [("encoder", model.get_encoder()), ("decoder", model.get_decoder())]
        return [("decoder", model)]


@contextmanager
def trace(model: Any, names: Any = None) -> Iterator[Trace]:
    """Record every encoder and decoder call made inside the ``with`` block.

    T5-family models are traced at their encoder and decoder stacks (a causal LM such as
    ``decoder_only`` has only the decoder); other models (``gpt2``) at the model itself (every
    call is a decoder call).

    Args:
        model: the model.
        names: hook points (names or globs, see :func:`t5lab.explore.hooks.select_names`) whose
            activation shapes are recorded in each call's ``activations``.

    Yields:
        A :class:`Trace` that fills up as the model runs; ``print`` it for a table.
    """
    record = Trace()
    chosen = select_names(model, names) if names is not None else []
    latest: dict[str, TraceEvent] = {}

    def make_hook(part: str):
        def hook(_module, args, kwargs):
            mask = kwargs.get("attention_mask")
            event = TraceEvent(
                index=len(record.events),
                part=part,
                input_shape=_input_shape(args, kwargs),
                cache_length=_cache_length(passed_cache(kwargs)) if part == "decoder" else 0,
                mask_shape=tuple(mask.shape) if torch.is_tensor(mask) else None,
            )
            record.events.append(event)
            latest[part] = event

        return hook

    def shape_of(x: torch.Tensor, point: Any) -> None:
        event = latest.get(point.stack)
        if event is not None:
            event.activations[point.name] = tuple(x.shape)

    handles = [m.register_forward_pre_hook(make_hook(part), with_kwargs=True) for part, m in _targets(model)]
    try:
        if chosen:
            with hooks(model, dict.fromkeys(chosen, shape_of)):
                yield record
        else:
            yield record
    finally:
        for handle in handles:
            handle.remove()
