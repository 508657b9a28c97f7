"""Position encodings of the owned T5 core, as small pure functions (torch only).

``config.position_encoding`` picks one (docs/positions.md):

- ``"relative"`` (default): T5's learned relative position bias over log-spaced buckets (Raffel
  et al. 2020, arXiv:1910.10683, sec. 2.1; t5x ``_relative_position_bucket``), computed by
  :func:`t5lab.models.masks.t5_relative_position_bucket`; ``relative_attention_max_exact`` sets
  how many of the buckets of one direction hold one distance each.
- ``"absolute"``: a learned ``(max_position_embeddings, d_model)`` table added to the token
  embeddings at the input of each stack (GPT-2 / BERT, Devlin et al. 2019, arXiv:1810.04805).
- ``"sinusoidal"``: the fixed table of Vaswani et al. 2017 (arXiv:1706.03762, sec. 3.5),
  :func:`sinusoidal_embeddings`, added like the learned one; computed, not a weight.
- ``"rotary"``: RoPE (Su et al. 2021, RoFormer, arXiv:2104.09864, sec. 3.2-3.4) on the queries and
  keys of self-attention, :func:`rotary_angles` / :func:`apply_rotary`, in the paper's
  *interleaved* layout: dimensions ``(2i, 2i+1)`` form one 2x2 rotation.
- ``"none"``: no position information (NoPE, Kazemnejad et al. 2023, arXiv:2305.19466); a causal
  stack still orders its tokens through the mask.

Position ids are 0-based token positions ``(B, T)``: :func:`position_ids_from_mask` derives them
from a padding mask (so a left-padded row is positioned as it would be alone), packed rows use
:func:`t5lab.models.masks.segment_positions`; a prefix LM with ``target_positions="restart"`` counts
its target from 1 again (:func:`restart_position_ids`; ``"pairs"``: every second target token),
and with ``target_positions="digits"`` every digit is numbered by its significance in its number
(:func:`digit_position_ids`). Cross-attention carries no positions, as in T5.
"""

from __future__ import annotations

from typing import Any

import torch

from t5lab.models.masks import segment_starts

POSITION_ENCODINGS = ("relative", "absolute", "sinusoidal", "rotary", "none")

# encodings that add a vector to the token embeddings at the stack input
ADDITIVE = ("absolute", "sinusoidal")


def position_encoding_of(config: Any) -> str:
    """``config.position_encoding``; ``"relative"`` for configs without the field (a plain T5Config)."""
    return getattr(config, "position_encoding", None) or "relative"


def needs_position_ids(config: Any) -> bool:
    """Whether the stack needs token positions (everything but relative buckets and NoPE)."""
    return position_encoding_of(config) in ("absolute", "sinusoidal", "rotary")


def check_position_config(config: Any, bidirectional: bool) -> None:
    """Raise a one-line ``ValueError`` for position settings that cannot work.

    Args:
        config: A T5-style config with the position fields (missing fields take their defaults).
        bidirectional: The variant has a bidirectional (encoder) stack, whose relative buckets are
            split into two directions: ``relative_attention_max_exact`` must fit in half of them.
    """
    encoding = getattr(config, "position_encoding", "relative")
    if encoding not in POSITION_ENCODINGS:
        raise ValueError(
            f"position_encoding={encoding!r} is unknown; use one of {', '.join(POSITION_ENCODINGS)}"
        )
    # the fields' types too, for a config class whose @strict checks do not run (t5lab's own run them:
    # t5lab.models.strict_types.typed_fields)
    max_exact = getattr(config, "relative_attention_max_exact", None)
    if max_exact is not None and (isinstance(max_exact, bool) or not isinstance(max_exact, int)):
        raise ValueError(f"relative_attention_max_exact={max_exact!r} must be an integer or None (T5's half)")
    base = getattr(config, "rotary_base", 10000.0)
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 1:
        raise ValueError(f"rotary_base={base!r} must be a number > 1 (RoFormer uses 10000)")
    max_positions = getattr(config, "max_position_embeddings", 512)
    # the range only matters for the absolute table (pseudo_dec's own check covers its encoder's)
    if isinstance(max_positions, bool) or not isinstance(max_positions, int) or (
        encoding == "absolute" and max_positions < 1
    ):
        raise ValueError(f"max_position_embeddings={max_positions!r} must be an integer >= 1 (the longest sequence)")
    if max_exact is not None:
        num_buckets = config.relative_attention_num_buckets
        per_direction = num_buckets // 2 if bidirectional else num_buckets
        if not 1 <= max_exact <= per_direction:
            raise ValueError(
                f"relative_attention_max_exact={max_exact} must be between 1 and the buckets of one direction, "
                f"{per_direction} (relative_attention_num_buckets={num_buckets}"
                f"{', halved for the bidirectional encoder' if bidirectional else ''}); raise the bucket count"
            )
        max_distance = config.relative_attention_max_distance
        if max_exact < per_direction and max_distance <= max_exact:
            raise ValueError(
                f"relative_attention_max_distance={max_distance} must exceed relative_attention_max_exact="
                f"{max_exact}: the log-spaced buckets cover the distances between them"
            )
    if encoding == "rotary" and config.d_kv % 2:
        raise ValueError(f"position_encoding='rotary' rotates pairs of dimensions: d_kv must be even, got {config.d_kv}")


# ---------------------------------------------------------------------------------------------
# position ids
# ---------------------------------------------------------------------------------------------


def position_ids_from_mask(
    attention_mask: torch.Tensor | None, length: int, past: int | torch.Tensor = 0, device: torch.device | None = None
) -> torch.Tensor:
    """Positions ``(B | 1, length)`` of the ``length`` new tokens that follow ``past`` cached ones.

    With a 2D padding mask ``(B, past + length)`` (1 on real tokens) a token's position is the
    number of real tokens before it, ``cumsum(mask) - 1`` (as transformers' ``generate`` computes
    ``position_ids``), so left padding does not shift a row; padding positions get 0. Without a
    mask (or a 4D one, which says nothing about padding) the positions are ``past .. past+length-1``.
    """
    if attention_mask is not None and attention_mask.dim() == 2:
        if isinstance(past, int) and attention_mask.shape[-1] < past + length:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[-1]} positions but there are {past} cached + "
                f"{length} new tokens"
            )
        mask = attention_mask.to(device=device, dtype=torch.long) if device is not None else attention_mask.long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        index = torch.arange(length, device=positions.device) + past  # (T,), past may be a 0-d tensor
        return positions.index_select(-1, index)  # (B, T)
    return (torch.arange(length, device=device) + past)[None]  # (1, T)


def _segment_cumsum(values: torch.Tensor, segment_ids: torch.Tensor | None) -> torch.Tensor:
    """``cumsum(values)`` along the last dim, restarted at every segment start (``segment_ids`` changes)."""
    total = values.cumsum(-1)  # (B, L)
    if segment_ids is None:
        return total
    starts = segment_starts(segment_ids)
    # the running total just before each segment's first token; cumsum never decreases, so cummax
    # carries it over the segment
    base = torch.where(starts, total - values, torch.zeros_like(total)).cummax(dim=-1).values
    return total - base


def restart_position_ids(
    prefix_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    length: int | None = None,
    past: int | torch.Tensor = 0,
    per: int = 1,
) -> torch.Tensor:
    """Positions that restart at the target of a prefix LM, as T5's two stacks count them.

    A prefix (input) token's position is the number of real prefix tokens before it (0, 1, ...);
    a target token's is the number of real target tokens up to and including it (1, 2, ...):
    position 0 of the target belongs to the last prefix token (the ``</s>`` separator), which
    predicts the first target token as T5's decoder-start position does. Input position ``j`` and
    the target position that predicts output ``j`` then share one number, as the encoder's and the
    decoder's positions do in an encoder-decoder. Padding (``attention_mask == 0``) gets 0.

    With ``per=2`` a target position advances every second target token (``target_positions="pairs"``):
    a target that writes each input token before its output (``data.echo_input``: ``s0 v0 s1 v1 ...``)
    gives ``s_j`` position ``j`` and ``v_j`` position ``j + 1``: each token that predicts an output
    for input ``j`` (``v_{j-1}`` predicting ``s_j``, ``s_j`` predicting ``v_j``) carries ``j``.

    Args:
        prefix_mask: ``(B, K)`` 1 on the prefix, over the cached and the new tokens.
        attention_mask: ``(B, K)`` 1 on real tokens, or None (every token is real).
        segment_ids: ``(B, K)`` packed segments: counts restart in each segment.
        length: How many new tokens (the last ``length`` of the ``K`` after ``past``); None: all.
        past: Cached tokens before them.
        per: Target tokens per target position (1: each its own).

    Returns:
        ``(B, length)`` long positions.
    """
    if per < 1:
        raise ValueError(f"per={per!r}: give the number of target tokens per position, an integer >= 1")
    prefix = prefix_mask.long()
    real = attention_mask.long() if attention_mask is not None else torch.ones_like(prefix)
    in_prefix = prefix * real
    in_target = (1 - prefix).clamp(min=0) * real
    positions = torch.where(
        in_prefix.bool(),
        _segment_cumsum(in_prefix, segment_ids) - 1,
        _segment_cumsum(in_target, segment_ids) // per,
    )
    positions = positions * real  # padding: 0
    if length is None:
        return positions
    index = torch.arange(length, device=positions.device) + past  # (T,); past may be a 0-d tensor
    return positions.index_select(-1, index)


def _run_index(member: torch.Tensor) -> torch.Tensor:
    """1-based index of each member token within its run of consecutive members (0 elsewhere)."""
    member = member.long()
    total = member.cumsum(-1)  # (B, K)
    # the count at the last non-member before each token; cumsum never decreases, so cummax carries it
    base = torch.where(member.bool(), torch.zeros_like(total), total).cummax(dim=-1).values
    return (total - base) * member


def digit_position_ids(
    input_ids: torch.Tensor,
    prefix_mask: torch.Tensor,
    digit_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Abacus-style positions: a digit's position is its significance in its number.

    After McLeish et al. 2024 ("Transformers Can Do Arithmetic with the Right Embeddings",
    arXiv:2405.17399, sec. 3.1), who number each digit by its index in its number with the numbers
    written least significant digit first. Here the input (prefix) keeps the task's own order, most
    significant digit first, so its digits are counted from the end of their number (units 1, tens
    2, ...), and the target is taken to be written least significant digit first
    (``data.reverse_target``), so its digits are counted from the start of their number. A sum digit
    and the operand digits of the same significance then share one position. Every other token
    (separators, eos, padding) gets 0; a number never runs across the prefix/target boundary.

    Args:
        input_ids: ``(B, K)`` the whole sequence (cached and new tokens).
        prefix_mask: ``(B, K)`` 1 on the prefix.
        digit_ids: ``(D,)`` the token ids of the digits 0-9.
        attention_mask: ``(B, K)`` 1 on real tokens, or None.

    Returns:
        ``(B, K)`` long positions.
    """
    digit = torch.isin(input_ids, digit_ids.to(input_ids.device))
    if attention_mask is not None:
        digit = digit & attention_mask.to(input_ids.device).bool()
    prefix = prefix_mask.to(input_ids.device).bool()
    from_end = _run_index((digit & prefix).flip(-1)).flip(-1)  # prefix digits, counted from the right
    from_start = _run_index(digit & ~prefix)  # target digits, counted from the left
    return from_end + from_start


# ---------------------------------------------------------------------------------------------
# sinusoidal table (Vaswani et al. 2017, sec. 3.5)
# ---------------------------------------------------------------------------------------------


def sinusoidal_embeddings(position_ids: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """``PE(pos, 2i) = sin(pos / base^(2i/d))``, ``PE(pos, 2i+1) = cos(pos / base^(2i/d))``.

    Args:
        position_ids: Long tensor ``(..., T)``.
        dim: Model width ``d`` (an odd ``d`` drops the last cosine).
        base: 10000 in the paper.

    Returns:
        Float32 tensor ``(..., T, dim)``.
    """
    exponents = torch.arange(0, dim, 2, device=position_ids.device, dtype=torch.float32) / dim  # 2i/d
    angles = position_ids.to(torch.float32)[..., None] / base**exponents  # (..., T, ceil(d/2))
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (..., T, 2*ceil(d/2)), interleaved
    return table[..., :dim]


# ---------------------------------------------------------------------------------------------
# rotary (Su et al. 2021, RoFormer)
# ---------------------------------------------------------------------------------------------


def rotary_angles(
    position_ids: torch.Tensor, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of the angles ``m * theta_i``, ``theta_i = base^(-2i/d)`` (RoFormer eq. 15), ``i < d/2``.

    Args:
        position_ids: Long tensor ``(B, T)`` (``m``).
        dim: Head width ``d`` (even).
        base: 10000 in the paper.
        dtype: Dtype of the result (the angles are computed in float32).

    Returns:
        ``cos``, ``sin``, each ``(B, 1, T, d/2)``: broadcast over the heads of ``(B, H, T, d)``.
    """
    inv_freq = base ** -(torch.arange(0, dim, 2, device=position_ids.device, dtype=torch.float32) / dim)  # (d/2,)
    angles = position_ids.to(torch.float32)[..., None] * inv_freq  # (B, T, d/2)
    return angles.cos()[:, None].to(dtype), angles.sin()[:, None].to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair ``(x_2i, x_2i+1)`` by its angle (RoFormer eq. 34, the interleaved layout).

    ``[x_2i, x_2i+1] -> [x_2i cos - x_2i+1 sin, x_2i sin + x_2i+1 cos]``. Why interleaved and not
    GPT-NeoX's "rotate half" (pairs ``(i, i + d/2)``): it is the paper's matrix as written, so the
    test checks it against the 2x2 definition directly; both are the same model up to a fixed
    permutation of the q/k projection rows.

    Args:
        x: ``(B, H, T, d)`` queries or keys.
        cos, sin: ``(B | 1, 1, T, d/2)`` from :func:`rotary_angles`.

    Returns:
        Tensor like ``x``.
    """
    even, odd = x[..., 0::2], x[..., 1::2]  # (B, H, T, d/2)
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)  # (B, H, T, d/2, 2)
    return rotated.flatten(-2)
