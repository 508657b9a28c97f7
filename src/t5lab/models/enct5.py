"""EncT5: T5 fine-tuned as a non-autoregressive classifier / regressor.

Liu et al., "EncT5: A Framework for Fine-tuning T5 as Non-autoregressive Models" (arXiv 2110.08426).
The full T5 encoder reads the text; a *shallow* decoder (``num_decoder_layers``, default 1, copied
from the first layers of the pre-trained decoder) reads ``P`` learned "prompt" embeddings
(decoder input ids ``0..P-1``, ``P = 1`` for single-label classification and regression,
``P = num_labels`` for multi-label) and cross-attends to the encoder; a linear head scores the
decoder output. Compared with ``T5ForSequenceClassification`` (full decoder over the whole input
sequence) the decoder costs one layer over one token.

The API follows the reference implementation (github.com/monologg/EncT5):

.. code-block:: python

    config = EncT5Config.from_dict(T5Config(...).to_dict())
    config.num_decoder_layers, config.problem_type, config.num_labels = 1, "single_label_classification", 3
    model = EncT5ForSequenceClassification(config)
    model.load_weights_from_pretrained_t5(t5_dir)   # encoder, shared, first decoder layers
    model.prepare_for_fine_tuning()                 # fresh prompt embedding and head

Parameter names are transformers' T5 names (``shared``, ``encoder.*``, ``decoder.block.*``), so a
plain T5 checkpoint also loads with ``from_pretrained`` (extra decoder layers are reported unused,
``decoder_embeddings`` and ``classification_head`` new). Encoder and decoder are t5lab's own T5 core
(:mod:`t5lab.models.t5core`), so only transformers' public API is used.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    T5Config,
)
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqSequenceClassifierOutput

from t5lab.models.loading import LoadReport
from t5lab.models.positions import check_position_config
from t5lab.models.strict_types import typed_fields
from t5lab.models.t5core import T5Attention, T5CorePreTrainedModel, T5Stack

logger = logging.getLogger("t5lab")

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

# config fields that must agree between a T5 checkpoint and the EncT5 model it initialises
_ARCH_FIELDS = (
    "vocab_size",
    "d_model",
    "d_kv",
    "d_ff",
    "num_heads",
    "num_layers",
    "feed_forward_proj",
    "relative_attention_num_buckets",
)


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@typed_fields
@strict
class EncT5Config(T5Config):
    """T5 config plus the EncT5 decoder settings.

    Args:
        num_decoder_layers: decoder layers on top of the encoder (EncT5 uses 1).
        decoder_vocab_size: number of learned decoder prompt embeddings. ``None`` (default) means
            ``num_labels`` for multi-label classification and 1 otherwise; the model writes the
            resolved value back into the config. Stored as ``prompt_vocab_size`` because
            transformers maps every ``decoder_*`` key of an encoder-decoder config onto the text
            config (``decoder_vocab_size`` would silently become its ``vocab_size``).
        problem_type: ``"single_label_classification"`` (cross-entropy),
            ``"multi_label_classification"`` (one prompt and one score per label, BCE) or
            ``"regression"`` (MSE over ``num_labels`` outputs); inferred on the first forward with
            labels when unset, as transformers does.
        position_encoding: ``"relative"`` (default: T5's bucketed relative bias), ``"absolute"``
            (learned table), ``"sinusoidal"``, ``"rotary"`` (RoPE) or ``"none"`` (NoPE); see
            docs/positions.md and :mod:`t5lab.models.positions`.
        relative_attention_max_exact: Exact (one-distance) relative buckets per direction; None is
            T5's half of them.
        rotary_base: RoPE's ``base`` (``theta_i = base^(-2i/d_kv)``), 10000 as in RoFormer.
        max_position_embeddings: Rows of the ``"absolute"`` position tables (longest input).
    """

    model_type = "enct5"
    attribute_map = {**T5Config.attribute_map, "decoder_vocab_size": "prompt_vocab_size"}

    num_decoder_layers: int | None = 1
    prompt_vocab_size: int | None = None
    position_encoding: str = "relative"
    relative_attention_max_exact: int | None = None
    rotary_base: float | int = 10000.0
    max_position_embeddings: int = 512

    def __post_init__(self, **kwargs: Any):
        # `T5Config(...).to_dict()` carries model_type="t5"; the class attribute must win, otherwise
        # the instance would claim to be a plain T5 config.
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
        # Checked here rather than in a `validate_*` method: @strict wraps those errors in a
        # two-line StrictDataclassClassValidationError, which is not a ValueError. The model checks
        # again, because the reference API sets num_labels/problem_type after construction.
        check_enct5_config(self)
        check_position_config(self, bidirectional=True)  # the encoder's buckets are two-way

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> EncT5Config:
        """transformers' ``from_dict``; a plain T5 config (``model_type`` "t5") is *converted*.

        Converting keeps every T5 field except the decoder depth, which becomes EncT5's
        ``num_decoder_layers=1`` (pass ``num_decoder_layers=...`` to keep more), so that
        ``EncT5ForSequenceClassification.from_pretrained(t5_dir)`` builds the shallow decoder and
        reports the checkpoint's deeper decoder layers as unused.
        """
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type and "num_decoder_layers" in config_dict:
            logger.info(
                "converting a %r config to EncT5: num_decoder_layers %s -> 1",
                model_type,
                config_dict["num_decoder_layers"],
            )
            config_dict = {**config_dict, "num_decoder_layers": 1}
        return super().from_dict(config_dict, **kwargs)

    def num_prompts(self) -> int:
        """Decoder prompt tokens per example: ``num_labels`` for multi-label, else 1."""
        return self.num_labels if self.problem_type == "multi_label_classification" else 1


def check_enct5_config(config: EncT5Config) -> None:
    """Raise a one-line ``ValueError`` for EncT5 settings that cannot work together."""
    if config.problem_type is not None and config.problem_type not in PROBLEM_TYPES:
        raise ValueError(
            f"EncT5Config.problem_type={config.problem_type!r} is unknown; use one of {', '.join(PROBLEM_TYPES)} "
            "or None (inferred from the labels)"
        )
    if config.num_labels is None or config.num_labels < 1:
        raise ValueError(f"EncT5Config.num_labels must be >= 1, got {config.num_labels}")
    if config.problem_type == "single_label_classification" and config.num_labels < 2:
        raise ValueError(
            f"single_label_classification needs num_labels >= 2, got {config.num_labels}; use num_labels=2 for "
            "binary classification or problem_type='regression' for one score"
        )
    if config.num_decoder_layers is None or config.num_decoder_layers < 1:
        raise ValueError(
            f"EncT5Config.num_decoder_layers must be >= 1 (EncT5 uses 1), got {config.num_decoder_layers}"
        )
    if config.prompt_vocab_size is not None and config.prompt_vocab_size < 1:
        raise ValueError(f"EncT5Config.decoder_vocab_size must be >= 1, got {config.prompt_vocab_size}")
    if (
        config.problem_type == "multi_label_classification"
        and config.prompt_vocab_size is not None
        and config.prompt_vocab_size < config.num_labels
    ):
        raise ValueError(
            f"multi_label_classification uses one decoder prompt per label, but decoder_vocab_size="
            f"{config.prompt_vocab_size} < num_labels={config.num_labels}; set decoder_vocab_size >= num_labels"
        )


# ---------------------------------------------------------------------------------------------
# Output, decoder, head
# ---------------------------------------------------------------------------------------------


@dataclass
class EncT5SequenceClassifierOutput(Seq2SeqSequenceClassifierOutput):
    """transformers' ``Seq2SeqSequenceClassifierOutput``, the output of an encoder-decoder classifier:
    ``loss``, ``logits`` (B, num_labels), ``encoder_last_hidden_state`` (B, T, d),
    ``encoder_hidden_states`` / ``encoder_attentions``, and the decoder's ``decoder_hidden_states`` /
    ``decoder_attentions`` over the prompts and its ``cross_attentions``. The cache field stays None
    (EncT5 decodes once, without a cache)."""


class EncT5CrossAttention(T5Attention):
    """T5 cross-attention for a few queries: the key and value projections move to the query side.

    A standard cross-attention projects all ``T`` encoder states to keys and values,
    ``2 * T * d_model * inner`` multiply-adds per example, although EncT5 has only ``P`` (usually
    1) queries. Attention is linear in the keys and values, so per head ``h``

    - ``q_h . (W_k,h x_t) = (W_k,h^T q_h) . x_t``: the query is mapped into the model space once
      and dotted with the encoder states themselves;
    - ``sum_t a_t W_v,h x_t = W_v,h (sum_t a_t x_t)``: the encoder states are averaged first and
      projected once per query.

    That costs ``~2 * P * heads * d_model * (T + d_kv)`` instead, 1/60 of the projections at
    t5-small shape with ``P = 1`` and ``T = 128`` (the "absorbed" attention of DeepSeek-V2, Liu
    et al. 2024, arXiv:2405.04434, sec. 2.1.2, applied to T5's unscaled, bias-free
    cross-attention). The parameters (``q``, ``k``, ``v``, ``o``) and the result are those of
    :class:`~t5lab.models.t5core.T5Attention` (and transformers' T5) up to float rounding
    (``tests/models/test_enct5.py`` compares both paths and transformers' decoder).

    Attributes:
        absorb_kv: ``None`` (default) uses the absorbed form where it needs fewer FLOPs, ``True``
            / ``False`` force it on / off (tests, benchmarks).
    """

    absorb_kv: bool | None = None

    def uses_absorbed_form(self, num_queries: int, key_length: int) -> bool:
        """Whether :meth:`forward` takes the absorbed form for these sizes (FLOP count, above)."""
        if self.absorb_kv is not None:
            return self.absorb_kv
        d, dk = self.d_model, self.key_value_proj_dim
        absorbed = num_queries * d * (key_length + dk)  # per head
        standard = key_length * dk * (d + num_queries)  # per head: K/V projections + QK^T, AV
        return absorbed < standard

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        cache: Any = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """:class:`~t5lab.models.t5core.T5Attention`'s inputs and outputs: (output, position bias, weights).

        ``position_bias`` of a cross-attention is the encoder padding as an additive ``(B, 1, 1, T)``
        term (the core folds the mask into it). The standard form runs whenever the absorbed one
        does not apply: self-attention, a cache, fewer FLOPs the standard way, or projection weights
        that are not plain tensors on the input's device (accelerate offload keeps them on the meta
        device and fills them in only inside the projection's own forward).
        """
        if (
            key_value_states is None
            or cache is not None
            or not self._weights_at_hand(hidden_states.device)
            or not self.uses_absorbed_form(hidden_states.shape[1], key_value_states.shape[1])
        ):
            return super().forward(
                hidden_states,
                mask=mask,
                key_value_states=key_value_states,
                position_bias=position_bias,
                cache=cache,
                output_attentions=output_attentions,
            )
        batch, queries, _ = hidden_states.shape
        heads, dk, d = self.n_heads, self.key_value_proj_dim, self.d_model
        length = key_value_states.shape[1]
        q = self.q(hidden_states).view(batch, queries, heads, dk).transpose(1, 2)  # (B, H, P, dk)
        # nn.Linear stores W (out, in): head h owns rows h*dk:(h+1)*dk of k.weight / v.weight
        w_k = self.k.weight.view(heads, dk, d)  # (H, dk, d)
        w_v = self.v.weight.view(heads, dk, d)  # (H, dk, d)
        q_model = torch.einsum("bhpk,hkd->bhpd", q, w_k)  # (B, H, P, d): W_k,h^T q_h
        # one bmm over (H * P) query rows per example: no (B, H, d, T) broadcast copy of the states
        scores = torch.bmm(
            q_model.reshape(batch, heads * queries, d), key_value_states.transpose(1, 2)
        ).view(batch, heads, queries, length)  # (B, H, P, T); T5 does not scale the scores
        for extra in (position_bias, mask):  # additive float or bool (True = attend)
            if extra is None:
                continue
            if extra.dtype == torch.bool:
                extra = torch.zeros_like(extra, dtype=scores.dtype).masked_fill(~extra, torch.finfo(scores.dtype).min)
            scores = scores + extra.to(scores.dtype)
        weights = nn.functional.softmax(scores.float(), dim=-1).type_as(scores)  # (B, H, P, T)
        weights = nn.functional.dropout(weights, p=self.dropout, training=self.training)
        mixed = torch.bmm(weights.reshape(batch, heads * queries, length), key_value_states)  # (B, H*P, d)
        context = torch.einsum("bhpd,hkd->bphk", mixed.view(batch, heads, queries, d), w_v)  # (B, P, H, dk)
        output = self.o(context.reshape(batch, queries, heads * dk))  # (B, P, d)
        return output, position_bias, weights if output_attentions else None

    def _weights_at_hand(self, device: torch.device) -> bool:
        """Whether ``k``/``v``'s weights are real tensors on ``device`` (not offloaded to meta)."""
        return all(
            not w.is_meta and w.device == device and type(w) in (torch.Tensor, nn.Parameter)
            for w in (self.k.weight, self.v.weight)
        )


# The prompts are a set, not a sequence: they see each other in both directions (for P == 1 the
# same as causal). A 4D mask is used by the core exactly as given, so no causal mask is added.
def _prompt_self_mask(num_prompts: int, device: torch.device) -> torch.Tensor:
    return torch.ones(1, 1, num_prompts, num_prompts, dtype=torch.bool, device=device)  # (1, 1, P, P)


class EncT5Decoder(T5Stack):
    """A decoder :class:`~t5lab.models.t5core.T5Stack` run over prompt embeddings, non-autoregressively.

    Its blocks, norms and parameter names are T5's decoder's (the first block keeps the decoder's
    one-way relative position buckets, so a T5 checkpoint's table keeps its meaning). EncT5 needs
    less than a generative decoder: no KV cache and no causal mask (the prompts attend to each other
    in both directions), and the cross-attention is :class:`EncT5CrossAttention`. Parity with
    transformers' decoder ``T5Stack`` is covered by ``tests/models/test_enct5.py``.
    """

    def __init__(self, config: T5Config, num_layers: int | None = None):
        # The prompt embedding lives on the parent model (`decoder_embeddings`): a 1-row placeholder
        # keeps the stack from allocating a (vocab_size, d_model) table only to drop it.
        super().__init__(
            config,
            embed_tokens=nn.Embedding(1, config.d_model),
            is_decoder=True,
            num_layers=num_layers,
            cross_attention=True,
        )
        self.embed_tokens = None
        for i, block in enumerate(self.block):
            # a few prompt queries over T encoder states: project the queries, not the states
            block.layer[1].EncDecAttention = EncT5CrossAttention(config, has_relative_attention_bias=False, layer_idx=i)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the blocks over ``inputs_embeds`` (B, P, d) cross-attending to (B, T, d), without a cache."""
        kwargs.pop("use_cache", None)
        return super().forward(
            inputs_embeds=inputs_embeds,
            attention_mask=_prompt_self_mask(inputs_embeds.shape[1], inputs_embeds.device),
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            use_cache=False,
            **kwargs,
        )


class EncT5ClassificationHead(nn.Module):
    """Linear scores on the decoder output.

    One prompt (single-label, regression): ``out_proj(h[:, 0])`` -> (B, num_labels).
    ``num_labels`` prompts (multi-label): prompt ``l`` is scored by its own ``Linear(d_model, 1)``,
    stored as row ``l`` of ``out_proj`` -> (B, num_labels). The parameters have the same shape in
    both cases, so the head is one ``nn.Linear``.
    """

    def __init__(self, config: EncT5Config):
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.out_proj = nn.Linear(config.d_model, config.num_labels)

    def forward(self, hidden_states: torch.Tensor, per_prompt: bool) -> torch.Tensor:
        hidden_states = self.dropout(hidden_states)  # (B, P, d)
        if per_prompt:
            # prompt l's score is row l of out_proj applied to prompt l: the diagonal of all (L, L)
            # scores. Calling the Linear (not reading its weight) lets accelerate's hooks run.
            return torch.diagonal(self.out_proj(hidden_states), dim1=1, dim2=2)  # (B, L)
        return self.out_proj(hidden_states[:, 0])  # (B, num_labels)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class EncT5ForSequenceClassification(T5CorePreTrainedModel):
    """EncT5 for sequence classification / regression (arXiv 2110.08426).

    Args:
        config: an :class:`EncT5Config`. ``decoder_vocab_size=None`` is resolved here.

    Attributes:
        shared: token embedding (tied to ``encoder.embed_tokens``).
        encoder: the encoder :class:`~t5lab.models.t5core.T5Stack`.
        decoder: :class:`EncT5Decoder` with ``num_decoder_layers`` T5 decoder blocks.
        decoder_embeddings: ``nn.Embedding(decoder_vocab_size, d_model)`` prompt embeddings.
        classification_head: :class:`EncT5ClassificationHead`.
    """

    config_class = EncT5Config
    config: EncT5Config
    _tied_weights_keys = {"encoder.embed_tokens.weight": "shared.weight"}
    # same as transformers' T5: an old checkpoint artefact that no T5 uses
    _keys_to_ignore_on_load_unexpected = [
        r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",
    ]

    def __init__(self, config: EncT5Config):
        if config.prompt_vocab_size is None:
            config.prompt_vocab_size = config.num_prompts()
        check_enct5_config(config)
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        # both stacks read the model's own config (attention back-end switches reach them)
        self.encoder = T5Stack(config, embed_tokens=self.shared, is_decoder=False)
        self.decoder = EncT5Decoder(config, num_layers=config.num_decoder_layers)

        self.decoder_embeddings = nn.Embedding(config.prompt_vocab_size, config.d_model)
        self.classification_head = EncT5ClassificationHead(config)
        self.post_init()

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        # EncT5 builds its decoder inputs itself: encoder ids and padding only
        input_ids = torch.tensor([[7, 6, 0, 0, 1], [1, 2, 3, 0, 0], [0, 0, 0, 4, 5]])
        return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}

    # -- embeddings -------------------------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.shared = new_embeddings
        self.encoder.set_input_embeddings(new_embeddings)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """T5's init, plus the EncT5 prompt embedding (N(0, factor), as ``shared``) and head
        (N(0, factor / sqrt(d_model)), zero bias, as T5's classification head)."""
        super()._init_weights(module)
        factor = self.config.initializer_factor
        if isinstance(module, EncT5ForSequenceClassification):
            init.normal_(module.shared.weight, mean=0.0, std=factor)
            init.normal_(module.decoder_embeddings.weight, mean=0.0, std=factor)
        elif isinstance(module, EncT5ClassificationHead):
            init.normal_(module.out_proj.weight, mean=0.0, std=factor * self.config.d_model**-0.5)
            init.zeros_(module.out_proj.bias)

    @torch.no_grad()
    def prepare_for_fine_tuning(self) -> None:
        """Re-initialise the decoder prompt embedding and the classification head.

        Call after :meth:`load_weights_from_pretrained_t5` and before fine-tuning. Uses torch's init
        functions directly: transformers' ``initialization`` helpers skip tensors already marked as
        initialised, which after ``from_pretrained`` is all of them.
        """
        factor = self.config.initializer_factor
        nn.init.normal_(self.decoder_embeddings.weight, mean=0.0, std=factor)
        nn.init.normal_(
            self.classification_head.out_proj.weight, mean=0.0, std=factor * self.config.d_model**-0.5
        )
        nn.init.zeros_(self.classification_head.out_proj.bias)

    # -- loading ----------------------------------------------------------------------------------

    def load_weights_from_pretrained_t5(self, model_path: str | os.PathLike) -> LoadReport:
        """Copy ``shared``, the encoder and the first ``num_decoder_layers`` decoder layers from a T5
        checkpoint directory (``T5ForConditionalGeneration``/``T5Model.save_pretrained``).

        The prompt embedding and head keep their values (call :meth:`prepare_for_fine_tuning` to
        re-draw them). Loading goes through ``from_pretrained`` so sharded/safetensors checkpoints
        and tied keys are handled by transformers.

        Returns:
            The :class:`~t5lab.models.loading.LoadReport` (also logged and kept as ``self.load_report``):
            ``used`` tensors copied, ``new`` ones left as they are, ``unused`` checkpoint tensors
            (lm_head, decoder layers beyond ``num_decoder_layers``, ...).

        Raises:
            ValueError: no T5 config in ``model_path``, or its architecture differs from this model's.
        """
        model_path = str(model_path)
        if not os.path.isfile(os.path.join(model_path, "config.json")):
            raise ValueError(
                f"no T5 checkpoint at {model_path!r} (config.json missing); pass a directory written by "
                "T5ForConditionalGeneration.save_pretrained"
            )
        source = T5Config.from_pretrained(model_path)
        if source.num_decoder_layers < self.config.num_decoder_layers:
            raise ValueError(
                f"the checkpoint at {model_path} has {source.num_decoder_layers} decoder layers but this EncT5 "
                f"model has num_decoder_layers={self.config.num_decoder_layers}; lower num_decoder_layers"
            )
        differ = [
            f"{k}={getattr(source, k)} (model: {getattr(self.config, k)})"
            for k in _ARCH_FIELDS
            if getattr(source, k) != getattr(self.config, k)
        ]
        if differ:
            raise ValueError(
                f"the T5 checkpoint at {model_path} does not match this EncT5 config: {', '.join(differ)}; "
                "build the config with EncT5Config.from_dict(T5Config.from_pretrained(path).to_dict())"
            )
        # A throw-away instance of this class loads the checkpoint with transformers' own machinery;
        # copying only the tensors it reports as loaded keeps this model's prompt embedding/head.
        loaded, info = type(self).from_pretrained(
            model_path, config=copy.deepcopy(self.config), output_loading_info=True
        )
        report = LoadReport.from_loading_info(loaded, info, source=model_path)
        own, theirs = self.state_dict(), loaded.state_dict()
        with torch.no_grad():
            for name in report.used:
                own[name].copy_(theirs[name])
        self.load_report = report
        logger.info(report.summary())
        return report

    # -- forward ----------------------------------------------------------------------------------

    def _resolve_problem_type(self, labels: torch.Tensor | None) -> str | None:
        """transformers' rule (``T5ForSequenceClassification``): unset problem_type is inferred from
        ``num_labels`` and the label dtype, and stored in the config."""
        if self.config.problem_type is None and labels is not None:
            if self.config.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
            try:
                check_enct5_config(self.config)
            except ValueError:
                self.config.problem_type = None  # a refused guess must not end up in a saved config
                raise
        return self.config.problem_type

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple[torch.Tensor, ...] | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> EncT5SequenceClassifierOutput | tuple:
        """Classify ``input_ids`` (B, T).

        Args:
            input_ids: (B, T) token ids (or ``inputs_embeds`` (B, T, d), or ``encoder_outputs``).
            attention_mask: (B, T), 1 for tokens, 0 for padding.
            labels: single-label: (B,) int class ids (-100 ignored); multi-label: (B, num_labels)
                multi-hot in [0, 1]; regression: (B,) or (B, num_labels) floats.
            output_attentions / output_hidden_states: also return per-layer attentions / hidden
                states, as transformers names them for encoder-decoders: ``encoder_attentions``,
                ``decoder_attentions``, ``cross_attentions``, ``encoder_hidden_states``,
                ``decoder_hidden_states``.

        Returns:
            :class:`EncT5SequenceClassifierOutput` with ``logits`` (B, num_labels) and ``loss`` (mean
            over the non-ignored examples / entries) when ``labels`` is given.
        """
        problem_type = self._resolve_problem_type(labels)
        per_prompt = problem_type == "multi_label_classification"
        if per_prompt and self.config.prompt_vocab_size < self.config.num_labels:
            check_enct5_config(self.config)  # raises the one-line explanation

        flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        kwargs.pop("use_cache", None)  # nothing is cached: one decoder pass over the prompts
        for name in ("cache", "past_key_values"):
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"EncT5 keeps no KV cache; do not pass {name}=")
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                **flags,
                **kwargs,
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(
                last_hidden_state=encoder_outputs[0],
                hidden_states=encoder_outputs[1] if len(encoder_outputs) > 1 else None,
                attentions=encoder_outputs[2] if len(encoder_outputs) > 2 else None,
            )
        encoder_states = encoder_outputs.last_hidden_state  # (B, T, d)
        batch = encoder_states.shape[0]

        num_prompts = self.config.num_labels if per_prompt else 1
        prompt_ids = torch.arange(num_prompts, device=encoder_states.device)  # decoder ids 0..P-1
        prompts = self.decoder_embeddings(prompt_ids).unsqueeze(0).expand(batch, -1, -1)  # (B, P, d)
        decoder_outputs = self.decoder(
            inputs_embeds=prompts,
            encoder_hidden_states=encoder_states,
            encoder_attention_mask=attention_mask,
            **flags,
            **kwargs,
        )
        logits = self.classification_head(decoder_outputs.last_hidden_state, per_prompt)  # (B, num_labels)

        loss = None if labels is None else self._loss(logits, labels.to(logits.device), problem_type)
        output = EncT5SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_states,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
        """CE / BCE / MSE, as transformers computes them, after checking the labels fit the problem."""
        batch, num_labels = logits.shape
        floating = labels.is_floating_point()
        if problem_type == "single_label_classification":
            if floating or labels.dtype == torch.bool:
                raise ValueError(
                    f"single_label_classification needs integer class ids, got {labels.dtype} labels; pass "
                    "labels.long(), or set problem_type='multi_label_classification' (multi-hot) or 'regression'"
                )
            if labels.numel() != batch:
                raise ValueError(
                    f"single_label_classification needs one class id per example (shape ({batch},)), "
                    f"got labels of shape {tuple(labels.shape)}"
                )
            labels = labels.reshape(batch).long()
            bad = (labels != -100) & ((labels < 0) | (labels >= num_labels))
            # value checks read the tensor (a host sync): skipped while torch.compile/export traces
            if not torch.compiler.is_compiling() and bad.any():
                raise ValueError(
                    f"class id {labels[bad][0].item()} is out of range for num_labels={num_labels}; labels must "
                    f"be in [0, {num_labels - 1}] (or -100 to ignore an example)"
                )
            return F.cross_entropy(logits, labels, ignore_index=-100)
        if problem_type == "multi_label_classification":
            if tuple(labels.shape) != (batch, num_labels):
                raise ValueError(
                    f"multi_label_classification needs multi-hot labels of shape ({batch}, {num_labels}), "
                    f"got {tuple(labels.shape)}"
                )
            labels = labels.to(logits.dtype)
            if not torch.compiler.is_compiling() and ((labels < 0) | (labels > 1)).any():
                raise ValueError(
                    "multi_label_classification labels must be in [0, 1] (multi-hot or probabilities)"
                )
            return F.binary_cross_entropy_with_logits(logits, labels)
        # regression
        if num_labels == 1 and labels.numel() == batch:
            labels = labels.reshape(batch, 1)
        if tuple(labels.shape) != (batch, num_labels):
            want = f"({batch},) or ({batch}, 1)" if num_labels == 1 else f"({batch}, {num_labels})"
            raise ValueError(
                f"regression with num_labels={num_labels} needs labels of shape {want}, got {tuple(labels.shape)}"
            )
        return F.mse_loss(logits, labels.to(logits.dtype))


# Registration at import time, so saved EncT5 models load with the Auto classes after `import t5lab`.
AutoConfig.register("enct5", EncT5Config, exist_ok=True)
AutoModelForSequenceClassification.register(EncT5Config, EncT5ForSequenceClassification, exist_ok=True)

__all__ = [
    "EncT5ClassificationHead",
    "EncT5Config",
    "EncT5CrossAttention",
    "EncT5Decoder",
    "EncT5ForSequenceClassification",
    "EncT5SequenceClassifierOutput",
    "check_enct5_config",
]
