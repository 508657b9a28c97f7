"""Attention masks and relative-position buckets for the T5 variants, as small pure functions.

Conventions (the same as ``torch.nn.functional.scaled_dot_product_attention`` and transformers'
``masking_utils``): a boolean mask is ``True`` where a query **may** attend to a key. Square masks
have shape ``(T, T)`` or ``(B, T, T)`` indexed ``[query, key]``; padding masks have shape ``(B, T)``
with 1 on real tokens and 0 on padding. Padding masks only hide *keys*: a padding query row stays
as it is (its output is never read), exactly as transformers does it.

The "prefix LM" (Raffel et al. 2020, *Exploring the Limits of Transfer Learning*, sec. 3.2.1; t5x
``inputs_bidirectional_attention``) lets the positions of the prefix see each other in both
directions while every other position stays causal::

    allowed[q, k] = (k <= q) or (prefix[q] and prefix[k])

This module depends on torch only, so that any variant (and the explorer) can import it cheaply.
"""

from __future__ import annotations

import math

import torch

# ---------------------------------------------------------------------------------------------
# Dense boolean masks
# ---------------------------------------------------------------------------------------------


def causal_mask(seq_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Lower-triangular mask: query ``q`` may attend to keys ``k <= q``.

    Args:
        seq_len: Sequence length ``T``.
        device: Device of the result.

    Returns:
        Bool tensor of shape ``(T, T)``.
    """
    positions = torch.arange(seq_len, device=device)
    return positions[None, :] <= positions[:, None]  # (T, T): key <= query


def prefix_mask_from_lengths(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Per-row prefix indicator from prefix lengths (right padding / no padding layout).

    Args:
        lengths: Long tensor of shape ``(B,)``, the number of prefix tokens of each row.
        seq_len: Sequence length ``T``.

    Returns:
        Long tensor of shape ``(B, T)`` with 1 on the first ``lengths[b]`` positions of row ``b``.
    """
    positions = torch.arange(seq_len, device=lengths.device)
    return (positions[None, :] < lengths[:, None]).long()  # (B, T)


def prefix_lm_mask(prefix_mask: torch.Tensor) -> torch.Tensor:
    """Prefix-LM mask: causal, plus full attention among the prefix positions of each row.

    Args:
        prefix_mask: Tensor of shape ``(B, T)``, 1 (or True) on prefix positions. A row of zeros
            (prefix of length 0) gives exactly the causal mask.

    Returns:
        Bool tensor of shape ``(B, T, T)`` indexed ``[b, query, key]``.
    """
    prefix = prefix_mask.bool()
    seq_len = prefix.shape[-1]
    causal = causal_mask(seq_len, device=prefix.device)  # (T, T)
    both_in_prefix = prefix[:, :, None] & prefix[:, None, :]  # (B, T, T)
    return causal[None] | both_in_prefix


def prefix_lm_query_mask(prefix_mask: torch.Tensor, query_length: int) -> torch.Tensor:
    """Prefix-LM mask of the *last* ``query_length`` positions (the new tokens of a cached call).

    ``prefix_mask`` covers the whole sequence seen so far, ``(B, L)``; the queries are positions
    ``L - Q .. L - 1``. With ``Q == L`` this is :func:`prefix_lm_mask`. No cache offset is needed
    (the offset is ``L - Q``), so this works with a static cache's tensor-valued length too.

    Returns:
        Bool tensor ``(B, Q, L)`` indexed ``[b, query, key]``.
    """
    prefix = prefix_mask.bool()
    length = prefix.shape[-1]
    query = torch.arange(length - query_length, length, device=prefix.device)[:, None]  # (Q, 1)
    key = torch.arange(length, device=prefix.device)[None, :]  # (1, L)
    both_in_prefix = prefix[:, -query_length:, None] & prefix[:, None, :]  # (B, Q, L)
    return (key <= query)[None] | both_in_prefix


def causal_cross_mask(key_mask: torch.Tensor, query_length: int, past: int | torch.Tensor = 0) -> torch.Tensor:
    """Causal cross-attention of the pseudo decoder's causal-LM mode: query ``t`` sees keys ``<= t``.

    Decoder position ``t`` (absolute, ``past + q``) cross-attends the pseudo-encoder positions
    ``0 .. t``, which hold the input tokens ``< t`` (the encoder input is shifted right).

    Args:
        key_mask: ``(B, S)`` padding mask of the keys (1 on real positions).
        query_length: Number of queries ``Q`` of this call.
        past: Number of decoder positions already cached (an int or a 0-d tensor).

    Returns:
        Bool tensor ``(B, 1, Q, S)``, True where the query may attend to the key.
    """
    query = torch.arange(query_length, device=key_mask.device)[:, None] + past  # (Q, 1)
    key = torch.arange(key_mask.shape[-1], device=key_mask.device)[None, :]  # (1, S)
    return (key <= query)[None, None] & key_mask.bool()[:, None, None, :]


def apply_padding(mask: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Hide padding keys: ``mask[b, q, k] and attention_mask[b, k]``.

    Args:
        mask: Bool tensor of shape ``(T, T)`` or ``(B, T, T)``.
        attention_mask: Tensor of shape ``(B, T)`` with 1 on real tokens, or None (no padding).

    Returns:
        Bool tensor of shape ``(B, T, T)`` (``(T, T)`` when ``attention_mask`` is None).
    """
    if attention_mask is None:
        return mask
    keys = attention_mask.bool()[:, None, :]  # (B, 1, T)
    return (mask if mask.dim() == 3 else mask[None]) & keys


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean mask -> additive mask (0 where allowed, the dtype's minimum where not).

    The finite minimum rather than ``-inf`` keeps a fully masked row finite (uniform softmax
    instead of NaN), as transformers' ``eager_mask`` does.
    """
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.finfo(dtype).min)


# ---------------------------------------------------------------------------------------------
# Packed sequences: several examples (segments) laid out in one row
# ---------------------------------------------------------------------------------------------


def segment_mask(
    query_segments: torch.Tensor,
    key_segments: torch.Tensor,
    causal: bool = False,
    prefix_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Block-diagonal mask of a packed batch: a query sees only keys of its own segment.

    Segment ids number the examples of a row ``1, 2, ...``; 0 marks padding. This is packing
    "without cross-contamination" (Krell et al. 2021, arXiv:2107.02027): every segment attends
    exactly as it would alone in its own row. Padding queries (id 0) may attend to every key of
    their row: their outputs are never read (labels -100, and no real query attends to them), and
    a row with at least one allowed key never turns into NaN, whatever the back-end does with a
    fully masked row.

    Args:
        query_segments: Long tensor ``(B, Tq)``.
        key_segments: Long tensor ``(B, Tk)``.
        causal: Within a segment, ``k <= q`` only (self-attention, ``Tq == Tk``).
        prefix_mask: ``(B, T)``, 1 on prefix positions (prefix LM, with ``causal``): positions of
            the prefix of one segment also see each other in both directions.

    Returns:
        Bool tensor ``(B, Tq, Tk)``, True where the query may attend to the key.
    """
    same = query_segments[:, :, None] == key_segments[:, None, :]  # (B, Tq, Tk)
    same = same & (key_segments != 0)[:, None, :]
    if causal:
        order = causal_mask(query_segments.shape[1], device=query_segments.device)[None]  # (1, T, T)
        if prefix_mask is not None:
            prefix = prefix_mask.bool()
            order = order | (prefix[:, :, None] & prefix[:, None, :])  # (B, T, T)
        same = same & order
    return same | (query_segments == 0)[:, :, None]


def segment_starts(segment_ids: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool: True where a segment begins (the first token, and wherever the id changes)."""
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    return starts


def segment_positions(segment_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its segment (0 at every segment start); shape ``(B, T)``.

    Absolute position embeddings (the pseudo encoder, GPT-2) must restart in each packed segment
    so that a segment is embedded as it would be alone. A run of padding counts as one segment.
    """
    index = torch.arange(segment_ids.shape[1], device=segment_ids.device).expand_as(segment_ids)  # (B, T)
    starts = segment_starts(segment_ids)
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values  # (B, T)
    return index - start_index


# ---------------------------------------------------------------------------------------------
# Prefix checks
# ---------------------------------------------------------------------------------------------


def prefix_violations(prefix_mask: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Rows whose prefix is not a prefix: a prefix position comes after a real non-prefix one.

    Such a row would leak the future: the target position before the late "prefix" token would
    see it through the earlier prefix positions. Padding positions (``attention_mask == 0``) are
    ignored, so left padding before the prompt is fine.

    Args:
        prefix_mask: Tensor of shape ``(B, T)``.
        attention_mask: Tensor of shape ``(B, T)`` or None.

    Returns:
        Long tensor with the indices of the offending rows (empty when all rows are valid).
    """
    prefix = prefix_mask.bool()
    real = torch.ones_like(prefix) if attention_mask is None else attention_mask.bool()
    target_seen = torch.cumsum((~prefix & real).long(), dim=-1) > 0  # (B, T)
    bad = (prefix & real & target_seen).any(dim=-1)  # (B,)
    return bad.nonzero().flatten()


# ---------------------------------------------------------------------------------------------
# Relative-position buckets
# ---------------------------------------------------------------------------------------------


def relative_positions(
    query_length: int, key_length: int, past_length: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """``key_position - query_position`` for queries at ``past_length ...`` and keys at ``0 ...``.

    Returns:
        Long tensor of shape ``(query_length, key_length)``; negative = key in the past.
    """
    query = torch.arange(query_length, dtype=torch.long, device=device)[:, None] + past_length
    key = torch.arange(key_length, dtype=torch.long, device=device)[None, :]
    return key - query


def t5_relative_position_bucket(
    relative_position: torch.Tensor,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
    max_exact: int | None = None,
) -> torch.Tensor:
    """T5's relative-position buckets (Mesh TensorFlow ``_relative_position_bucket``; Raffel et al. 2020).

    Half of the buckets (of one direction) hold exact distances ``0 .. num_buckets/2 - 1``; the
    rest grow logarithmically up to ``max_distance``; farther distances share the last bucket.
    With ``bidirectional=False`` (the T5 decoder) every key after the query falls in bucket 0,
    the same bucket as distance 0.

    Args:
        relative_position: Long tensor, ``key_position - query_position``.
        bidirectional: Separate bucket ranges for keys before and after the query.
        num_buckets: Number of buckets (split in two when bidirectional).
        max_distance: Distance from which on all distances share the last bucket.
        max_exact: Exact buckets per direction (distances ``0 .. max_exact - 1`` get one each);
            None is T5's half of the buckets of one direction. With ``max_exact`` equal to the
            buckets of one direction every bucket is exact: distances ``>= max_exact - 1`` share
            the last one and ``max_distance`` is unused.

    Returns:
        Long tensor of the same shape, values in ``[0, num_buckets)``.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    if max_exact is None:
        max_exact = num_buckets // 2
    elif not 1 <= max_exact <= num_buckets:
        raise ValueError(f"max_exact={max_exact} must be between 1 and the {num_buckets} buckets of one direction")
    is_small = distance < max_exact
    if max_exact == num_buckets:  # all exact: no log-spaced range (and no log(max_distance / max_exact))
        return buckets + distance.clamp(max=num_buckets - 1)
    # clamp(min=1) only avoids log(0) on positions that take the exact branch anyway
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


def forward_relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int, max_distance: int = 128, max_exact: int | None = None
) -> torch.Tensor:
    """Buckets for keys *after* the query (forward distances ``d = key - query >= 1``).

    A T5 decoder's one-way buckets put all of these in bucket 0, so a prefix position cannot
    tell its right neighbour from a token 50 positions later. This gives them T5's own log
    bucketing instead: distance ``d`` goes to the one-way bucket of ``d - 1``, so that row 0 of a
    forward table is distance +1 and no row is wasted on distance 0 (never a forward distance).
    Non-forward positions (``d <= 0``) map to bucket 0; callers select them away.

    Args:
        relative_position: Long tensor, ``key_position - query_position``.
        num_buckets: Number of forward buckets (> 0).
        max_distance: Distance from which on all distances share the last bucket.
        max_exact: Exact buckets (see :func:`t5_relative_position_bucket`); None: half of them.

    Returns:
        Long tensor of the same shape, values in ``[0, num_buckets)``.
    """
    distance_minus_one = (relative_position - 1).clamp(min=0)
    return t5_relative_position_bucket(
        -distance_minus_one, bidirectional=False, num_buckets=num_buckets, max_distance=max_distance,
        max_exact=max_exact,
    )
