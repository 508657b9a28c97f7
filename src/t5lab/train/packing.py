"""Sequence packing: one training batch laid out in fewer, denser rows, with no cross-contamination.

Packing changes the *layout* of a batch, never its content: the ``batch_size`` examples the
sampler chose (after length bucketing, if on) are placed into rows by first-fit-decreasing bin
packing (Krell et al. 2021, *Efficient Sequence Packing without Cross-contamination*,
arXiv:2107.02027), each example a contiguous *segment*. Masks keep the segments apart: every
segment attends only to itself (block-diagonal self-attention, causal inside a target segment,
target segment ``i`` cross-attends source segment ``i`` only), so each example's loss, the
token-weighted batch loss and the gradients are those of the unpacked batch (tests/train/test_packing.py).

Why this is exact for T5: its relative position bias depends only on the distance between two
positions of a row, so inside a contiguous segment it is what the example would get alone; the
masks remove every other pair. Absolute positions (the pseudo encoder's table, GPT-2) restart at 0
in each segment (:func:`t5lab.models.masks.segment_positions`), and the decoder input is shifted
right *per segment*: each target segment starts with ``decoder_start_token_id``, never with the
previous segment's last label.

Packed batch layout (built by :meth:`t5lab.formulation.Formulation.collate_packed`):

- seq2seq (``t5``, ``pseudo_dec``): ``input_ids`` ``(R, Ls)``, ``segment_ids`` ``(R, Ls)``,
  ``labels`` ``(R, Lt)`` (-100 on padding), ``decoder_segment_ids`` ``(R, Lt)``;
- decoder-only (``decoder_only``, ``gpt2``): ``input_ids``, ``labels``, ``segment_ids`` ``(R, L)``
  and, for a prefix LM, ``prefix_mask`` ``(R, L)`` (1 on each segment's prefix).

Segment ids number the examples of a row ``1, 2, ...``; 0 is padding. A packed batch has no
``attention_mask``: the segment ids are the mask, and :func:`packed_forward` builds the 4D masks.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch

from t5lab.models import masks

# With a fixed ``data.pack_length`` the number of rows is rounded up to a multiple of this (capped
# at the batch size), so that a run sees at most ``batch_size / 8`` batch shapes: few enough for
# torch.compile (dynamic=False) / CUDA graphs to cache one graph per shape.
ROWS_MULTIPLE = 8


# ------------------------------------------------------------------------------------------------
# Bin packing
# ------------------------------------------------------------------------------------------------


def first_fit_decreasing(lengths: Sequence[int | Sequence[int]], capacity: int | Sequence[int]) -> list[list[int]]:
    """Place items into as few rows as first-fit-decreasing finds; returns rows of item indices.

    Items are taken longest first (ties: lower index first, so the result is a pure function of
    ``lengths``) and each goes into the first row where it still fits. FFD uses at most
    ``11/9 OPT + 6/9`` rows (Dósa 2007); on the length distributions of training batches it is
    near optimal (Krell et al. 2021, sec. 3). Several dimensions (an encoder and a decoder side)
    must all fit; items are then ordered by their summed length.

    Args:
        lengths: One length per item, or one tuple of lengths per item (e.g. ``(source, target)``).
        capacity: The row length, or one per dimension.

    Returns:
        Rows of item indices, in the order they were opened; every index appears exactly once and
        a row keeps its items in placement order.

    Raises:
        ValueError: An item longer than the capacity.
    """
    items = [(n,) if isinstance(n, int) else tuple(n) for n in lengths]
    cap = (capacity,) if isinstance(capacity, int) else tuple(capacity)
    for i, item in enumerate(items):
        if len(item) != len(cap) or any(a > c for a, c in zip(item, cap)):
            raise ValueError(f"item {i} has lengths {item} but rows hold {cap}; raise the row length")
    order = sorted(range(len(items)), key=lambda i: (-sum(items[i]), i))
    rows: list[list[int]] = []
    room: list[list[int]] = []  # free space of each row, per dimension
    for i in order:
        for r, free in enumerate(room):
            if all(a <= f for a, f in zip(items[i], free)):
                rows[r].append(i)
                room[r] = [f - a for f, a in zip(free, items[i])]
                break
        else:
            rows.append([i])
            room.append([c - a for c, a in zip(cap, items[i])])
    return rows


def row_count(needed: int, batch_size: int, fixed_length: bool) -> int:
    """Rows of a packed batch: as many as needed, or (fixed ``pack_length``) rounded up to a
    multiple of :data:`ROWS_MULTIPLE`, capped at the batch size (never more rows than examples)."""
    if not fixed_length:
        return needed
    return max(needed, min(batch_size, math.ceil(needed / ROWS_MULTIPLE) * ROWS_MULTIPLE))


# ------------------------------------------------------------------------------------------------
# Reading a packed batch
# ------------------------------------------------------------------------------------------------


def is_packed(batch: dict[str, Any]) -> bool:
    """Whether a training batch is packed (it carries ``segment_ids``)."""
    return "segment_ids" in batch


def num_examples(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Examples in a batch (a 0-dim tensor, no host sync): rows, or the segments of a packed batch."""
    if not is_packed(batch):
        return torch.tensor(batch["input_ids"].shape[0], device=batch["input_ids"].device)
    return batch["segment_ids"].amax(dim=1).sum()  # segments are numbered 1..k in every row


def shift_right_per_segment(labels: torch.Tensor, segment_ids: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """Teacher-forcing decoder input of a packed target row: ``shift_right`` inside each segment.

    Position ``t`` gets ``labels[t - 1]`` when ``t - 1`` lies in the same segment, else
    ``start_id`` (the first token of every segment, as in the unpacked batch); padding gets ``pad_id``.

    Args:
        labels: ``(R, Lt)`` packed labels, -100 on padding.
        segment_ids: ``(R, Lt)`` target segment ids, 0 on padding.
        start_id: ``decoder_start_token_id``.
        pad_id: ``pad_token_id``.

    Returns:
        Long tensor ``(R, Lt)``.
    """
    previous = torch.full_like(labels, start_id)
    previous[:, 1:] = labels[:, :-1]
    same = torch.zeros_like(segment_ids, dtype=torch.bool)
    same[:, 1:] = segment_ids[:, 1:] == segment_ids[:, :-1]
    shifted = torch.where(same, previous, torch.full_like(labels, start_id))
    shifted = shifted.masked_fill(shifted == -100, pad_id)
    return shifted.masked_fill(segment_ids == 0, pad_id)


# ------------------------------------------------------------------------------------------------
# The forward pass of a packed batch
# ------------------------------------------------------------------------------------------------


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool ``(B, Q, K)`` -> additive ``(B, 1, Q, K)`` (0 / dtype min): eager adds it to the scores
    and sdpa adds a float mask to T5's position bias (transformers' sdpa_attention_forward)."""
    return masks.to_additive(mask, dtype)[:, None]


def _check_backend(model: Any) -> None:
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in (None, "eager", "sdpa"):
        raise ValueError(
            f"packed batches need attn_implementation eager or sdpa (a dense 4D mask), the model uses {impl!r}; "
            "set data.packing=false or load the model with attn_implementation='sdpa'"
        )


def packed_forward(model: Any, batch: dict[str, torch.Tensor]) -> Any:
    """Run a transformers model on a packed batch, with per-segment masks; returns its ModelOutput.

    - encoder-decoder (``T5ForConditionalGeneration``, ``pseudo_dec``): runs the encoder with a
      block-diagonal mask (and per-segment ``position_ids`` where the encoder takes them: the pseudo
      encoder's absolute positions), then the model with ``encoder_outputs``, a cross mask ``(R, 1,
      Lt, Ls)`` (target segment ``i`` sees source segment ``i``), the per-segment shifted decoder
      input and a causal-within-segment decoder mask. Why not ``model(input_ids=...)``:
      ``T5ForConditionalGeneration`` hands the same ``attention_mask`` to the encoder and to the
      cross-attention, and the two need different masks.
    - a variant whose models take ``segment_ids`` (``Variant.segment_ids``: ``decoder_only``):
      ``segment_ids`` (and ``prefix_mask``) go to the model, which folds them into its mask.
    - other causal LMs (GPT-2): an explicit 4D causal-within-segment mask and per-segment
      ``position_ids``. Why not transformers' own detection of packed rows from ``position_ids``
      (``masking_utils.find_packed_sequence_indices``): it runs only without ``attention_mask``
      *and* without a cache, and GPT-2 creates a cache whenever ``use_cache`` is on (its default),
      so the segments would silently see each other (checked: 0.09 logit difference; equal with
      ``use_cache=False``, tests/train/test_packing.py).

    Args:
        model: The transformers model (not the LightningModule).
        batch: A packed batch (see the module doc).

    Returns:
        The model's output: ``logits`` in the packed layout and ``loss`` (token-weighted mean
        over every label of the batch, the same value as for the unpacked batch).

    Raises:
        ValueError: Flex attention, or a prefix mask for a model that has no prefix LM.
    """
    _check_backend(model)
    labels = batch.get("labels")
    segments = batch["segment_ids"]  # (R, Ls) or (R, L)
    dtype = model.get_input_embeddings().weight.dtype
    if "decoder_segment_ids" in batch:  # seq2seq
        target_segments = batch["decoder_segment_ids"]  # (R, Lt)
        encoder = model.get_encoder()
        extra = {}
        if "position_ids" in inspect.signature(encoder.forward).parameters:
            extra["position_ids"] = masks.segment_positions(segments)  # (R, Ls)
        encoder_outputs = encoder(
            input_ids=batch["input_ids"],
            attention_mask=_additive(masks.segment_mask(segments, segments), dtype),  # (R, 1, Ls, Ls)
            **extra,
        )
        config = model.config
        decoder_input_ids = shift_right_per_segment(
            labels, target_segments, config.decoder_start_token_id, config.pad_token_id
        )  # (R, Lt)
        if "decoder_position_ids" in inspect.signature(model.forward).parameters:
            # decoder positions (rotary / absolute, docs/positions.md) restart in each target segment
            decoder_extra = {"decoder_position_ids": masks.segment_positions(target_segments)}  # (R, Lt)
        else:
            decoder_extra = {}
        return model(
            **decoder_extra,
            encoder_outputs=encoder_outputs,
            attention_mask=_additive(masks.segment_mask(target_segments, segments), dtype),  # (R, 1, Lt, Ls)
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=_additive(
                masks.segment_mask(target_segments, target_segments, causal=True), dtype
            ),  # (R, 1, Lt, Lt)
            labels=labels,
        )
    from t5lab.variants import variant_of

    prefix = batch.get("prefix_mask")
    if variant_of(model).segment_ids:  # the model folds segment_ids (and prefix_mask) into its own mask
        return model(input_ids=batch["input_ids"], segment_ids=segments, prefix_mask=prefix, labels=labels, use_cache=False)
    if prefix is not None:
        raise ValueError(f"{type(model).__name__} has no prefix LM; a packed batch with prefix_mask needs a prefix-LM variant")
    return model(
        input_ids=batch["input_ids"],
        attention_mask=_additive(masks.segment_mask(segments, segments, causal=True), dtype),  # (R, 1, L, L)
        position_ids=masks.segment_positions(segments),
        labels=labels,
        use_cache=False,
    )


# ------------------------------------------------------------------------------------------------
# data.packing = auto
# ------------------------------------------------------------------------------------------------


def resolve_packing(setting: bool | str, kind: str, pack_length: int | None = None) -> bool:
    """Whether training batches are packed, for a ``data.packing`` setting.

    ``auto``: never for classification (one sequence per row by construction); otherwise on exactly
    when ``data.pack_length`` is set (an explicit request for fixed-length packed rows). Without it
    ``auto`` is off, from a measurement (docs/packing.md; tiny bench shape, batch 32, copy 2-24,
    one CPU thread): packing into rows of the batch's longest example ran at 0.93-0.99x the speed of
    length bucketing (on by default), which leaves less padding (2.4% vs 7.9% of the tokens) and needs
    no 4D masks; fixed-length rows with ``torch.compile`` ran at 0.84x of bucketing after 272 s of
    compiling. On a GPU it is not measured yet (no GPU here).
    """
    if kind == "classification":
        return False
    if setting != "auto":
        return bool(setting)
    return pack_length is not None
