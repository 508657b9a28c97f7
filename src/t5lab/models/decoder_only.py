"""A true decoder-only T5: one self-attention stack, inputs and targets in one sequence.

This is t5x's ``DecoderOnlyModel`` (Raffel et al. 2020, *Exploring the Limits of Transfer Learning
with a Unified Text-to-Text Transformer*, sec. 3.2.1 "language model" and "prefix LM") built on
t5lab's T5 core (:mod:`t5lab.models.t5core`):

- a ``T5Stack`` in decoder mode without cross-attention (causal self-attention, T5's one-way
  relative position buckets, a transformers ``DynamicCache`` / ``StaticCache``); block 0's
  ``layer.1`` is a parameterless placeholder so the names are a T5 decoder's;
- a tied LM head with T5's ``d_model ** -0.5`` output scaling;
- an optional *prefix*: ``prefix_mask[b, t] = 1`` marks the input part of a row, whose positions
  attend to each other in both directions (t5x ``inputs_bidirectional_attention``); every other
  position stays causal. ``prefix_mask=None`` is a plain causal LM.

Relative position in the prefix. A T5 decoder buckets ``key - query`` one way
(``bidirectional=False``): every key *after* the query lands in bucket 0, the bucket of distance 0.
In a prefix a query does see later keys, and with one-way buckets it cannot tell its right
neighbour from a token 50 positions on (t5x has exactly this behaviour). We keep the decoder's
backward buckets untouched, so ``prefix_mask=None`` *is* transformers' T5 decoder stack and a T5
checkpoint keeps the meaning of its relative-bias table, and add a separate learned table for
forward distances (``config.prefix_forward_buckets`` rows, T5's log bucketing, see
:func:`t5lab.models.masks.forward_relative_position_bucket`). ``prefix_forward_buckets=0``
reproduces t5x. Only queries in the prefix ever read the forward table: elsewhere forward keys are
masked. We chose a second table over switching to bidirectional buckets because the latter
re-maps the backward distances too (half the buckets per direction), which breaks both the parity
with a causal T5 decoder and initialisation from a T5 checkpoint.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from huggingface_hub.dataclasses import strict  # transformers 5 configs are @strict dataclasses
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, T5Config
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from t5lab.models import masks
from t5lab.models.loading import LoadReport
from t5lab.models.positions import (
    check_position_config,
    digit_position_ids,
    needs_position_ids,
    position_ids_from_mask,
    restart_position_ids,
)
from t5lab.models.strict_types import typed_fields
from t5lab.models.t5core import (
    T5Attention,
    T5CorePreTrainedModel,
    T5Stack,
    cache_output,
    resolve_cache,
    static_cache_length,
)

logger = logging.getLogger("t5lab")

__all__ = ["T5DecoderOnlyConfig", "T5DecoderOnlyForCausalLM", "T5PrefixLMSelfAttention", "TiedLMHead"]


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@typed_fields
@strict
class T5DecoderOnlyConfig(T5Config):
    """Config of :class:`T5DecoderOnlyForCausalLM`: a :class:`~transformers.T5Config` plus the prefix options.

    ``num_layers`` is the number of blocks of the single stack (``num_decoder_layers`` is kept
    equal to it). Built from a T5 checkpoint's config with :meth:`from_t5_config`.

    Args:
        prefix_forward_buckets: Rows of the learned table for forward distances (key after query)
            that prefix positions see. ``None`` (default) means ``relative_attention_num_buckets``;
            ``0`` shares T5's decoder bucket 0 for all forward distances, as t5x does.
        prefix_lm: The model is a prefix LM: ``generate()`` without ``prefix_mask`` uses the
            whole (non-padding) prompt as the bidirectional prefix.
        position_encoding: ``"relative"`` (default: T5's bucketed relative bias), ``"absolute"``
            (learned table), ``"sinusoidal"``, ``"rotary"`` (RoPE) or ``"none"`` (NoPE); see
            docs/positions.md and :mod:`t5lab.models.positions`.
        relative_attention_max_exact: Exact (one-distance) relative buckets per direction; None is
            T5's half of them.
        rotary_base: RoPE's ``base`` (``theta_i = base^(-2i/d_kv)``), 10000 as in RoFormer.
        max_position_embeddings: Rows of the ``"absolute"`` position table (longest sequence).
        target_positions: ``"continue"`` (default: one count over input and target) or
            ``"restart"`` (a prefix LM with absolute, sinusoidal or rotary positions numbers its target
            from 1 again, as T5's decoder does, and adds a learned input/target segment embedding
            so the two counts stay apart; :func:`t5lab.models.positions.restart_position_ids`),
            ``"pairs"`` (the same, a target position every second target token: for a target that
            writes each input token before its output, ``data.echo_input``), or
            ``"digits"`` (abacus-style, McLeish et al. 2024: every digit is numbered by its
            significance in its number, every other token 0, with the same segment embedding;
            the target is taken to be written least significant digit first, as
            ``data.reverse_target`` writes it; :func:`t5lab.models.positions.digit_position_ids`).
        digit_token_ids: The token ids of the digits 0-9, for ``target_positions="digits"`` (the
            harness fills them in from the run's tokenizer).
    """

    model_type = "t5_decoder_only"

    prefix_forward_buckets: int | None = None
    prefix_lm: bool = False
    is_encoder_decoder: bool = False
    position_encoding: str = "relative"
    relative_attention_max_exact: int | None = None
    rotary_base: float | int = 10000.0
    max_position_embeddings: int = 512
    target_positions: str = "continue"
    digit_token_ids: list[int] | None = None

    def __post_init__(self, **kwargs):
        # A T5Config dict carries model_type="t5"; the class attribute must win (from_dict).
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
        # One stack: a T5 dict's is_encoder_decoder=True / is_decoder must not leak in.
        self.is_encoder_decoder = False
        self.is_decoder = False
        self.num_decoder_layers = self.num_layers
        if self.prefix_forward_buckets is None:
            self.prefix_forward_buckets = self.relative_attention_num_buckets
        # checked here rather than in validate_architecture so that callers get a plain ValueError
        if self.prefix_forward_buckets < 0 or self.prefix_forward_buckets == 1:
            raise ValueError(
                f"prefix_forward_buckets={self.prefix_forward_buckets} is invalid: use 0 (t5x: one shared "
                "bucket) or >= 2 (T5 log buckets need at least one exact and one log bucket)"
            )
        check_position_config(self, bidirectional=False)
        _check_target_positions(self)

    @classmethod
    def from_t5_config(cls, t5_config: T5Config, **overrides: Any) -> T5DecoderOnlyConfig:
        """A decoder-only config with the architecture of a T5 config's *decoder*.

        Args:
            t5_config: Config of a T5 encoder-decoder.
            **overrides: Fields to set on the result (e.g. ``prefix_lm=True``).

        Returns:
            The config; ``num_layers`` is the T5 ``num_decoder_layers``.
        """
        values = t5_config.to_dict()
        for key in (
            "model_type",
            "architectures",
            "transformers_version",
            "is_encoder_decoder",
            "is_decoder",
        ):
            values.pop(key, None)
        values["num_layers"] = t5_config.num_decoder_layers
        # keep T5 v1.1's "no output scaling" (transformers stores it as scale_decoder_outputs)
        if not getattr(t5_config, "scale_decoder_outputs", True):
            values["tie_word_embeddings"] = False
        values.pop("scale_decoder_outputs", None)
        values.update(overrides)
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Model parts
# ---------------------------------------------------------------------------------------------


class T5PrefixLMSelfAttention(T5Attention):
    """Self-attention of block 0: T5 decoder buckets backwards, a second table forwards.

    Why override ``compute_bias``: the stack asks block 0 for the position bias once and hands it
    to every block, so the one method that computes it is the whole change. Backward distances go
    through ``T5Attention.compute_bias`` itself, so they stay bit-identical to a T5 decoder (parity
    test in ``tests/models/test_decoder_only.py``).
    """

    def __init__(self, config: T5Config, layer_idx: int = 0):
        super().__init__(config, has_relative_attention_bias=True, layer_idx=layer_idx, is_decoder=True)
        self.prefix_forward_buckets = config.prefix_forward_buckets or 0
        self.prefix_forward_bias = (
            nn.Embedding(self.prefix_forward_buckets, self.n_heads) if self.prefix_forward_buckets > 0 else None
        )

    def compute_bias(self, query_length, key_length, device=None, past_seen_tokens=0):
        """Position bias of shape ``(1, num_heads, query_length, key_length)``."""
        values = super().compute_bias(query_length, key_length, device=device, past_seen_tokens=past_seen_tokens)
        if self.prefix_forward_bias is None:
            return values  # t5x: forward distances share the decoder's bucket 0
        relative = masks.relative_positions(query_length, key_length, device=values.device) - past_seen_tokens  # (Q, K)
        max_exact = self.relative_attention_max_exact
        buckets = masks.forward_relative_position_bucket(
            relative, self.prefix_forward_buckets, self.relative_attention_max_distance,
            None if max_exact is None else min(max_exact, self.prefix_forward_buckets),
        )
        forward = self.prefix_forward_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, Q, K)
        return torch.where(relative[None, None] > 0, forward, values)


TARGET_POSITIONS = ("continue", "restart", "pairs", "digits")
# the modes that count the target apart from the input (and add the input/target segment embedding)
RESTARTED = ("restart", "pairs", "digits")


def _check_target_positions(config: T5DecoderOnlyConfig) -> None:
    """One-line ``ValueError`` for a ``target_positions`` setting that cannot work."""
    mode = config.target_positions
    if mode not in TARGET_POSITIONS:
        raise ValueError(f"target_positions={mode!r} is unknown; use one of {', '.join(TARGET_POSITIONS)}")
    if mode == "continue":
        return
    if config.position_encoding not in ("absolute", "sinusoidal", "rotary"):
        raise ValueError(
            f"target_positions={mode!r} numbers tokens, but position_encoding={config.position_encoding!r} "
            "has no position numbers; use absolute, sinusoidal or rotary"
        )
    if not config.prefix_lm:
        raise ValueError(f"target_positions={mode!r} counts the prefix and the target apart: set prefix_lm=true")
    if mode == "digits" and not config.digit_token_ids:
        raise ValueError(
            "target_positions='digits' numbers the digits: set digit_token_ids to the token ids of 0-9 "
            "(t5lab train fills them in from the tokenizer)"
        )


def _decoder_only_stack(config: T5DecoderOnlyConfig, embed_tokens: nn.Embedding) -> T5Stack:
    """A core ``T5Stack`` in decoder mode, without cross-attention, with the prefix-aware block-0 attention.

    Only T5's relative bias needs the forward table: with absolute, sinusoidal or rotary positions a
    prefix query tells later keys apart by their positions (and NoPE has none to tell)."""
    stack = T5Stack(config, embed_tokens, is_decoder=True, cross_attention=False)
    if len(stack.block) and stack.position_encoding == "relative":
        stack.block[0].layer[0].SelfAttention = T5PrefixLMSelfAttention(config, layer_idx=0)
    return stack


class _FreshWeightGradLinear(torch.autograd.Function):
    """``F.linear(x, weight)`` whose weight gradient is a fresh tensor rather than a view.

    Autograd's own linear returns the weight gradient as a transpose of a transpose of an ``mm``
    result; that view keeps a second reference to its storage, so when the weight is tied to the
    input embedding (T5's shared table) autograd cannot add the embedding's gradient into it in
    place (``torch/csrc/autograd/input_buffer.cpp``, ``can_accumulate_inplace``) and allocates a
    third ``(vocab, d_model)`` tensor every step (64 MB at the t5-small shape, fresh pages each
    time). The products are autograd's own (``grad @ W``, ``grad^T @ x``, the same ``mm`` calls),
    so outputs and gradients are bit-identical (tests/models/test_t5core_speed_paths.py).
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(hidden, weight)
        return nn.functional.linear(hidden, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        hidden, weight = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])  # (N, V)
        grad_hidden = flat.mm(weight).view(hidden.shape) if ctx.needs_input_grad[0] else None
        grad_weight = flat.t().mm(hidden.reshape(-1, hidden.shape[-1])) if ctx.needs_input_grad[1] else None
        return grad_hidden, grad_weight


class TiedLMHead(nn.Linear):
    """The LM head: an ``nn.Linear`` (same parameters, hooks, state dict) whose weight gradient can be
    accumulated in place with the tied embedding's (:class:`_FreshWeightGradLinear`).

    Falls back to ``nn.Linear.forward`` wherever the custom backward is not plainly the same:
    a bias, autocast (mixed dtypes in the backward), torch.compile (it traces ``nn.Linear``
    itself), or nothing to differentiate.
    """

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (
            self.bias is None
            and torch.is_grad_enabled()
            and isinstance(weight, torch.Tensor)
            and weight.requires_grad
            and hidden.dtype == weight.dtype
            and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled(hidden.device.type)
        ):
            return _FreshWeightGradLinear.apply(hidden, weight)
        return super().forward(hidden)


def _slice_logits_to_keep(hidden: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """The hidden states whose logits are wanted (transformers' ``logits_to_keep`` convention)."""
    if isinstance(logits_to_keep, int):
        return hidden[:, -logits_to_keep:] if logits_to_keep else hidden  # 0 keeps all
    if logits_to_keep.dim() == 2 and logits_to_keep.dtype == torch.bool:
        return hidden[logits_to_keep]  # (N, D)
    if logits_to_keep.dim() == 2:
        return torch.take_along_dim(hidden, logits_to_keep[..., None], dim=1)  # (B, n, D)
    return hidden[:, logits_to_keep]  # (B, n, D)


def _allowed(mask: torch.Tensor) -> torch.Tensor:
    """A prepared 4D mask as bool "may attend" (an additive float mask hides where it is very negative)."""
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class T5DecoderOnlyForCausalLM(T5CorePreTrainedModel, GenerationMixin):
    """Decoder-only T5 language model (causal or prefix LM), as t5x ``DecoderOnlyModel``.

    Parameter names follow a T5 encoder-decoder's decoder (``shared``, ``decoder.block.*``,
    ``decoder.final_layer_norm``, ``lm_head``), so :meth:`from_t5` loads a T5 checkpoint directly.
    """

    config_class = T5DecoderOnlyConfig
    config: T5DecoderOnlyConfig
    _tied_weights_keys = {
        "decoder.embed_tokens.weight": "shared.weight",
        "lm_head.weight": "shared.weight",
    }

    def __init__(self, config: T5DecoderOnlyConfig):
        super().__init__(config)
        self.model_dim = config.d_model
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.decoder = _decoder_only_stack(config, self.shared)
        self.lm_head = TiedLMHead(config.d_model, config.vocab_size, bias=False)
        # input (0) / target (1): with restarted positions, input j and target j share a position
        restart = getattr(config, "target_positions", "continue") in RESTARTED
        self.segment_embeddings = nn.Embedding(2, config.d_model) if restart else None
        self.load_report: LoadReport | None = None
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """T5's initialisation, plus the embedding and the forward-distance table."""
        super()._init_weights(module)
        factor = self.config.initializer_factor
        if isinstance(module, T5DecoderOnlyForCausalLM):
            init.normal_(module.shared.weight, mean=0.0, std=factor * 1.0)
            if not self.config.tie_word_embeddings:
                init.normal_(module.lm_head.weight, mean=0.0, std=factor * 1.0)
            if module.segment_embeddings is not None:  # the scale of the token embeddings it is added to
                init.normal_(module.segment_embeddings.weight, mean=0.0, std=factor * 1.0)
        elif isinstance(module, T5PrefixLMSelfAttention) and module.prefix_forward_bias is not None:
            # same scale as T5's relative_attention_bias
            init.normal_(module.prefix_forward_bias.weight, mean=0.0, std=factor * self.config.d_model**-0.5)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.shared = new_embeddings
        self.decoder.set_input_embeddings(new_embeddings)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def get_decoder(self) -> T5Stack:
        return self.decoder

    # -----------------------------------------------------------------------------------------
    # forward
    # -----------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        segment_ids: torch.Tensor | None = None,
        shift_labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Run the stack and the LM head.

        Args:
            input_ids: ``(B, T)`` token ids (or give ``inputs_embeds`` ``(B, T, d_model)``).
            attention_mask: ``(B, past + T)``, 1 on real tokens, 0 on padding; or a prepared 4D
                ``(B, 1, T, K)`` mask (bool or additive, with causality; generate() passes one with a
                static cache), to which ``prefix_mask`` adds the bidirectional prefix.
            prefix_mask: ``(B, past + T)``, 1 on the bidirectional prefix (the input part), 0 elsewhere;
                None is a causal LM. The prefix of a row must precede its other real tokens
                (with ``segment_ids``: the prefix of each segment precedes its other tokens).
            labels: ``(B, T)``, *not* shifted: ``logits[:, t]`` predicts ``labels[:, t + 1]``;
                -100 is ignored (put it on the prefix to train on targets only). The loss is the
                mean over all non-ignored tokens of the batch.
            cache: A transformers ``Cache`` (``DynamicCache``, ``StaticCache``) from an earlier call;
                ``past_key_values=`` is the same argument under the name transformers < 5.24 uses.
            use_cache: Return the cache (default ``config.use_cache``).
            inputs_embeds: Embeddings instead of ``input_ids``.
            logits_to_keep: Compute logits only where they are needed, as transformers' causal LMs
                do: an int ``n`` keeps the last ``n`` positions (0 = all), a 1D LongTensor keeps
                those positions, a 2D LongTensor ``(B, n)`` those positions per row, a 2D bool
                ``(B, T)`` mask its True positions (logits flattened to ``(N, vocab)``). With
                ``labels`` the loss is taken over the kept positions: ``logits[:, i]`` still predicts
                the label after the position it was computed at, and every position dropped must
                predict -100 (for a prefix LM keep ``target_length + 1``: the last prefix position
                predicts the first target token). That skips the LM head where no loss is taken,
                ``2 * d_model * vocab`` FLOPs per dropped token.
            segment_ids: ``(B, T)`` packed batch (``t5lab.train.packing``): the examples of a row
                numbered ``1, 2, ...``, 0 on padding. Each segment attends only to itself (causal,
                plus its own bidirectional prefix when ``prefix_mask`` is given); replaces
                ``attention_mask`` and cannot be used with a cache. Relative positions need no
                change: T5's bias (and the prefix's forward table) depend on the distance only.
            shift_labels: Already shifted labels, aligned with the (kept) logits, instead of ``labels``
                (transformers' loss convention).
            position_ids: ``(B, T)`` positions of the new tokens for ``config.position_encoding``
                absolute / sinusoidal / rotary (ignored otherwise). Default: ``cumsum - 1`` of a 2D
                ``attention_mask`` (left padding does not shift a row), restarted per segment with
                ``segment_ids``, else ``past ..``; ``generate()`` passes them the same way.
            output_attentions, output_hidden_states, return_dict: as in transformers.
            **kwargs: Passed to the loss (``num_items_in_batch``); other generation kwargs are ignored.

        Returns:
            ``CausalLMOutputWithPast`` with ``logits`` ``(B, T, vocab)`` (``(B, n, vocab)`` with
            ``logits_to_keep``), ``loss`` when labels are given, and the cache when caching (field
            ``cache`` on transformers >= 5.24, ``past_key_values`` before). A tuple with
            ``return_dict=False``.

        Raises:
            ValueError: On inputs of the wrong shape, a prefix that does not come first, or a label
                that only a position dropped by ``logits_to_keep`` would predict.
        """
        cache = resolve_cache(cache, past_key_values)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("T5DecoderOnlyForCausalLM: pass exactly one of input_ids or inputs_embeds")
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if inputs_embeds is None:
            inputs_embeds = self.shared(input_ids)  # (B, T, D)
        batch, length = inputs_embeds.shape[:2]
        if use_cache and cache is None and not (self.decoder.gradient_checkpointing and self.training):
            cache = DynamicCache()
        static = static_cache_length(cache)
        past = cache.get_seq_length() if cache is not None else 0  # a tensor for a StaticCache

        if attention_mask is not None and attention_mask.dim() == 2 and static is None:
            if attention_mask.shape != (batch, past + length):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)} but must be (batch, past + length) = "
                    f"({batch}, {past + length}): it covers the cached tokens too"
                )
        if labels is not None and labels.shape != (batch, length):
            raise ValueError(
                f"labels has shape {tuple(labels.shape)} but must match the inputs, ({batch}, {length}) "
                "(labels are not shifted: the model shifts them)"
            )

        mask = attention_mask
        if segment_ids is not None:
            mask = self._packed_mask(segment_ids, prefix_mask, attention_mask, inputs_embeds, past)
        elif prefix_mask is not None:
            mask = self._prefix_mask_4d(prefix_mask, attention_mask, batch, length, past, static, inputs_embeds.device)

        if self.segment_embeddings is not None:
            if position_ids is None and self.config.target_positions == "digits":
                position_ids = self._digit_positions(input_ids, prefix_mask, attention_mask, past)
            inputs_embeds, position_ids = self._restart_positions(
                inputs_embeds, prefix_mask, attention_mask, segment_ids, position_ids, past
            )
        if position_ids is None and needs_position_ids(self.config):
            # computed here: `mask` may be a 4D prefix / packing mask the stack cannot count from
            if segment_ids is not None:
                position_ids = masks.segment_positions(segment_ids.to(inputs_embeds.device))  # (B, T)
            else:
                position_ids = position_ids_from_mask(attention_mask, length, past, inputs_embeds.device)

        outputs = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        # the kept positions first, then the scale: the same values, elementwise work on T' positions only
        hidden = _slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)  # (B, T', D)
        if getattr(self.config, "scale_decoder_outputs", self.config.tie_word_embeddings):
            # T5 rescales before the tied head (Mesh TF); T5 v1.1 checkpoints turn it off
            hidden = hidden * (self.model_dim**-0.5)
        logits = self.lm_head(hidden)  # (B, T', V)

        loss = None
        if labels is not None or shift_labels is not None:
            # transformers' ForCausalLMLoss: shifts, ignores -100, token-weighted mean; with
            # logits_to_keep we shift here and hand it the labels of the kept positions
            keep_all = isinstance(logits_to_keep, int) and logits_to_keep == 0
            if shift_labels is None and not keep_all:
                shift_labels = self._kept_shift_labels(labels, logits_to_keep)
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, shift_labels=shift_labels, **kwargs
            )

        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **cache_output(cache if use_cache else None),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    def _digit_positions(self, input_ids, prefix_mask, attention_mask, past) -> torch.Tensor:
        """``target_positions="digits"``: positions from the whole sequence (a number is counted from its end)."""
        if input_ids is None or not (isinstance(past, int) and past == 0):
            raise ValueError(
                "target_positions='digits' numbers each digit from the whole sequence: pass position_ids "
                "with a cache or inputs_embeds (generate() passes them)"
            )
        if prefix_mask is None:
            raise ValueError("target_positions='digits' counts the prefix apart: pass prefix_mask (1 on the input part)")
        return self._number_digits(input_ids, prefix_mask, attention_mask)

    def _number_digits(self, input_ids, prefix_mask, attention_mask) -> torch.Tensor:
        """:func:`digit_position_ids` of a whole sequence with this config's digit ids."""
        padding = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
        digits = torch.tensor(self.config.digit_token_ids, device=input_ids.device)
        return digit_position_ids(input_ids, prefix_mask, digits, padding)

    def _restart_positions(self, inputs_embeds, prefix_mask, attention_mask, segment_ids, position_ids, past):
        """``target_positions="restart"``: add the input/target segment embedding; positions restart at the target."""
        if prefix_mask is None:
            raise ValueError(
                "target_positions='restart' counts the target from the end of the prefix: pass prefix_mask "
                "(1 on the input part; generate() passes it for a prefix LM)"
            )
        batch, length = inputs_embeds.shape[:2]
        prefix_mask = prefix_mask.to(inputs_embeds.device)
        if isinstance(past, int) and prefix_mask.shape[-1] < past + length:
            raise ValueError(
                f"prefix_mask covers {prefix_mask.shape[-1]} positions but there are {past} cached + {length} new tokens"
            )
        padding = None
        if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape == prefix_mask.shape:
            padding = attention_mask.to(inputs_embeds.device)
        index = torch.arange(length, device=inputs_embeds.device) + past  # (T,)
        is_target = (1 - prefix_mask.long().index_select(-1, index)).clamp(0, 1)  # (B, T)
        inputs_embeds = inputs_embeds + self.segment_embeddings(is_target).to(inputs_embeds.dtype)
        if position_ids is None:
            per = 2 if self.config.target_positions == "pairs" else 1
            position_ids = restart_position_ids(prefix_mask, padding, segment_ids, length, past, per=per)
        return inputs_embeds, position_ids

    def _prefix_mask_4d(
        self,
        prefix_mask: torch.Tensor,
        attention_mask: torch.Tensor | None,
        batch: int,
        length: int,
        past: int | torch.Tensor,
        static: int | None,
        device: torch.device,
    ) -> torch.Tensor | None:
        """The prefix-LM mask as a bool ``(B, 1, T, K)`` on ``device`` (the activations', not
        ``self.device``: with accelerate offloading the weights sit on the meta device), or
        ``attention_mask`` as is when no query of this call is in the prefix (every decoding step):
        the stack's causal mask is then exact."""
        prefix_mask = prefix_mask.to(device)
        prepared = attention_mask is not None and attention_mask.dim() != 2
        if attention_mask is not None and not prepared:
            full = attention_mask.shape[1]
        elif static is not None:
            full = prefix_mask.shape[-1]
        else:
            full = past + length
        compiling = torch.compiler.is_compiling()
        if not compiling:
            # with a prepared 4D mask the padding is unknown here, so the prefix order is not checked
            self._check_prefix_mask(prefix_mask, attention_mask, batch, full, check_order=not prepared)
            # only a query inside the prefix looks ahead
            if not prefix_mask[:, -length:].bool().any():
                return attention_mask
        key_length = static if static is not None else full
        prefix = prefix_mask.bool()
        if prepared:
            both = prefix[:, -length:, None] & prefix[:, None, :]  # (B, T, L)
            both = nn.functional.pad(both, (0, key_length - both.shape[-1]), value=False)[:, None]
            return _allowed(attention_mask.to(device)) | both  # (B, 1, T, K)
        allowed = masks.prefix_lm_query_mask(prefix, length)  # (B, T, L)
        if attention_mask is not None:
            allowed = allowed & attention_mask.to(device).bool()[:, None, :]
        return nn.functional.pad(allowed, (0, key_length - allowed.shape[-1]), value=False)[:, None]

    @staticmethod
    def _kept_shift_labels(labels: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        """The labels the kept logits predict: ``labels[:, t + 1]`` for each kept position ``t``.

        Raises ``ValueError`` when a dropped position would predict a real label (not -100): its
        loss term would silently vanish.
        """
        length = labels.shape[1]
        shifted = nn.functional.pad(labels[:, 1:], (0, 1), value=-100)  # (B, T): what logits[:, t] predicts
        if isinstance(logits_to_keep, int):
            if logits_to_keep < 0:
                raise ValueError(f"logits_to_keep must be >= 0 (0 = all positions), got {logits_to_keep}")
            first = max(length - logits_to_keep, 0)
            kept = shifted[:, first:].contiguous()  # (B, n); a slice: no boolean indexing, no host sync
            keep = torch.arange(length, device=labels.device).ge(first).expand_as(shifted)  # (B, T)
        elif logits_to_keep.dim() == 2 and logits_to_keep.dtype == torch.bool:
            keep = logits_to_keep.to(labels.device)  # (B, T)
            kept = shifted[keep]  # (N,), the order of hidden[mask]
        else:
            index = logits_to_keep.to(labels.device) % length  # negative positions count from the end
            if index.dim() == 1:
                index = index.expand(shifted.shape[0], -1)  # (B, n)
            kept = torch.take_along_dim(shifted, index, dim=1)  # (B, n)
            keep = torch.zeros_like(shifted, dtype=torch.bool).scatter_(1, index, True)
        dropped = (shifted != -100) & ~keep
        if dropped.any():
            row, pos = (int(i) for i in dropped.nonzero()[0])
            raise ValueError(
                f"labels[{row}, {pos + 1}] = {int(labels[row, pos + 1])} is predicted by position {pos}, which "
                "logits_to_keep drops: keep that position's logits or set the label to -100"
            )
        return kept

    def _packed_mask(
        self,
        segment_ids: torch.Tensor,
        prefix_mask: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor,
        past: int,
    ) -> torch.Tensor:
        """Bool ``(B, 1, T, T)`` mask of a packed batch: block-diagonal by segment, causal inside a
        segment, bidirectional on each segment's prefix (Krell et al. 2021, arXiv:2107.02027)."""
        batch, length = inputs_embeds.shape[:2]
        if past or attention_mask is not None:
            raise ValueError("segment_ids replace attention_mask and cannot be combined with a cache (past tokens)")
        if segment_ids.shape != (batch, length):
            raise ValueError(f"segment_ids has shape {tuple(segment_ids.shape)} but must be ({batch}, {length})")
        segment_ids = segment_ids.to(inputs_embeds.device)
        if prefix_mask is not None:
            if prefix_mask.shape != (batch, length) or not ((prefix_mask == 0) | (prefix_mask == 1)).all():
                raise ValueError(f"prefix_mask must be 0/1 of shape ({batch}, {length}) like segment_ids")
            prefix = prefix_mask.to(segment_ids.device).bool()
            # a prefix position right after a non-prefix one of the same segment: the prefix is not first
            late = prefix[:, 1:] & ~prefix[:, :-1] & (segment_ids[:, 1:] == segment_ids[:, :-1])
            if late.any():
                raise ValueError("prefix_mask marks a prefix position after a target token of the same segment")
        allowed = masks.segment_mask(segment_ids, segment_ids, causal=True, prefix_mask=prefix_mask)  # (B, T, T)
        return allowed[:, None]  # (B, 1, T, T)

    @staticmethod
    def _check_prefix_mask(
        prefix_mask: torch.Tensor,
        attention_mask: torch.Tensor | None,
        batch: int,
        full_length: int,
        check_order: bool = True,
    ) -> None:
        if prefix_mask.dim() != 2 or prefix_mask.shape != (batch, full_length):
            raise ValueError(
                f"prefix_mask has shape {tuple(prefix_mask.shape)} but must be (batch, past + length) = "
                f"({batch}, {full_length}), like a 2D attention_mask (with a cache it covers the cached tokens; "
                "chunked prefill cannot be used with a prefix)"
            )
        if not ((prefix_mask == 0) | (prefix_mask == 1)).all():
            raise ValueError("prefix_mask must hold only 0/1 values, 1 on prefix positions")
        if not check_order:
            return
        bad = masks.prefix_violations(prefix_mask, attention_mask)
        if bad.numel():
            raise ValueError(
                f"prefix_mask row {bad[0].item()} marks a prefix position after a non-prefix token: the prefix "
                "must come first (after any left padding), else targets would see the future"
            )

    # -----------------------------------------------------------------------------------------
    # generation
    # -----------------------------------------------------------------------------------------

    def generate(self, inputs: torch.Tensor | None = None, *args: Any, **kwargs: Any):
        """``GenerationMixin.generate``, plus the prompt as prefix for a prefix LM.

        Why override: a model with ``config.prefix_lm`` was trained with its input as a
        bidirectional prefix and must see the prompt the same way at inference; generate() has no
        hook that sees the prompt before the first forward. An explicit ``prefix_mask`` (shape of
        the prompt) wins; new tokens are always causal.
        """
        if kwargs.get("prefix_mask") is None and self.config.prefix_lm:
            prompt = inputs if inputs is not None else kwargs.get("input_ids")
            if prompt is not None and prompt.dim() == 2 and not prompt.dtype.is_floating_point:
                attention_mask = kwargs.get("attention_mask")
                kwargs["prefix_mask"] = (
                    attention_mask.long() if attention_mask is not None else torch.ones_like(prompt)
                )
        return super().generate(inputs, *args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, *args: Any, **kwargs: Any) -> dict:
        # Why override: generate() knows nothing of prefix_mask. Assisted decoding forwards candidate
        # tokens it has not added to it yet; they are generated tokens, so targets: zeros.
        model_inputs = super().prepare_inputs_for_generation(input_ids, *args, **kwargs)
        if self.segment_embeddings is not None:
            # generate() counts positions on across the prompt (cumsum of the mask); restarted ones
            # come from prefix_mask in forward
            model_inputs.pop("position_ids", None)
        prefix_mask = model_inputs.get("prefix_mask")
        if prefix_mask is not None and prefix_mask.dim() == 2 and prefix_mask.shape[1] != input_ids.shape[1]:
            missing = input_ids.shape[1] - prefix_mask.shape[1]
            prefix_mask = (
                nn.functional.pad(prefix_mask, (0, missing), value=0) if missing > 0 else prefix_mask[:, : input_ids.shape[1]]
            )
            model_inputs["prefix_mask"] = prefix_mask
        new_ids = model_inputs.get("input_ids")
        if self.config.target_positions == "digits" and prefix_mask is not None and new_ids is not None:
            # a number is counted from its end: only the whole sequence numbers the new tokens
            positions = self._number_digits(input_ids, prefix_mask, kwargs.get("attention_mask"))
            model_inputs["position_ids"] = positions[:, -new_ids.shape[1] :]
        return model_inputs

    def _update_model_kwargs_for_generation(
        self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1
    ):
        # Why override: generate() extends attention_mask by the new tokens but knows nothing of
        # prefix_mask; new tokens are targets, so they extend it with zeros (as transformers does
        # for mm_token_type_ids).
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )
        prefix_mask = model_kwargs.get("prefix_mask")
        if prefix_mask is not None:
            model_kwargs["prefix_mask"] = torch.cat(
                [prefix_mask, prefix_mask.new_zeros((prefix_mask.shape[0], num_new_tokens))], dim=-1
            )
        return model_kwargs

    # -----------------------------------------------------------------------------------------
    # from a T5 checkpoint
    # -----------------------------------------------------------------------------------------

    @classmethod
    def from_t5(
        cls, path_or_model: str | os.PathLike | nn.Module, **config_overrides: Any
    ) -> T5DecoderOnlyForCausalLM:
        """Initialise from a T5 encoder-decoder's *decoder*; the cross-attention and encoder are dropped.

        Copies the decoder's self-attention, feed-forward, layer norms and relative bias, the
        shared embedding and the (tied) LM head. The new forward-distance table starts with every
        row equal to the decoder's bucket-0 bias (the bias t5x gives all forward distances), so in
        prefix mode the converted model starts out exactly as t5x's prefix LM and training can
        then pull the forward distances apart.
        The :class:`~t5lab.models.loading.LoadReport` (used / new / unused tensors) is logged
        and attached as ``model.load_report``.

        Args:
            path_or_model: A directory written by ``T5ForConditionalGeneration.save_pretrained``
                or such a model in memory.
            **config_overrides: Fields of :class:`T5DecoderOnlyConfig` to set (e.g. ``prefix_lm=True``).

        Returns:
            The model, in eval mode like ``from_pretrained``.

        Raises:
            ValueError: When the source is not a T5 encoder-decoder.
        """
        if isinstance(path_or_model, nn.Module):
            t5_config = getattr(path_or_model, "config", None)
            if not isinstance(t5_config, T5Config) or not getattr(t5_config, "is_encoder_decoder", False):
                raise ValueError(
                    f"from_t5 needs a T5 encoder-decoder (e.g. T5ForConditionalGeneration), got {type(path_or_model).__name__}"
                )
            config = T5DecoderOnlyConfig.from_t5_config(t5_config, **config_overrides)
            model = cls(config)
            result = model.load_state_dict(path_or_model.state_dict(), strict=False)
            source = type(path_or_model).__name__
            info = {"missing_keys": result.missing_keys, "unexpected_keys": result.unexpected_keys}
            # tied copies (decoder.embed_tokens, lm_head) came in with shared.weight
            model.tie_weights()
            model.eval()
        else:
            path = os.fspath(path_or_model)
            if not os.path.isdir(path):
                raise ValueError(
                    f"from_t5: {path!r} is not a directory; pass a T5 save_pretrained directory or model"
                )
            t5_config = AutoConfig.from_pretrained(path)
            if not isinstance(t5_config, T5Config) or not t5_config.is_encoder_decoder:
                raise ValueError(
                    f"from_t5: {path} holds a {type(t5_config).__name__} (model_type {t5_config.model_type!r}); "
                    "it needs a T5 encoder-decoder checkpoint"
                )
            config = T5DecoderOnlyConfig.from_t5_config(t5_config, **config_overrides)
            model, info = cls.from_pretrained(path, config=config, output_loading_info=True)
            source = path
        attention = model.decoder.block[0].layer[0].SelfAttention
        if getattr(attention, "prefix_forward_bias", None) is not None:  # only with relative positions
            with torch.no_grad():
                bucket_zero = attention.relative_attention_bias.weight[0]  # (H,)
                attention.prefix_forward_bias.weight.copy_(
                    bucket_zero.expand_as(attention.prefix_forward_bias.weight)
                )
            logger.info(
                "prefix_forward_bias initialised from the T5 decoder's relative-bias bucket 0 (t5x behaviour)"
            )
        # tensors tied to shared.weight are not "new" even when the checkpoint stores only shared.weight
        tied = set(cls._tied_weights_keys)
        info = dict(info)
        info["missing_keys"] = [k for k in info.get("missing_keys", []) if k not in tied]
        report = LoadReport.from_loading_info(model, info, source=source)
        model.load_report = report
        logger.info(report.summary())
        return model


# Registration at import time: `import t5lab` makes AutoConfig / AutoModelForCausalLM (and so
# pipeline("text-generation")) know the model type.
AutoConfig.register(T5DecoderOnlyConfig.model_type, T5DecoderOnlyConfig, exist_ok=True)
AutoModelForCausalLM.register(T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM, exist_ok=True)
