"""The pseudo decoder-only T5: a T5 decoder that cross-attends to its own (embedded) input.

The T5 encoder stack is replaced by a *pseudo encoder*: the shared token embedding followed by a
T5LayerNorm (plus, unless ``position_blind=True``, learned absolute position embeddings). The decoder
is a T5 decoder stack of t5lab's core (:mod:`t5lab.models.t5core`: self-attention, cross-attention
to the pseudo-encoder output, feed-forward; transformers' T5 parameter names) and the LM head is
tied to the shared embedding with T5's ``d_model**-0.5`` output scaling. The idea and the two training modes come from the public "modeling_t5dec.py"
(T5PseudoDecForConditionalGeneration for transformers 4.x); this is a re-implementation on
transformers 5 that fixes three of its problems (see the module docs in ``docs/pseudo_decoder.md``):

* causal-LM mode is auto-detected per position (``labels == input_ids`` wherever ``labels != -100``),
  so a right-padded batch with ``-100`` labels stays causal, and the mode is never stored on ``self``;
* the causal cross-attention mask is a plain 4D bool mask (:func:`t5lab.models.masks.causal_cross_mask`)
  that the core folds into one additive bias for any attention back-end;
* the non-causal mode is no longer blind to input order (see :class:`T5PseudoEncoder`).

Modes (``forward(..., causal_LM=...)``):

* causal LM: pseudo-encoder input ``shift_right(input_ids)``, decoder input ``shift_right(labels)``,
  decoder position ``t`` cross-attends pseudo-encoder positions ``<= t`` (input tokens ``< t``);
  the model predicts ``labels`` (= ``input_ids``).
* non-causal (seq2seq): pseudo-encoder over ``input_ids``, cross-attention over every non-pad input
  token, decoder over ``shift_right(labels)``. ``generate()`` uses this mode.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationMixin, PreTrainedModel, T5Config
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from t5lab.models import masks
from t5lab.models.loading import LoadReport, from_pretrained_with_report
from t5lab.models.positions import check_position_config
from t5lab.models.strict_types import typed_fields
from t5lab.models.t5core import (
    CACHE_FIELD,
    T5CorePreTrainedModel,
    T5LayerNorm,
    T5Stack,
    cache_output,
    resolve_cache,
)

logger = logging.getLogger("t5lab")

LOSS_REDUCTIONS = (None, "mean", "sum", "none")
IGNORE_INDEX = -100

__all__ = [
    "T5PseudoDecConfig",
    "T5PseudoEncoder",
    "T5PseudoDecPreTrainedModel",
    "T5PseudoDecForConditionalGeneration",
    "is_causal_lm_batch",
    "token_weighted_cross_entropy",
]


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@typed_fields
@strict
class T5PseudoDecConfig(T5Config):
    r"""Config of the pseudo decoder-only T5: a ``T5Config`` plus the fields below.

    Args:
        position_blind (`bool`, defaults to `False`):
            ``True`` reproduces the original pseudo decoder exactly: the pseudo encoder is
            ``LayerNorm(embed(x))`` with no position information, so in non-causal mode the model
            cannot see the order of its input tokens. ``False`` adds learned absolute position
            embeddings in the pseudo encoder.
        max_position_embeddings (`int`, defaults to 512):
            Longest input the pseudo encoder's position table covers (unused when position_blind).
        causal_LM (`bool`, *optional*):
            Default training mode when ``forward`` gets ``causal_LM=None``: True (causal LM), False
            (seq2seq) or None (auto-detect from the batch). Set False for tasks whose target can equal
            their input (copying), where auto-detection would pick causal mode. It never applies when
            ``encoder_outputs`` are given (``generate()`` is always non-causal).
        position_encoding: Of the T5 decoder stack (the pseudo encoder keeps its own table):
            ``"relative"`` (default: T5's bucketed relative bias), ``"absolute"``
            (learned table), ``"sinusoidal"``, ``"rotary"`` (RoPE) or ``"none"`` (NoPE); see
            docs/positions.md and :mod:`t5lab.models.positions`.
        relative_attention_max_exact: Exact (one-distance) relative buckets per direction; None is
            T5's half of them.
        rotary_base: RoPE's ``base`` (``theta_i = base^(-2i/d_kv)``), 10000 as in RoFormer.

    The ``"absolute"`` decoder table has ``max_position_embeddings`` rows too.
    """

    model_type = "t5_pseudo_dec"

    position_blind: bool = False
    max_position_embeddings: int = 512
    causal_LM: bool | None = None  # the original model's name
    position_encoding: str = "relative"
    relative_attention_max_exact: int | None = None
    rotary_base: float | int = 10000.0

    def __post_init__(self, **kwargs):
        # A plain T5Config.to_dict() carries model_type="t5"; PreTrainedConfig would set it as an
        # instance attribute that shadows the class attribute, so from_dict(T5 dict) would still say
        # "t5". The model type is a property of the class, never of the data.
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
        check_position_config(self, bidirectional=False)  # here: a plain one-line ValueError

    def validate_architecture(self):
        """Part of `@strict` validation: T5's checks plus the position table size."""
        super().validate_architecture()
        if self.max_position_embeddings < 1:
            raise ValueError(
                f"max_position_embeddings must be >= 1, got {self.max_position_embeddings}; "
                "set it to the longest input you will feed the model"
            )


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def is_causal_lm_batch(input_ids: torch.Tensor | None, labels: torch.Tensor | None) -> bool:
    """Whether a batch asks for causal-LM training: ``labels == input_ids`` wherever ``labels != -100``.

    The original model compared whole tensors (``torch.equal``), so a padded batch whose labels carry
    ``-100`` on padding silently switched to non-causal "copy" mode; comparing only the supervised
    positions keeps it causal.

    Args:
        input_ids: ``(B, T)`` token ids, or None.
        labels: ``(B, T)`` targets with ``-100`` where no loss is wanted, or None.

    Returns:
        True iff both are given, have the same shape and agree at every supervised position.
    """
    if input_ids is None or labels is None or input_ids.shape != labels.shape:
        return False
    return bool(((labels == input_ids) | (labels == IGNORE_INDEX)).all())


def token_weighted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    pad_token_id: int | None = None,
    reduction: str | None = "mean",
) -> torch.Tensor:
    """Cross-entropy where every supervised token weighs the same; ``-100`` and pad labels never count.

    Args:
        logits: ``(B, T, V)`` unnormalised scores.
        labels: ``(B, T)`` target ids; ``-100`` (and ``pad_token_id`` when given) are ignored.
        pad_token_id: id whose label positions are ignored as well (None: only ``-100``).
        reduction: ``"mean"`` (None means the same): sum over supervised tokens / their count
            (0 when there is none); ``"sum"``; ``"none"``: ``(B, T)`` per-token losses, 0 where ignored.

    Returns:
        A scalar, or a ``(B, T)`` tensor for ``reduction="none"``.

    Raises:
        ValueError: for an unknown reduction.
    """
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"reduce_loss must be one of {LOSS_REDUCTIONS}, got {reduction!r}")
    keep = labels != IGNORE_INDEX  # (B, T)
    if pad_token_id is not None:
        keep &= labels != pad_token_id
    # Compute in fp32: bf16/fp16 log-softmax over a large vocabulary loses the small probabilities.
    per_token = nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        labels.masked_fill(~keep, 0).reshape(-1).to(logits.device),
        reduction="none",
    ).view(labels.shape)  # (B, T)
    per_token = per_token * keep
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    return per_token.sum() / keep.sum().clamp(min=1)


def _shift_mask_right(attention_mask: torch.Tensor) -> torch.Tensor:
    """The padding mask of ``shift_right(x)``: the start token (position 0) is always attended. (B, T)"""
    start = attention_mask.new_ones(attention_mask.shape[0], 1)
    return torch.cat([start, attention_mask[:, :-1]], dim=1)


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


class T5PseudoDecPreTrainedModel(T5CorePreTrainedModel):
    """Weight init and config class shared by the pseudo encoder and the full model."""

    config: T5PseudoDecConfig
    config_class = T5PseudoDecConfig

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The core initialises T5's own modules; the embedding (and an untied head) follow the same
        # Mesh-TensorFlow scheme (N(0, factor)) so a fresh model matches a fresh T5.
        super()._init_weights(module)
        factor = self.config.initializer_factor
        if isinstance(module, T5PseudoDecForConditionalGeneration):
            init.normal_(module.shared.weight, mean=0.0, std=factor * 1.0)
            if not self.config.tie_word_embeddings:
                init.normal_(module.lm_head.weight, mean=0.0, std=factor * 1.0)
        elif isinstance(module, T5PseudoEncoder) and module.embed_positions is not None:
            # Same scale as the token embedding, as in BERT/GPT-2, so that position and token carry
            # comparable weight before the layer norm.
            init.normal_(module.embed_positions.weight, mean=0.0, std=factor * 1.0)


class T5PseudoEncoder(T5PseudoDecPreTrainedModel):
    """The pseudo encoder: ``LayerNorm(embed(x) [+ pos(x)])``, with the interface of a T5 encoder.

    Why absolute positions (and not a relative bias on cross-attention): the pseudo encoder is a bag of
    embeddings and T5's cross-attention carries no position information, so in non-causal mode the
    original model's logits do not change when the input tokens are permuted. Adding learned absolute
    position embeddings here (as BERT/GPT-2 do, Devlin et al. 2019, https://arxiv.org/abs/1810.04805)
    fixes that inside the one module that is new, leaves transformers' ``T5Stack`` untouched (a
    cross-attention bias would mean overriding ``T5Stack.forward``), and aligns with the decoder in
    causal mode, where pseudo-encoder position ``t`` is decoder position ``t``.
    ``config.position_blind=True`` drops the table and reproduces the original model exactly.

    Weights: ``embed_tokens`` is tied to the model's ``shared`` embedding; ``final_layer_norm`` keeps
    the name of the T5 encoder's final norm, so loading a plain T5 checkpoint fills it from there.
    """

    # Nothing to checkpoint (no blocks); without this the legacy config flag
    # `gradient_checkpointing=True` made transformers refuse to build the model.
    supports_gradient_checkpointing = False

    def __init__(self, config: T5PseudoDecConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_positions = (
            None if config.position_blind else nn.Embedding(config.max_position_embeddings, config.d_model)
        )
        self.final_layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embed_tokens = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput | tuple:
        """Embed (and position) the input and normalise it.

        Args:
            input_ids: ``(B, S)`` token ids (or give ``inputs_embeds`` ``(B, S, d_model)``).
            attention_mask: accepted for the encoder interface; the pseudo encoder mixes no tokens, so
                padding only matters to the decoder's cross-attention.
            inputs_embeds: token embeddings instead of ``input_ids``.
            position_ids: ``(B, S)`` positions for the position table; default ``0 .. S-1`` in every
                row. Packed batches restart them in each segment (``t5lab.train.packing``). Ignored
                when ``position_blind``.
            output_attentions: return ``attentions``: an empty tuple (the pseudo encoder has no attention).
            output_hidden_states: return ``hidden_states``: ``(last_hidden_state,)``, transformers'
                "number of layers + 1" for a stack of zero layers.
            return_dict: a ``BaseModelOutput`` (default) or a tuple.
            **kwargs: other generation encoder kwargs, ignored.

        Returns:
            ``BaseModelOutput`` whose ``last_hidden_state`` is ``(B, S, d_model)``.
        """
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("T5PseudoEncoder needs exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, S, D)
        hidden_states = inputs_embeds
        if self.embed_positions is not None and position_ids is not None:
            hidden_states = hidden_states + self.embed_positions(position_ids)  # (B, S, D)
        elif self.embed_positions is not None:
            length = hidden_states.shape[1]
            if length > self.config.max_position_embeddings:
                raise ValueError(
                    f"input has {length} tokens but config.max_position_embeddings="
                    f"{self.config.max_position_embeddings}; truncate the input or build the model with "
                    "a larger max_position_embeddings"
                )
            positions = torch.arange(length, device=hidden_states.device)  # (S,)
            hidden_states = hidden_states + self.embed_positions(positions)[None]  # (B, S, D)
        hidden_states = self.final_layer_norm(hidden_states)
        output = BaseModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=(hidden_states,) if output_hidden_states else None,
            attentions=() if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


class T5PseudoDecForConditionalGeneration(T5PseudoDecPreTrainedModel, GenerationMixin):
    """Pseudo decoder-only T5 with a tied LM head; seq2seq and causal-LM training, HF generation.

    Example:
        >>> cfg = T5PseudoDecConfig(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
        >>> model = T5PseudoDecForConditionalGeneration(cfg)
        >>> ids = torch.tensor([[5, 6, 7, 1]])
        >>> out = model(input_ids=ids, labels=ids)  # labels == input_ids: causal-LM mode
        >>> out.logits.shape
        torch.Size([1, 4, 64])
    """

    # The first decoder block of some T5 checkpoints carries an unused cross-attention bias.
    _keys_to_ignore_on_load_unexpected = [
        r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias"
    ]
    _tied_weights_keys = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
        "lm_head.weight": "shared.weight",
    }

    def __init__(self, config: T5PseudoDecConfig):
        super().__init__(config)
        self.model_dim = config.d_model
        self.shared = nn.Embedding(config.vocab_size, config.d_model)

        encoder_config = copy.deepcopy(config)
        encoder_config.is_decoder = False
        encoder_config.use_cache = False
        self.encoder = T5PseudoEncoder(encoder_config)

        # the model's own config, shared: set_attn_implementation reaches the decoder's attention
        self.decoder = T5Stack(config, self.shared, is_decoder=True, num_layers=config.num_decoder_layers)

        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    # -- embeddings (tied: shared == encoder.embed_tokens == decoder.embed_tokens == lm_head) -------

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.shared = new_embeddings
        self.encoder.set_input_embeddings(new_embeddings)
        self.decoder.set_input_embeddings(new_embeddings)

    def get_encoder(self, modality: str | None = None) -> T5PseudoEncoder:
        """The pseudo encoder: ``generate()`` runs it once over the whole input (non-causal)."""
        return self.encoder

    def get_decoder(self) -> T5Stack:
        return self.decoder

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_t5(
        cls, path_or_model: str | os.PathLike | PreTrainedModel, **kwargs: Any
    ) -> T5PseudoDecForConditionalGeneration:
        """Start from a plain T5 checkpoint, logging which tensors were used, new or left unused.

        Takes the shared embedding, the whole decoder, the (tied) LM head and the encoder's
        ``final_layer_norm`` (which becomes the pseudo-encoder norm); the encoder blocks are unused and
        the position table (unless ``position_blind=True``) is new. The :class:`LoadReport` is
        attached as ``model.load_report``.

        Args:
            path_or_model: a ``T5ForConditionalGeneration.save_pretrained`` directory, or an in-memory
                T5 model (``T5ForConditionalGeneration``/``T5Model``).
            **kwargs: ``from_pretrained`` keyword arguments (config overrides such as
                ``position_blind=True``, ``attn_implementation=...``).

        Returns:
            The model in eval mode, with ``model.load_report``.

        Raises:
            ValueError: a missing directory, something that is not a T5 model, or an unknown option.
        """
        if isinstance(path_or_model, (str, os.PathLike)):
            if not os.path.isdir(path_or_model):
                raise ValueError(
                    f"T5 checkpoint directory {str(path_or_model)!r} does not exist; pass the directory "
                    "written by T5ForConditionalGeneration.save_pretrained or an in-memory T5 model"
                )
            model, _ = from_pretrained_with_report(cls, str(path_or_model), **kwargs)
            return model
        if not isinstance(path_or_model, PreTrainedModel) or not isinstance(path_or_model.config, T5Config):
            raise ValueError(
                f"from_t5 expects a T5 checkpoint directory or a T5 model, got {type(path_or_model).__name__}"
            )
        source = path_or_model
        config, unused_kwargs = cls.config_class.from_dict(
            source.config.to_dict(), return_unused_kwargs=True, **kwargs
        )
        if unused_kwargs:
            raise ValueError(
                f"from_t5 got unknown config options {sorted(unused_kwargs)}; pass fields of "
                f"{cls.config_class.__name__} (e.g. position_blind, max_position_embeddings)"
            )
        model = cls(config)
        result = model.load_state_dict(source.state_dict(), strict=False)
        ignored = cls._keys_to_ignore_on_load_unexpected
        unexpected = [k for k in result.unexpected_keys if not any(re.search(p, k) for p in ignored)]
        report = LoadReport.from_loading_info(
            model,
            {"missing_keys": result.missing_keys, "unexpected_keys": unexpected},
            source=f"<in-memory {type(source).__name__}>",
        )
        model.load_report = report
        logger.info(report.summary())
        return model.to(source.dtype).eval()

    # -- forward -----------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple[torch.Tensor, ...] | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        causal_LM: bool | None = None,  # the original model's name
        reduce_loss: str | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        decoder_position_ids: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> Seq2SeqLMOutput | tuple:
        """Run the pseudo encoder and the decoder; compute a token-weighted loss when labels are given.

        Args:
            input_ids: ``(B, S)`` input tokens (what the decoder cross-attends to).
            attention_mask: ``(B, S)`` 1 for real tokens, 0 for padding.
            decoder_input_ids: ``(B, T)``; default ``shift_right(labels)`` (causal mode without labels:
                ``shift_right(input_ids)``).
            decoder_attention_mask: ``(B, T)`` decoder padding mask (causal mode default: the shifted
                ``attention_mask``, since decoder and input are aligned there).
            encoder_outputs: precomputed pseudo-encoder output (non-causal mode only; generate()).
            cache: an ``EncoderDecoderCache`` for incremental decoding; ``past_key_values=`` is the same
                argument under the name transformers < 5.24 uses.
            labels: ``(B, T)`` targets, ``-100`` where no loss is wanted.
            use_cache: return the cache (default ``config.use_cache``).
            causal_LM: True for causal-LM mode, False for seq2seq; None uses ``config.causal_LM``
                and, when that is None too, auto-detects causal mode iff ``labels == input_ids`` at
                every position where ``labels != -100``. Never stored on the model.
            reduce_loss: None/"mean" (token-weighted mean), "sum" or "none" (``(B, T)`` per-token
                losses); label positions equal to ``-100`` or ``pad_token_id`` never contribute.
            position_ids: ``(B, S)`` pseudo-encoder positions (non-causal mode; default ``0 .. S-1``),
                e.g. restarting per segment in a packed batch.
            inputs_embeds: ``(B, S, d_model)`` instead of ``input_ids`` (causal mode shifts them right,
                with the start token's embedding first; auto-detection needs ``input_ids``).
            decoder_inputs_embeds: ``(B, T, d_model)`` instead of ``decoder_input_ids``.
            decoder_position_ids: ``(B, T)`` decoder positions for ``config.position_encoding``
                absolute / sinusoidal / rotary; default ``cumsum - 1`` of a 2D
                ``decoder_attention_mask``, else ``past ..``. A packed batch (4D decoder mask) passes
                them restarted per segment (:func:`t5lab.models.masks.segment_positions`).
            output_attentions, output_hidden_states, return_dict: as in transformers.
            **kwargs: other generation kwargs, ignored.

        Returns:
            ``Seq2SeqLMOutput`` with ``logits`` ``(B, T, vocab_size)`` and the cache (field ``cache`` on
            transformers >= 5.24, ``past_key_values`` before); a tuple with ``return_dict=False``.

        Raises:
            ValueError: unknown ``reduce_loss``; causal mode without input, with ``encoder_outputs``,
                or with labels of another shape; no decoder input; too long input.
        """
        if reduce_loss not in LOSS_REDUCTIONS:
            raise ValueError(f"reduce_loss must be one of {LOSS_REDUCTIONS}, got {reduce_loss!r}")
        cache = resolve_cache(cache, past_key_values)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs_wanted = dict(output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("pass input_ids or inputs_embeds, not both")
        causal = self._resolve_mode(causal_LM, input_ids, labels, encoder_outputs)
        past_length = cache.get_seq_length() if cache is not None else 0

        if causal:
            if position_ids is not None:
                raise ValueError("position_ids apply to the non-causal (seq2seq) mode; causal_LM=True aligns positions itself")
            if input_ids is None and inputs_embeds is None:
                raise ValueError(
                    "causal_LM=True needs input_ids (or inputs_embeds): the pseudo encoder runs on the shifted input"
                )
            if encoder_outputs is not None:
                raise ValueError(
                    "causal_LM=True recomputes the pseudo encoder from input_ids; do not pass encoder_outputs "
                    "(generate() is non-causal: call it without causal_LM)"
                )
            embeds = self.shared(input_ids) if inputs_embeds is None else inputs_embeds  # (B, S, D)
            encoder_outputs = self.encoder(inputs_embeds=self._shift_embeds_right(embeds), **outputs_wanted)
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                if labels is not None:
                    decoder_input_ids = self._shift_right(labels)
                elif input_ids is not None:
                    decoder_input_ids = self._shift_right(input_ids)
                else:
                    decoder_inputs_embeds = self._shift_embeds_right(embeds)
            cross_mask, decoder_attention_mask = self._causal_masks(
                embeds, attention_mask, decoder_input_ids, decoder_inputs_embeds, decoder_attention_mask, labels,
                past_length,
            )
        else:
            if encoder_outputs is None:
                if input_ids is None and inputs_embeds is None:
                    raise ValueError("pass input_ids (or inputs_embeds, or encoder_outputs) to the pseudo-decoder model")
                encoder_outputs = self.encoder(
                    input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                    position_ids=position_ids, **outputs_wanted,
                )
            elif not isinstance(encoder_outputs, BaseModelOutput):
                encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0])
            cross_mask = attention_mask  # 2D padding mask: the stack hides padded keys
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                if labels is None:
                    raise ValueError(
                        "pass labels or decoder_input_ids: the decoder needs an input "
                        "(or set causal_LM=True to score input_ids as a language model)"
                    )
                decoder_input_ids = self._shift_right(labels)

        encoder_hidden = encoder_outputs.last_hidden_state  # (B, S, D)
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            inputs_embeds=decoder_inputs_embeds,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_hidden,
            encoder_attention_mask=cross_mask,
            cache=cache,
            use_cache=use_cache,
            return_dict=True,
            position_ids=decoder_position_ids,
            **outputs_wanted,
        )
        sequence_output = decoder_outputs.last_hidden_state  # (B, T, D)
        if getattr(self.config, "scale_decoder_outputs", self.config.tie_word_embeddings):
            # Tied head: rescale before projecting on the vocabulary, as T5 does (Mesh TensorFlow).
            sequence_output = sequence_output * (self.model_dim**-0.5)
        logits = self.lm_head(sequence_output)  # (B, T, V)

        loss = None
        if labels is not None:
            loss = token_weighted_cross_entropy(
                logits, labels.to(logits.device), self.config.pad_token_id, reduce_loss or "mean"
            )

        output = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            **cache_output(getattr(decoder_outputs, CACHE_FIELD)),
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_hidden,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    def _shift_embeds_right(self, embeds: torch.Tensor) -> torch.Tensor:
        """``shift_right`` on embeddings: the start token's embedding, then ``embeds[:, :-1]``. (B, S, D)"""
        start = torch.full((embeds.shape[0], 1), self.config.decoder_start_token_id, device=embeds.device)
        return torch.cat([self.shared(start).to(embeds.dtype), embeds[:, :-1]], dim=1)

    def _resolve_mode(
        self,
        causal_LM: bool | None,
        input_ids: torch.Tensor | None,
        labels: torch.Tensor | None,
        encoder_outputs: Any,
    ) -> bool:
        """Explicit argument > config default (only when the pseudo encoder runs here) > auto-detect."""
        if causal_LM is not None:
            return bool(causal_LM)
        if encoder_outputs is not None:
            return False  # precomputed (generate): the pseudo encoder ran over the unshifted input
        if self.config.causal_LM is not None:
            return bool(self.config.causal_LM)
        return is_causal_lm_batch(input_ids, labels)

    def _causal_masks(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        decoder_input_ids: torch.LongTensor | None,
        decoder_inputs_embeds: torch.Tensor | None,
        decoder_attention_mask: torch.Tensor | None,
        labels: torch.LongTensor | None,
        past_length: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Causal-LM mode: the causal cross-attention mask ``(B, 1, T, S)`` and the decoder padding mask."""
        batch, length = embeds.shape[:2]
        if labels is not None and labels.shape != (batch, length):
            raise ValueError(
                f"causal_LM=True needs labels shaped like input_ids, got {tuple(labels.shape)} and "
                f"{(batch, length)}; use causal_LM=False for seq2seq batches"
            )
        encoder_mask = (
            torch.ones(batch, length, dtype=torch.long, device=embeds.device)
            if attention_mask is None
            else _shift_mask_right(attention_mask.to(embeds.device).long())
        )  # (B, S)
        q_length = (decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds).shape[1]
        if past_length + q_length > length:
            raise ValueError(
                f"causal_LM=True: decoder positions reach {past_length + q_length} but input_ids has only "
                f"{length} tokens; pass the whole sequence as input_ids"
            )
        if decoder_attention_mask is None and attention_mask is not None:
            # Decoder and input are aligned in causal mode, so the input's padding is the decoder's too.
            decoder_attention_mask = encoder_mask[:, : past_length + q_length]
        return masks.causal_cross_mask(encoder_mask, q_length, past_length), decoder_attention_mask

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return self._shift_right(labels)


AutoConfig.register(T5PseudoDecConfig.model_type, T5PseudoDecConfig, exist_ok=True)
AutoModelForSeq2SeqLM.register(T5PseudoDecConfig, T5PseudoDecForConditionalGeneration, exist_ok=True)
