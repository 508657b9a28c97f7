"""t5lab's own T5 core: layer norm, feed-forward, attention with relative position bias, block, stack.

Every t5lab T5 variant (pseudo_dec, decoder_only, enct5, the value-head models) is built from
these parts; ``t5`` itself stays transformers' ``T5ForConditionalGeneration``. The model follows
Raffel et al. 2020, *Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer* (arXiv:1910.10683, sec. 2.1) as Mesh TensorFlow / t5x implement it, and transformers'
T5 as the reference the tests compare against (``tests/models/test_t5core.py``). Only public
transformers API is used: ``PretrainedConfig`` fields, ``activations.ACT2FN``, the ``cache_utils``
Cache classes (``update``, ``get_seq_length``, ``EncoderDecoderCache.is_updated`` /
``cross_attention_cache``) and ``modeling_outputs``.

API (what the model files build on)
-----------------------------------
Parameter names are those of transformers' T5, so every T5 checkpoint's state dict loads unchanged::

    embed_tokens, block.{i}.layer.0.SelfAttention.{q,k,v,o}, block.0.layer.0.SelfAttention.relative_attention_bias,
    block.{i}.layer.0.layer_norm, block.{i}.layer.1.EncDecAttention.{q,k,v,o}, block.{i}.layer.1.layer_norm,
    block.{i}.layer.{1|2}.DenseReluDense.{wi | wi_0, wi_1, wo}, block.{i}.layer.{1|2}.layer_norm, final_layer_norm

- ``T5LayerNorm(d_model, eps)``: RMS norm without mean or bias (T5's "layer norm").
- ``T5DenseActDense(config)`` / ``T5DenseGatedActDense(config)`` / ``T5LayerFF(config)``: the
  feed-forward kinds ``config.dense_act_fn`` / ``config.is_gated_act`` name (relu, gated-gelu, ...).
- ``relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance)``: T5's
  buckets, a pure function (:mod:`t5lab.models.masks`, with the prefix's ``forward_relative_position_bucket``).
- ``T5Attention(config, has_relative_attention_bias=False, layer_idx=None, is_decoder=False)``:
  ``forward(hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None,
  output_attentions=False) -> (output, position_bias, attention_weights | None)``;
  ``compute_bias(query_length, key_length, device=None, past_seen_tokens=0) -> (1, H, Q, K)``.
  Inside a stack ``position_bias`` is the stack's folded bias (relative bias + mask) and ``mask`` is
  None; called alone, ``position_bias=None`` computes the layer's own bias (or none) and adds ``mask``.
  Subclasses override ``compute_bias`` to change the position bias (decoder_only's prefix table puts
  one in ``block[0].layer[0].SelfAttention``: the stack asks block 0 for the bias).
  ``forward(..., rotary=(cos, sin))`` rotates the queries and new keys of self-attention (RoPE).
- ``T5LayerSelfAttention``, ``T5LayerCrossAttention``: pre-norm residual wrappers (``layer.0``, ``layer.1``).
- ``T5Block(config, has_relative_attention_bias, layer_idx, is_decoder, cross_attention)``:
  ``forward(hidden_states, attention_bias, cross_attention_bias=None, encoder_hidden_states=None,
  cache=None, output_attentions=False) -> (hidden_states, self_weights, cross_weights)``.
- ``T5Stack(config, embed_tokens=None, is_decoder=False, num_layers=None, cross_attention=None)``, an
  ``nn.Module`` that reads ``config`` (shared with the model, so ``set_attn_implementation`` reaches it):
  ``forward(input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
  inputs_embeds=None, cache=None, use_cache=None, output_attentions=None, output_hidden_states=None,
  return_dict=None, past_key_values=None) -> BaseModelOutputWithPastAndCrossAttentions`` (the cache in
  :data:`CACHE_FIELD`). ``is_decoder`` makes self-attention causal with one-way buckets;
  ``cross_attention`` (default: ``is_decoder``) adds ``layer.1.EncDecAttention``; a decoder without it
  gets a parameterless ``NoCrossAttention`` at ``layer.1`` (the feed-forward stays ``layer.2``).
  ``forward(..., position_ids=None)``: positions for ``config.position_encoding`` other than
  ``"relative"`` (:mod:`t5lab.models.positions`, docs/positions.md): ``"absolute"`` adds a learned
  ``embed_positions`` table, ``"sinusoidal"`` the fixed one, ``"rotary"`` rotates self-attention's
  q/k, ``"none"`` has no positions; only ``"relative"`` builds block 0's bias table.
- ``T5CorePreTrainedModel``: the ``PreTrainedModel`` base (T5's Mesh TF init, ``_keep_in_fp32_modules
  = ["wo"]``, sdpa/eager/flex flags, ``_shift_right``).
- Pure helpers: ``self_attention_mask`` (2D padding + causality -> 4D bool), ``fold_bias`` (bias +
  mask -> one additive tensor), ``clamp_fp16``, ``static_cache_length`` (a StaticCache's key length).
- Version helpers: :data:`CACHE_FIELD` (``"cache"`` on transformers >= 5.24, ``"past_key_values"``
  before), :func:`resolve_cache` (take the cache under either keyword name), :func:`cache_output`.

Masks
-----
``attention_mask`` / ``encoder_attention_mask`` may be

- ``(B, K)`` padding masks, 1 on real tokens (``K`` covers the cached tokens too); the stack adds
  causality for a decoder;
- 4D ``(B | 1, 1 | H, Q, K)`` masks, bool (True = may attend) or additive float (0 / large negative),
  used exactly as given (they must already contain causality, prefix, packing...);
- None (everything visible; causal for a decoder).

The stack turns the self-attention mask and the relative position bias into **one** float
``(B | 1, H, Q, K)`` additive bias, computed once and handed to every block (T5 shares block 0's
bias over the stack). That bias is PyTorch SDPA's ``attn_mask`` (T5 does no ``1/sqrt(d)`` scaling:
``scale=1``), eager's additive term, or flex attention's ``score_mod`` term.
Attention back-end: ``config._attn_implementation`` (``"sdpa"`` default, ``"eager"``; ``"eager"`` is
used for a call that asks for attention weights; ``"flex_attention"`` adds the dense bias in a
``score_mod``, no attention dropout).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel, T5Config
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions, Seq2SeqLMOutput

from t5lab.models.masks import (
    forward_relative_position_bucket,
    t5_relative_position_bucket,
)
from t5lab.models.positions import (
    apply_rotary,
    position_encoding_of,
    position_ids_from_mask,
    rotary_angles,
    sinusoidal_embeddings,
)

logger = logging.getLogger("t5lab")

__all__ = [
    "CACHE_FIELD",
    "T5Attention",
    "T5Block",
    "T5CorePreTrainedModel",
    "T5DenseActDense",
    "T5DenseGatedActDense",
    "T5LayerCrossAttention",
    "T5LayerFF",
    "T5LayerNorm",
    "T5LayerSelfAttention",
    "T5Stack",
    "NoCrossAttention",
    "cache_output",
    "forward_relative_position_bucket",
    "relative_position_bucket",
    "resolve_cache",
    "static_cache_length",
]

relative_position_bucket = t5_relative_position_bucket  # the pure function, in masks.py (torch only)


# ---------------------------------------------------------------------------------------------
# transformers versions: the cache's name
# ---------------------------------------------------------------------------------------------

# transformers 5.24 renamed `past_key_values` to `cache` (forward kwargs and ModelOutput fields);
# 5.20-5.23 know only the old name. Decided once, from the installed ModelOutput's fields.
CACHE_FIELD = "cache" if "cache" in {f.name for f in dataclasses.fields(Seq2SeqLMOutput)} else "past_key_values"


def resolve_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache a forward got, under either name (``cache=`` on 5.24+, ``past_key_values=`` before)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("got both cache= and past_key_values= (two different caches); pass only cache=")
    return cache if cache is not None else past_key_values


def cache_output(cache: Cache | None) -> dict[str, Cache | None]:
    """``{CACHE_FIELD: cache}``: keyword arguments that put a cache in a ModelOutput on any version."""
    return {CACHE_FIELD: cache}


def _self_attention_cache(cache: Cache | None) -> Cache | None:
    return cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache


def static_cache_length(cache: Cache | None) -> int | None:
    """Preallocated key length of a static cache (StaticCache keys are always that long), else None."""
    layers = getattr(cache, "layers", None) or []
    if layers and getattr(layers[0], "is_compileable", False):
        return getattr(layers[0], "max_cache_len", None)
    return None


# ---------------------------------------------------------------------------------------------
# layer norm and feed-forward
# ---------------------------------------------------------------------------------------------


class T5LayerNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction and no bias (RMS norm, Zhang & Sennrich 2019).

    The variance is accumulated in fp32 (half precision loses the sum of squares); the result is cast
    back to the weight's dtype when that is fp16/bf16, as Mesh TF / transformers' T5 do.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)  # (..., 1)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            hidden_states = hidden_states.to(self.weight.dtype)
        return self.weight * hidden_states


def _to_wo_dtype(hidden_states: torch.Tensor, wo: nn.Linear) -> torch.Tensor:
    """``wo`` stays fp32 in half-precision models (``_keep_in_fp32_modules``): T5's last FF
    projection overflows fp16 otherwise. Quantized int8 weights are left to their own kernels."""
    weight = wo.weight
    if isinstance(weight, torch.Tensor) and hidden_states.dtype != weight.dtype and weight.dtype != torch.int8:
        return hidden_states.to(weight.dtype)
    return hidden_states


class T5DenseActDense(nn.Module):
    """``wo(act(wi(x)))``: the original T5 feed-forward (ReLU, Raffel et al. 2020 sec. 2.1)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = ACT2FN[config.dense_act_fn]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.act(self.wi(hidden_states)))  # (B, T, d_ff)
        return self.wo(_to_wo_dtype(hidden_states, self.wo))


class T5DenseGatedActDense(nn.Module):
    """``wo(act(wi_0(x)) * wi_1(x))``: the gated feed-forward of T5 v1.1 (Shazeer 2020, arXiv:2002.05202)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = ACT2FN[config.dense_act_fn]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate = self.act(self.wi_0(hidden_states))  # (B, T, d_ff)
        hidden_states = self.dropout(gate * self.wi_1(hidden_states))
        return self.wo(_to_wo_dtype(hidden_states, self.wo))


class T5LayerFF(nn.Module):
    """Pre-norm residual feed-forward sub-layer: ``x + dropout(FF(norm(x)))``."""

    def __init__(self, config: T5Config):
        super().__init__()
        dense = T5DenseGatedActDense if config.is_gated_act else T5DenseActDense
        self.DenseReluDense = dense(config)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.dropout(self.DenseReluDense(self.layer_norm(hidden_states)))


def clamp_fp16(hidden_states: torch.Tensor) -> torch.Tensor:
    """Keep fp16 activations finite (transformers' T5 does this after every sub-layer for fp16 training):
    clamp to the largest fp16 value, a little lower when an inf already appeared."""
    if hidden_states.dtype != torch.float16:
        return hidden_states
    largest = torch.finfo(torch.float16).max
    clamp_value = torch.where(torch.isinf(hidden_states).any(), largest - 1000, largest)
    return torch.clamp(hidden_states, min=-clamp_value, max=clamp_value)


# ---------------------------------------------------------------------------------------------
# masks -> one additive bias
# ---------------------------------------------------------------------------------------------


def _allowed_4d(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A user's 3D/4D mask as a 4D tensor (bool stays bool, float stays additive)."""
    if mask is None or mask.dim() == 4:
        return mask
    if mask.dim() == 3:
        return mask[:, None]  # (B, 1, Q, K)
    raise ValueError(f"a prepared attention mask must be 3D or 4D, got shape {tuple(mask.shape)}")


def self_attention_mask(
    attention_mask: torch.Tensor | None,
    batch: int,
    query_length: int,
    key_length: int,
    past: int | torch.Tensor,
    causal: bool,
    device: torch.device,
) -> torch.Tensor | None:
    """Bool ``(B | 1, 1, Q, K)`` "may attend" mask from a 2D padding mask (+ causality), a 4D mask as is.

    Queries sit at positions ``past .. past + Q - 1``; keys at ``0 .. K - 1``. A 2D mask shorter
    than ``K`` (a static cache's unwritten slots) is padded with "hidden". None: nothing to hide.
    """
    if attention_mask is not None and attention_mask.dim() != 2:
        return _allowed_4d(attention_mask.to(device))
    allowed = None
    if causal:
        query = torch.arange(query_length, device=device)[:, None] + past  # (Q, 1)
        key = torch.arange(key_length, device=device)[None, :]  # (1, K)
        allowed = (key <= query)[None, None]  # (1, 1, Q, K)
    if attention_mask is not None:
        keys = attention_mask.to(device=device, dtype=torch.bool)
        if keys.shape[-1] < key_length:
            keys = nn.functional.pad(keys, (0, key_length - keys.shape[-1]), value=False)
        elif keys.shape[-1] > key_length:
            raise ValueError(
                f"attention_mask covers {keys.shape[-1]} positions but there are {key_length} keys "
                "(a 2D mask covers the cached tokens plus the new ones)"
            )
        keys = keys[:, None, None, :]  # (B, 1, 1, K)
        allowed = keys if allowed is None else allowed & keys
    return allowed


def fold_bias(position_bias: torch.Tensor | None, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Position bias + mask as one additive float tensor (None when both are None).

    Hidden positions get the dtype's finite minimum (a fully hidden row stays finite: uniform
    softmax, never NaN). An additive float mask is added and clamped at that minimum.
    """
    if mask is None:
        return None if position_bias is None else position_bias.to(dtype)
    lowest = torch.finfo(dtype).min
    if mask.dtype == torch.bool:
        base = torch.zeros((), dtype=dtype, device=mask.device) if position_bias is None else position_bias.to(dtype)
        return torch.where(mask, base, torch.tensor(lowest, dtype=dtype, device=mask.device))
    mask = mask.to(dtype)
    if position_bias is None:
        return mask
    return (position_bias.to(dtype) + mask).clamp(min=lowest)


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------


# Defined on `torch.nn.Module` (not the `nn.Module` spelling): transformers' set_attn_implementation
# greps a model's module source for `class ...Attention...(nn.Module)` to decide whether the
# back-end may be switched, and our attention reads `config._attn_implementation` at each call.
class T5Attention(torch.nn.Module):
    """Multi-head attention with T5's relative position bias and no ``1/sqrt(d)`` scaling.

    Self-attention when ``key_value_states`` is None, else attention over them (cross-attention).
    Scores are ``q k^T + bias``, where ``bias`` is the learned per-head relative position bias of
    block 0 (Raffel et al. 2020 sec. 2.1; zero for layers without a table and for cross-attention)
    plus the mask. T5's initialisation scales ``q`` by ``(d_model * d_kv) ** -0.5`` instead.
    """

    def __init__(
        self,
        config: T5Config,
        has_relative_attention_bias: bool = False,
        layer_idx: int | None = None,
        is_decoder: bool = False,
    ):
        super().__init__()
        self.config = config
        self.is_decoder = is_decoder  # one-way (causal) buckets
        self.has_relative_attention_bias = has_relative_attention_bias
        self.relative_attention_num_buckets = config.relative_attention_num_buckets
        self.relative_attention_max_distance = config.relative_attention_max_distance
        # None: T5's half of the buckets of one direction are exact (t5lab.models.positions)
        self.relative_attention_max_exact = getattr(config, "relative_attention_max_exact", None)
        self.d_model = config.d_model
        self.key_value_proj_dim = config.d_kv
        self.n_heads = config.num_heads
        self.dropout = config.dropout_rate
        self.inner_dim = self.n_heads * self.key_value_proj_dim
        self.layer_idx = layer_idx

        self.q = nn.Linear(self.d_model, self.inner_dim, bias=False)
        self.k = nn.Linear(self.d_model, self.inner_dim, bias=False)
        self.v = nn.Linear(self.d_model, self.inner_dim, bias=False)
        self.o = nn.Linear(self.inner_dim, self.d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(self.relative_attention_num_buckets, self.n_heads)

    def compute_bias(
        self, query_length: int, key_length: int, device: torch.device | None = None, past_seen_tokens: Any = 0
    ) -> torch.Tensor:
        """Relative position bias ``(1, H, Q, K)`` for queries at ``past_seen_tokens ...`` and keys at ``0 ...``."""
        if device is None:
            device = self.relative_attention_bias.weight.device
        query = torch.arange(query_length, dtype=torch.long, device=device)[:, None] + past_seen_tokens
        key = torch.arange(key_length, dtype=torch.long, device=device)[None, :]
        buckets = relative_position_bucket(
            key - query,  # (Q, K)
            bidirectional=not self.is_decoder,
            num_buckets=self.relative_attention_num_buckets,
            max_distance=self.relative_attention_max_distance,
            max_exact=self.relative_attention_max_exact,
        )
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, Q, K)

    def _project_kv(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (*states.shape[:-1], -1, self.key_value_proj_dim)
        return self.k(states).view(shape).transpose(1, 2), self.v(states).view(shape).transpose(1, 2)  # (B, H, K, D)

    def _project_self_kv(self, states: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None):
        keys, values = self._project_kv(states)
        return (keys if rotary is None else apply_rotary(keys, *rotary)), values

    def _keys_values(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None,
        cache: Cache | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values, through the cache when there is one (cross-attention's are computed once).

        Self-attention keys are rotated (``rotary``) *before* they enter the cache, so a cached key
        keeps the angle of its own position."""
        cross = key_value_states is not None
        if cache is None:
            return self._project_self_kv(hidden_states, rotary) if not cross else self._project_kv(key_value_states)
        if isinstance(cache, EncoderDecoderCache):
            if cross and cache.is_updated.get(self.layer_idx):
                layer = cache.cross_attention_cache.layers[self.layer_idx]
                return layer.keys, layer.values
            target = cache.cross_attention_cache if cross else cache.self_attention_cache
        elif cross:
            return self._project_kv(key_value_states)  # a plain cache holds self-attention only
        else:
            target = cache
        new = self._project_kv(key_value_states) if cross else self._project_self_kv(hidden_states, rotary)
        keys, values = target.update(*new, self.layer_idx)
        if cross:
            cache.is_updated[self.layer_idx] = True
        return keys, values

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Attend.

        Args:
            hidden_states: ``(B, Q, d_model)`` (already normalised).
            mask: 4D bool/additive mask to add on top of ``position_bias`` (None: the stack folded it in).
            key_value_states: ``(B, S, d_model)`` for cross-attention.
            position_bias: ``(B | 1, H, Q, K)`` additive bias; None computes it (own table or zeros).
            cache: a ``Cache`` (``EncoderDecoderCache`` for models with cross-attention).
            output_attentions: return the softmax weights (runs the eager path).
            rotary: ``(cos, sin)`` ``(B | 1, 1, Q, D/2)`` of the queries' positions (RoPE, the stack's
                ``position_encoding="rotary"``): rotates the queries and the new keys of
                self-attention; ignored by cross-attention, which carries no positions (as in T5).

        Returns:
            ``(output (B, Q, d_model), position_bias used, weights (B, H, Q, K) or None)``.
        """
        batch, length = hidden_states.shape[:2]
        query = self.q(hidden_states).view(batch, length, -1, self.key_value_proj_dim).transpose(1, 2)  # (B, H, Q, D)
        if key_value_states is not None:
            rotary = None  # cross-attention: no positions
        if rotary is not None:
            query = apply_rotary(query, *rotary)
        compute = position_bias is None and self.has_relative_attention_bias and key_value_states is None
        past = 0
        if compute and cache is not None:
            past = _self_attention_cache(cache).get_seq_length(self.layer_idx)  # before this call's update
        keys, values = self._keys_values(hidden_states, key_value_states, cache, rotary)
        if compute:
            position_bias = self.compute_bias(length, keys.shape[-2], device=query.device, past_seen_tokens=past)
        bias = fold_bias(position_bias, _allowed_4d(mask), query.dtype)
        if bias is not None and bias.shape[-1] < keys.shape[-2]:
            # a static cache's keys are preallocated longer than the mask: hide the rest
            bias = nn.functional.pad(bias, (0, keys.shape[-2] - bias.shape[-1]), value=torch.finfo(bias.dtype).min)
        output, weights = self._attend(query, keys, values, bias, output_attentions)  # (B, H, Q, D)
        output = output.transpose(1, 2).reshape(batch, length, -1)  # (B, Q, H * D)
        return self.o(output), position_bias, weights

    def _attend(self, query, keys, values, bias, output_attentions):
        dropout = self.dropout if self.training else 0.0
        implementation = getattr(self.config, "_attn_implementation", None) or "sdpa"
        if output_attentions or implementation == "eager" or _sdpa_would_run_math(query, bias, dropout):
            scores = torch.matmul(query, keys.transpose(-1, -2))  # (B, H, Q, K), T5: no 1/sqrt(d)
            if bias is not None:
                scores = scores + bias
            weights = nn.functional.softmax(scores.float(), dim=-1).type_as(scores)
            weights = nn.functional.dropout(weights, p=dropout, training=self.training)
            return torch.matmul(weights, values), weights
        if implementation == "flex_attention":
            return _flex_attention(query, keys, values, bias, dropout), None
        output = nn.functional.scaled_dot_product_attention(
            query, keys, values, attn_mask=bias, dropout_p=dropout, scale=1.0
        )
        return output, None


def _sdpa_would_run_math(query: torch.Tensor, bias: torch.Tensor | None, dropout: float) -> bool:
    """Whether SDPA would fall back to its unfused "math" kernel, which the eager path equals bit for bit.

    A bias that needs a gradient (T5's relative bias while training) rules out SDPA's fused CPU
    kernel, which returns no gradient for ``attn_mask``; its math fallback then runs the same
    ``q k^T + bias -> softmax -> @ v`` as our eager path plus work we skip: it multiplies q and k
    by ``sqrt(scale) = 1`` and runs a "safe softmax" (``isneginf`` / ``all`` / ``where`` over the
    whole ``(B, H, Q, K)`` scores, and their backward) that never changes a row here, since the
    folded bias uses the dtype's finite minimum, never -inf. Only fp32 without dropout on CPU:
    there the two paths give identical outputs and gradients (tests/models/test_t5core_speed_paths.py);
    CUDA's fused kernels do take a bias gradient, and half precision or dropout may differ.
    """
    return (
        bias is not None
        and bias.requires_grad
        and dropout == 0.0
        and query.device.type == "cpu"
        and query.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    )


def _flex_attention(query, keys, values, bias, dropout):
    """Flex attention (PyTorch >= 2.5) with the dense bias read in ``score_mod``; meant for CUDA."""
    if dropout:
        raise ValueError(
            "flex attention has no attention dropout: set config.dropout_rate=0, call model.eval(), or use "
            "attn_implementation='sdpa'"
        )
    from torch.nn.attention.flex_attention import flex_attention

    if bias is None:
        return flex_attention(query, keys, values, scale=1.0)
    # (B, H, Q, K) view: score_mod indexes every dimension (a padding mask is (B, 1, 1, K))
    bias = bias.expand(query.shape[0], query.shape[1], query.shape[2], keys.shape[2])

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + bias[b, h, q_idx, kv_idx]

    return flex_attention(query, keys, values, score_mod=score_mod, scale=1.0)


class T5LayerSelfAttention(nn.Module):
    """``layer.0``: ``x + dropout(SelfAttention(layer_norm(x)))``."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False, layer_idx: int | None = None,
                 is_decoder: bool = False):
        super().__init__()
        self.SelfAttention = T5Attention(
            config, has_relative_attention_bias=has_relative_attention_bias, layer_idx=layer_idx, is_decoder=is_decoder
        )
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, hidden_states, attention_bias=None, cache=None, output_attentions=False, rotary=None):
        output, _, weights = self.SelfAttention(
            self.layer_norm(hidden_states), position_bias=attention_bias, cache=cache,
            # `rotary` only when there is one: a subclass's forward without the argument keeps working
            output_attentions=output_attentions, **({} if rotary is None else {"rotary": rotary}),
        )
        return hidden_states + self.dropout(output), weights


class T5LayerCrossAttention(nn.Module):
    """``layer.1`` of a decoder block: ``x + dropout(EncDecAttention(layer_norm(x), encoder states))``."""

    def __init__(self, config: T5Config, layer_idx: int | None = None):
        super().__init__()
        self.EncDecAttention = T5Attention(config, has_relative_attention_bias=False, layer_idx=layer_idx)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, hidden_states, key_value_states, attention_bias=None, cache=None, output_attentions=False):
        output, _, weights = self.EncDecAttention(
            self.layer_norm(hidden_states), key_value_states=key_value_states, position_bias=attention_bias,
            cache=cache, output_attentions=output_attentions,
        )
        return hidden_states + self.dropout(output), weights


class NoCrossAttention(torch.nn.Module):
    """``layer.1`` of a decoder block without cross-attention (decoder-only): no parameters, never called.

    It keeps a T5 decoder's parameter names (``layer.0`` self-attention, ``layer.2`` feed-forward),
    so a T5 decoder's tensors load one to one and its cross-attention shows up as unused.
    """

    def forward(self, *args: Any, **kwargs: Any):
        raise ValueError("this stack has no cross-attention: do not pass encoder_hidden_states")


class T5Block(nn.Module):
    """One T5 block: self-attention (``layer.0``), cross-attention (``layer.1``, decoders), feed-forward (last)."""

    def __init__(
        self,
        config: T5Config,
        has_relative_attention_bias: bool = False,
        layer_idx: int | None = None,
        is_decoder: bool = False,
        cross_attention: bool | None = None,
    ):
        super().__init__()
        self.is_decoder = is_decoder
        self.has_cross_attention = is_decoder if cross_attention is None else cross_attention
        self.layer = nn.ModuleList([T5LayerSelfAttention(config, has_relative_attention_bias, layer_idx, is_decoder)])
        if self.has_cross_attention:
            self.layer.append(T5LayerCrossAttention(config, layer_idx=layer_idx))
        elif is_decoder:
            self.layer.append(NoCrossAttention())  # keeps the feed-forward at a T5 decoder's `layer.2`
        self.layer.append(T5LayerFF(config))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
        cross_attention_bias: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        hidden_states, self_weights = self.layer[0](hidden_states, attention_bias, cache, output_attentions, rotary)
        hidden_states = clamp_fp16(hidden_states)
        cross_weights = None
        if encoder_hidden_states is not None:
            if not self.has_cross_attention:
                raise ValueError("this stack has no cross-attention: do not pass encoder_hidden_states")
            hidden_states, cross_weights = self.layer[1](
                hidden_states, encoder_hidden_states, cross_attention_bias, cache, output_attentions
            )
            hidden_states = clamp_fp16(hidden_states)
        hidden_states = clamp_fp16(self.layer[-1](hidden_states))
        return hidden_states, self_weights, cross_weights


# ---------------------------------------------------------------------------------------------
# stack
# ---------------------------------------------------------------------------------------------


class T5Stack(nn.Module):
    """Embedding -> dropout -> blocks -> final layer norm -> dropout, as a T5 encoder or decoder.

    The relative position bias comes from block 0's table and is shared by every block (Mesh TF);
    it is computed once per call together with the mask (see the module docstring).
    ``config.position_encoding`` (:mod:`t5lab.models.positions`) replaces it: ``"absolute"`` adds
    ``embed_positions`` (a learned ``(max_position_embeddings, d_model)`` table) and
    ``"sinusoidal"`` the fixed table to the input embeddings, ``"rotary"`` rotates the
    self-attention queries and keys, ``"none"`` adds nothing; none of them has a bias table.
    """

    def __init__(
        self,
        config: T5Config,
        embed_tokens: nn.Embedding | None = None,
        is_decoder: bool = False,
        num_layers: int | None = None,
        cross_attention: bool | None = None,
    ):
        super().__init__()
        self.config = config
        self.is_decoder = is_decoder
        self.has_cross_attention = is_decoder if cross_attention is None else cross_attention
        self.embed_tokens = embed_tokens if embed_tokens is not None else nn.Embedding(config.vocab_size, config.d_model)
        layers = config.num_layers if num_layers is None else num_layers
        self.position_encoding = position_encoding_of(config)
        relative = self.position_encoding == "relative"
        self.block = nn.ModuleList(
            [
                T5Block(config, relative and i == 0, i, is_decoder, self.has_cross_attention)
                for i in range(layers)
            ]
        )
        self.embed_positions = (
            nn.Embedding(getattr(config, "max_position_embeddings", 512), config.d_model)
            if self.position_encoding == "absolute"
            else None
        )
        self.final_layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.gradient_checkpointing = False  # set by PreTrainedModel.gradient_checkpointing_enable()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embed_tokens = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple:
        """Run the stack; see the module docstring for the mask forms.

        ``position_ids`` ``(B | 1, T)``: the tokens' positions for the absolute, sinusoidal and
        rotary encodings (ignored by ``"relative"`` and ``"none"``). Default: from a 2D
        ``attention_mask`` (``cumsum - 1``, so left padding does not shift a row), else
        ``past .. past + T - 1``. A packed batch (a 4D mask) must pass them, restarting per segment.

        Returns:
            ``BaseModelOutputWithPastAndCrossAttentions``: ``last_hidden_state`` ``(B, T, d_model)``,
            the cache (decoders with ``use_cache``) in :data:`CACHE_FIELD`, ``hidden_states``
            (``num_layers + 1``: the input of each block, then the final output), ``attentions``,
            ``cross_attentions``. A tuple of the non-None fields with ``return_dict=False``.
        """
        config = self.config
        cache = resolve_cache(cache, past_key_values)
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, D)
        batch, length = inputs_embeds.shape[:2]

        if not self.is_decoder:
            use_cache, cache = False, None  # an encoder keeps no cache
        else:
            use_cache = config.use_cache if use_cache is None else use_cache
            if self.gradient_checkpointing and self.training and use_cache:
                logger.debug("use_cache=True does not combine with gradient checkpointing; not caching")
                use_cache, cache = False, None
            if use_cache and cache is None:
                cache = EncoderDecoderCache(DynamicCache(), DynamicCache()) if self.has_cross_attention else DynamicCache()
        if not use_cache:
            cache = None

        rotary = None
        if self.position_encoding in ("absolute", "sinusoidal", "rotary"):  # what this stack was built with
            inputs_embeds, rotary = self._apply_positions(inputs_embeds, attention_mask, cache, position_ids)
        attention_bias = self._attention_bias(attention_mask, cache, batch, length, inputs_embeds)
        cross_bias = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            if encoder_attention_mask.dim() == 2:
                cross_bias = fold_bias(None, encoder_attention_mask.to(inputs_embeds.device).bool()[:, None, None, :],
                                       inputs_embeds.dtype)  # (B, 1, 1, S)
            else:
                cross_bias = fold_bias(None, _allowed_4d(encoder_attention_mask.to(inputs_embeds.device)),
                                       inputs_embeds.dtype)

        hidden_states = self.dropout(inputs_embeds)
        all_hidden, all_self, all_cross = [], [], []
        for block in self.block:
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if self.gradient_checkpointing and self.training:
                run = getattr(self, "_gradient_checkpointing_func", None) or _checkpoint
                hidden_states, self_weights, cross_weights = run(
                    block, hidden_states, attention_bias, cross_bias, encoder_hidden_states, None, output_attentions,
                    rotary,
                )
            else:
                hidden_states, self_weights, cross_weights = block(
                    hidden_states, attention_bias, cross_bias, encoder_hidden_states, cache, output_attentions, rotary
                )
            if output_attentions:
                all_self.append(self_weights)
                all_cross.append(cross_weights)
        hidden_states = self.dropout(self.final_layer_norm(hidden_states))
        if output_hidden_states:
            all_hidden.append(hidden_states)

        fields = dict(
            last_hidden_state=hidden_states,
            **cache_output(cache if use_cache else None),
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_self) if output_attentions else None,
            cross_attentions=tuple(all_cross) if output_attentions and encoder_hidden_states is not None else None,
        )
        output = BaseModelOutputWithPastAndCrossAttentions(**fields)
        return output if return_dict else output.to_tuple()

    def _apply_positions(self, inputs_embeds, attention_mask, cache, position_ids):
        """Absolute/sinusoidal: embeddings + position vectors; rotary: ``(cos, sin)`` for the blocks.

        Returns ``(inputs_embeds, rotary or None)``."""
        config = self.config
        length, device = inputs_embeds.shape[1], inputs_embeds.device
        self_cache = _self_attention_cache(cache)
        past = self_cache.get_seq_length() if self_cache is not None else 0
        derived = position_ids is None
        if derived:
            position_ids = position_ids_from_mask(attention_mask, length, past, device)
        else:
            position_ids = position_ids.to(device)
            if position_ids.dim() == 1:
                position_ids = position_ids[None]
            if position_ids.shape[-1] != length:
                raise ValueError(f"position_ids has shape {tuple(position_ids.shape)} but there are {length} tokens")
        if self.position_encoding == "rotary":
            base = getattr(config, "rotary_base", 10000.0)
            return inputs_embeds, rotary_angles(position_ids, config.d_kv, base, dtype=inputs_embeds.dtype)
        if self.position_encoding == "sinusoidal":
            table = sinusoidal_embeddings(position_ids, config.d_model)  # (B | 1, T, D)
            return inputs_embeds + table.to(inputs_embeds.dtype), None
        limit = self.embed_positions.num_embeddings
        # positions counted from `past` need no device sync to check; others are looked at
        highest = past + length - 1 if derived and isinstance(past, int) and attention_mask is None else None
        if highest is None and not torch.compiler.is_compiling():
            highest = int(position_ids.max())
        if highest is not None and highest >= limit:
            raise ValueError(
                f"position {highest} is beyond config.max_position_embeddings={limit}; "
                "shorten the input or build the model with a larger max_position_embeddings"
            )
        return inputs_embeds + self.embed_positions(position_ids).to(inputs_embeds.dtype), None

    def _attention_bias(self, attention_mask, cache, batch, length, inputs_embeds) -> torch.Tensor | None:
        """The self-attention mask folded into block 0's position bias: ``(B | 1, H, T, K)`` float."""
        self_cache = _self_attention_cache(cache)
        past = self_cache.get_seq_length() if self_cache is not None else 0
        static = static_cache_length(self_cache)
        key_length = static if static is not None else past + length
        device = inputs_embeds.device
        mask = self_attention_mask(attention_mask, batch, length, key_length, past, self.is_decoder, device)
        if mask is not None and mask.shape[-1] != key_length:
            raise ValueError(
                f"attention mask has {mask.shape[-1]} key positions but the keys are {key_length} "
                f"({past} cached + {length} new)"
            )
        first = self.block[0].layer[0].SelfAttention if len(self.block) else None
        bias = None
        if first is not None and first.has_relative_attention_bias:
            bias = first.compute_bias(length, key_length, device=device, past_seen_tokens=past)
        return fold_bias(bias, mask, inputs_embeds.dtype)


def _checkpoint(function, *args):
    return checkpoint(function, *args, use_reentrant=False)


# ---------------------------------------------------------------------------------------------
# PreTrainedModel base
# ---------------------------------------------------------------------------------------------


class T5CorePreTrainedModel(PreTrainedModel):
    """Base of the t5lab T5 variants: T5's Mesh-TensorFlow initialisation and PreTrainedModel flags.

    Subclasses initialise their own extra modules (embeddings, heads) in ``_init_weights`` after
    calling ``super()._init_weights(module)``.
    """

    config: T5Config
    config_class = T5Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["T5Block"]
    _keep_in_fp32_modules = ["wo"]  # T5's last FF projection overflows fp16
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = False  # the position bias is an additive term flash kernels cannot take
    _can_compile_fullgraph = True

    @classmethod
    def is_custom_code(cls) -> bool:
        # transformers 5 treats classes outside its package as custom code, and for custom code its
        # weight init skips modules whose own parameters look initialised, which silently dropped T5's
        # scaled init of q/k/v/o. _init_weights only uses transformers' flag-aware `init` helpers.
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """T5's initialisation (Mesh TF): N(0, factor * fan_in**-0.5), q also divided by sqrt(d_kv)."""
        super()._init_weights(module)
        config = self.config
        factor = config.initializer_factor
        d_model, d_kv, heads = config.d_model, config.d_kv, config.num_heads
        if isinstance(module, T5LayerNorm):
            init.constant_(module.weight, factor * 1.0)
        elif isinstance(module, T5DenseActDense):
            init.normal_(module.wi.weight, mean=0.0, std=factor * d_model**-0.5)
            init.normal_(module.wo.weight, mean=0.0, std=factor * config.d_ff**-0.5)
        elif isinstance(module, T5DenseGatedActDense):
            init.normal_(module.wi_0.weight, mean=0.0, std=factor * d_model**-0.5)
            init.normal_(module.wi_1.weight, mean=0.0, std=factor * d_model**-0.5)
            init.normal_(module.wo.weight, mean=0.0, std=factor * config.d_ff**-0.5)
        elif isinstance(module, T5Attention):
            init.normal_(module.q.weight, mean=0.0, std=factor * (d_model * d_kv) ** -0.5)
            init.normal_(module.k.weight, mean=0.0, std=factor * d_model**-0.5)
            init.normal_(module.v.weight, mean=0.0, std=factor * d_model**-0.5)
            init.normal_(module.o.weight, mean=0.0, std=factor * (heads * d_kv) ** -0.5)
            if module.has_relative_attention_bias:
                init.normal_(module.relative_attention_bias.weight, mean=0.0, std=factor * d_model**-0.5)
        elif isinstance(module, T5Stack) and module.embed_positions is not None:
            # the token embedding's scale (N(0, factor)), as the pseudo encoder's table and BERT/GPT-2
            # (equal std for token and position), so both carry comparable weight
            init.normal_(module.embed_positions.weight, mean=0.0, std=factor * 1.0)

    def _shift_right(self, input_ids: torch.Tensor) -> torch.Tensor:
        """T5's teacher forcing input: ``[decoder_start, x_0 .. x_{T-2}]``, -100 turned into pad."""
        start, pad = self.config.decoder_start_token_id, self.config.pad_token_id
        if start is None or pad is None:
            raise ValueError("config.decoder_start_token_id and config.pad_token_id must be set (T5 uses the pad id)")
        shifted = input_ids.new_zeros(input_ids.shape)
        shifted[..., 1:] = input_ids[..., :-1]
        shifted[..., 0] = start
        return shifted.masked_fill(shifted == -100, pad)
