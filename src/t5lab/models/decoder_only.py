"""A true decoder-only T5: one self-attention stack, inputs and targets in one sequence.

This is t5x's ``DecoderOnlyModel`` (Raffel et al. 2020, *Exploring the Limits of Transfer Learning
with a Unified Text-to-Text Transformer*, sec. 3.2.1 "language model" and "prefix LM") built from
transformers' own T5 parts:

- ``T5Stack`` with ``is_decoder=True`` (causal self-attention, T5's one-way relative position
  buckets, a DynamicCache), whose blocks lose their cross-attention layer;
- a tied LM head with T5's ``d_model ** -0.5`` output scaling;
- an optional *prefix*: ``prefix_mask[b, t] = 1`` marks the input part of a row, whose positions
  attend to each other in both directions (t5x ``inputs_bidirectional_attention``); every other
  position stays causal. ``prefix_mask=None`` is a plain causal LM.

Relative position in the prefix. A T5 decoder buckets ``key - query`` one way
(``bidirectional=False``): every key *after* the query lands in bucket 0, the bucket of distance 0.
In a prefix a query does see later keys, and with one-way buckets it cannot tell its right
neighbour from a token 50 positions on (t5x has exactly this behaviour). We keep the decoder's
backward buckets untouched, so ``prefix_mask=None`` *is* the HF decoder stack and a T5 checkpoint
keeps the meaning of its relative-bias table, and add a separate learned table for forward
distances (``config.prefix_forward_buckets`` rows, T5's log bucketing, see
:func:`t5lab.models.masks.forward_relative_position_bucket`). ``prefix_forward_buckets=0``
reproduces t5x. Only queries in the prefix ever read the forward table: elsewhere forward keys are
masked. We chose a second table over switching to bidirectional buckets because the latter
re-maps the backward distances too (half the buckets per direction), which breaks both the parity
with a causal T5 decoder and initialisation from a T5 checkpoint.
"""

from __future__ import annotations

import copy
import inspect
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
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.t5.modeling_t5 import T5Attention, T5PreTrainedModel, T5Stack

from t5lab.models import masks
from t5lab.models.loading import LoadReport

logger = logging.getLogger("t5lab")

__all__ = ["T5DecoderOnlyConfig", "T5DecoderOnlyForCausalLM", "T5PrefixLMSelfAttention"]


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


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
    """

    model_type = "t5_decoder_only"

    prefix_forward_buckets: int | None = None
    prefix_lm: bool = False
    is_encoder_decoder: bool = False

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

    Why override ``compute_bias``: ``T5Stack`` lets block 0 compute the position bias once and
    hands it to every later block; overriding the one method that computes it keeps the whole
    HF stack (masks, cache, attention back-ends) unchanged. Backward distances go through
    ``T5Attention.compute_bias`` itself, so they stay bit-identical to HF's decoder (parity test in
    ``tests/models/test_decoder_only.py``).
    """

    def __init__(self, config: T5Config, layer_idx: int = 0):
        super().__init__(config, has_relative_attention_bias=True, layer_idx=layer_idx, is_causal=True)
        self.prefix_forward_buckets = config.prefix_forward_buckets or 0
        self.prefix_forward_bias = (
            nn.Embedding(self.prefix_forward_buckets, self.n_heads)
            if self.prefix_forward_buckets > 0
            else None
        )
        # Set by T5DecoderOnlyForCausalLM.forward for flex attention only: transformers' flex
        # score_mod indexes the bias as bias[batch_idx, ...], which overflows T5's batch-1 bias for
        # batch > 1 (T5ForConditionalGeneration fails the same way); an expanded view fixes it.
        self.bias_batch_size: int | None = None

    def compute_bias(self, query_length, key_length, device=None, past_seen_tokens=0):
        """Position bias of shape ``(1, num_heads, query_length, key_length)``."""
        values = super().compute_bias(
            query_length, key_length, device=device, past_seen_tokens=past_seen_tokens
        )
        if self.prefix_forward_bias is not None:
            relative = masks.relative_positions(
                query_length, key_length, past_seen_tokens, device=values.device
            )  # (Q, K), key - query
            buckets = masks.forward_relative_position_bucket(
                relative, self.prefix_forward_buckets, self.relative_attention_max_distance
            )
            forward = self.prefix_forward_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, Q, K)
            values = torch.where(relative[None, None] > 0, forward, values)
        # else t5x: forward distances share the decoder's bucket 0
        if self.bias_batch_size is not None:
            values = values.expand(self.bias_batch_size, -1, -1, -1)  # (B, H, Q, K) view, flex only
        return values


class _CrossAttnPlaceholder(nn.Module):
    """Placeholder for the cross-attention layer (``block.i.layer.1``) a decoder-only model lacks.

    ``T5Block.forward`` only calls ``layer[1]`` when ``encoder_hidden_states`` is given and uses
    ``layer[-1]`` as the feed-forward layer, so this placeholder keeps the parameter names of a
    T5 decoder (``layer.0`` self-attention, ``layer.2`` feed-forward): a T5 decoder's tensors load
    one-to-one and its cross-attention shows up as unused. (Named "Attn", not "Attention": transformers'
    ``_can_set_attn_implementation`` greps the module source for ``class *Attention*(nn.Module)``.)
    """

    def forward(self, *args: Any, **kwargs: Any):
        raise ValueError("T5DecoderOnlyForCausalLM has no cross-attention: do not pass encoder_hidden_states")


def _decoder_only_stack(config: T5DecoderOnlyConfig) -> T5Stack:
    """An HF ``T5Stack`` in decoder mode, with the prefix-aware block-0 attention and no cross-attention."""
    stack_config = copy.deepcopy(config)
    stack_config.is_decoder = True
    stack = T5Stack(stack_config)
    for i, block in enumerate(stack.block):
        block.layer[1] = _CrossAttnPlaceholder()
        if i == 0:
            block.layer[0].SelfAttention = T5PrefixLMSelfAttention(stack_config, layer_idx=0)
    return stack


def _prefix_lm_attention_mask(
    config: T5Config,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    past_key_values: Cache | None,
    prefix_mask: torch.Tensor,
):
    """The prefix-LM mask in the form the configured attention back-end wants, via ``create_causal_mask``.

    ``config`` must be the stack's config: it decides eager (additive float), sdpa (bool) or flex
    (``BlockMask``). The prefix is handed over as ``block_sequence_ids`` (prefix = block 0, the rest
    -1 = causal), transformers' own "bidirectional block inside a causal mask"; it is the same mask
    as ``or_mask_function=masks.prefix_lm_mask_function(prefix_mask)`` (tested) but is built by
    broadcasting, while any ``or_mask_function`` makes transformers build the mask with vmap:
    3.8 ms instead of 56 ms for batch 8 x 128 tokens on one CPU thread.
    """
    prefix_mask = prefix_mask.to(inputs_embeds.device)
    common = dict(
        config=config,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        past_key_values=past_key_values,
    )
    if _HAS_BLOCK_SEQUENCE_IDS:
        block_ids = masks.prefix_block_ids(prefix_mask)  # (B, past + T): 0 on the prefix, -1 elsewhere
        return create_causal_mask(**common, block_sequence_ids=block_ids)
    return create_causal_mask(**common, or_mask_function=masks.prefix_lm_mask_function(prefix_mask))


_HAS_BLOCK_SEQUENCE_IDS = "block_sequence_ids" in inspect.signature(create_causal_mask).parameters


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class T5DecoderOnlyForCausalLM(T5PreTrainedModel, GenerationMixin):
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
        self.decoder = _decoder_only_stack(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.load_report: LoadReport | None = None
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """T5's initialisation, plus the embedding and the forward-distance table it does not know."""
        super()._init_weights(module)
        factor = self.config.initializer_factor
        if isinstance(module, T5DecoderOnlyForCausalLM):
            init.normal_(module.shared.weight, mean=0.0, std=factor * 1.0)
        elif isinstance(module, T5PrefixLMSelfAttention) and module.prefix_forward_bias is not None:
            # same scale as T5's relative_attention_bias
            init.normal_(module.prefix_forward_bias.weight, mean=0.0, std=factor * self.config.d_model**-0.5)

    @classmethod
    def is_custom_code(cls) -> bool:
        # transformers 5 flags every class outside its package as custom code, and for custom code
        # `_initialize_weights` skips modules whose own parameters look initialised, which silently
        # dropped T5's scaled init of the attention projections (q std 1.0 instead of
        # (d_model * d_kv)**-0.5). `_init_weights` only uses transformers' flag-aware `init`
        # helpers, so the guard is not needed. Covered by test_init_matches_transformers_t5.
        return False

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.shared = new_embeddings
        self.decoder.set_input_embeddings(new_embeddings)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    # -----------------------------------------------------------------------------------------
    # forward
    # -----------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        segment_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Run the stack and the LM head.

        Args:
            input_ids: ``(B, T)`` token ids (or give ``inputs_embeds`` ``(B, T, d_model)``).
            attention_mask: ``(B, past + T)``, 1 on real tokens, 0 on padding.
            prefix_mask: ``(B, past + T)``, 1 on the bidirectional prefix (the input part), 0 elsewhere;
                None is a causal LM. The prefix of a row must precede its other real tokens
                (with ``segment_ids``: the prefix of each segment precedes its other tokens).
            labels: ``(B, T)``, *not* shifted: ``logits[:, t]`` predicts ``labels[:, t + 1]``;
                -100 is ignored (put it on the prefix to train on targets only). The loss is the
                mean over all non-ignored tokens of the batch.
            past_key_values: A transformers ``Cache`` (DynamicCache) from an earlier call.
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
            **kwargs: Passed to ``T5Stack`` (``output_attentions``, ``output_hidden_states``, ...).

        Returns:
            ``CausalLMOutputWithPast`` with ``logits`` ``(B, T, vocab)`` (``(B, n, vocab)`` with
            ``logits_to_keep``), ``loss`` when ``labels`` are given, and ``past_key_values`` when
            caching.

        Raises:
            ValueError: On inputs of the wrong shape, a prefix that does not come first, or a label
                that only a position dropped by ``logits_to_keep`` would predict.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("T5DecoderOnlyForCausalLM: pass exactly one of input_ids or inputs_embeds")
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if inputs_embeds is None:
            inputs_embeds = self.shared(input_ids)  # (B, T, D)
        batch, length = inputs_embeds.shape[:2]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past = past_key_values.get_seq_length() if past_key_values is not None else 0

        if (
            attention_mask is not None
            and attention_mask.dim() == 2
            and attention_mask.shape != (batch, past + length)
        ):
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
            self._check_prefix_mask(prefix_mask, attention_mask, batch, past + length)
            # Only a query inside the prefix looks ahead; if none of this call's queries is in the
            # prefix (e.g. every decoding step) the mask is the causal one and we keep HF's fast path.
            if prefix_mask[:, past:].bool().any():
                mask = _prefix_lm_attention_mask(
                    self.decoder.config, inputs_embeds, attention_mask, past_key_values, prefix_mask
                )  # 4D bool (sdpa), float (eager) or BlockMask (flex): T5Stack passes it through as is

        flex = self.decoder.config._attn_implementation == "flex_attention"
        self.decoder.block[0].layer[0].SelfAttention.bias_batch_size = batch if flex else None
        outputs = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state  # (B, T, D)
        if self.config.scale_decoder_outputs:
            # T5 rescales before the tied head (Mesh TF); T5 v1.1 checkpoints turn it off
            hidden = hidden * (self.model_dim**-0.5)
        logits = self.lm_head(slice_logits_to_keep(hidden, logits_to_keep))  # (B, T', V)

        loss = None
        if labels is not None:
            # transformers' ForCausalLMLoss: shifts, ignores -100, token-weighted mean; with
            # logits_to_keep we shift here and hand it the labels of the kept positions
            shift_labels = (
                None
                if isinstance(logits_to_keep, int) and logits_to_keep == 0
                else self._kept_shift_labels(labels, logits_to_keep)
            )
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                vocab_size=self.config.vocab_size,
                shift_labels=shift_labels,
                **kwargs,
            )

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values if use_cache else None,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

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
        """Additive ``(B, 1, T, T)`` mask of a packed batch: block-diagonal by segment, causal inside a
        segment, bidirectional on each segment's prefix (Krell et al. 2021, arXiv:2107.02027)."""
        batch, length = inputs_embeds.shape[:2]
        if self.decoder.config._attn_implementation not in ("eager", "sdpa"):
            raise ValueError("segment_ids need attn_implementation eager or sdpa (a dense 4D mask)")
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
        return masks.to_additive(allowed, inputs_embeds.dtype)[:, None]  # (B, 1, T, T)

    @staticmethod
    def _check_prefix_mask(
        prefix_mask: torch.Tensor, attention_mask: torch.Tensor | None, batch: int, full_length: int
    ) -> None:
        if prefix_mask.dim() != 2 or prefix_mask.shape != (batch, full_length):
            raise ValueError(
                f"prefix_mask has shape {tuple(prefix_mask.shape)} but must be (batch, past + length) = "
                f"({batch}, {full_length}), like a 2D attention_mask (with a cache it covers the cached tokens; "
                "chunked prefill cannot be used with a prefix)"
            )
        if not ((prefix_mask == 0) | (prefix_mask == 1)).all():
            raise ValueError("prefix_mask must hold only 0/1 values, 1 on prefix positions")
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(
                "prefix_mask cannot be combined with a prepared 4D attention_mask (it would be ignored); "
                "pass a 2D padding attention_mask, or fold the prefix into your 4D mask and drop prefix_mask"
            )
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
        if attention.prefix_forward_bias is not None:
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
