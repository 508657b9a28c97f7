"""Value heads for PPO: the LM variants with a scalar value per output position.

A PPO policy-and-critic shares one transformer body: the policy is the LM head, the critic is a
linear value head on the **last decoder hidden state** (the decoder stack's output, after its final
layer norm). This is the layout of the original ``trl`` value-head models
(https://github.com/huggingface/trl, ``AutoModelForSeq2SeqLMWithValueHead``; Ziegler et al. 2019,
"Fine-Tuning Language Models from Human Preferences", arXiv:1909.08593), rebuilt here as plain
subclasses of the LM classes so that ``generate``, ``save_pretrained``/``from_pretrained`` and the
Auto classes work unchanged:

========================================  ===================================================  ==========================
model                                     config (``model_type``)                              Auto class
========================================  ===================================================  ==========================
:class:`T5HeadWithValueModel`             ``T5WithValueHeadConfig`` (``t5_with_value_head``)   ``AutoModelForSeq2SeqLM``
:class:`T5PseudoDecWithValueHead`         ``T5PseudoDecWithValueHeadConfig``                   ``AutoModelForSeq2SeqLM``
:class:`T5DecoderOnlyWithValueHead`       ``T5DecoderOnlyWithValueHeadConfig``                 ``AutoModelForCausalLM``
========================================  ===================================================  ==========================

One mixin (:class:`ValueHeadMixin`) does the work; the classes differ only by their LM base class.
Their forward returns the LM output (same ``logits``/``loss`` as the plain LM) plus ``value`` of
shape ``(batch, output_len)`` in float32. (The field was called ``values`` before; that name hid
``ModelOutput.values()``, which pytree flattening, ``torch.compile`` and ``torch.export`` call.)
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.nn import functional as F  # noqa: N812
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers import initialization as init
from transformers.modeling_outputs import (
    BaseModelOutput,
    CausalLMOutputWithPast,
    ModelOutput,
    Seq2SeqLMOutput,
)

from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM
from t5lab.models.loading import LoadReport
from t5lab.models.pseudo_decoder import T5PseudoDecConfig, T5PseudoDecForConditionalGeneration
from t5lab.models.strict_types import typed_fields
from t5lab.models.t5core import CACHE_FIELD

logger = logging.getLogger("t5lab")

__all__ = [
    "T5ValueHead",
    "ValueHeadMixin",
    "ValueHeadConfigMixin",
    "Seq2SeqLMOutputWithValue",
    "CausalLMOutputWithPastAndValue",
    "T5WithValueHeadConfig",
    "T5HeadWithValueModel",
    "T5PseudoDecWithValueHeadConfig",
    "T5PseudoDecWithValueHead",
    "T5DecoderOnlyWithValueHeadConfig",
    "T5DecoderOnlyWithValueHead",
]


# ---------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Seq2SeqLMOutputWithValue(Seq2SeqLMOutput):
    """:class:`~transformers.modeling_outputs.Seq2SeqLMOutput` plus the value head's output.

    Attributes:
        value: ``(batch, decoder_len)`` float32, one value per decoder position.
    """

    value: torch.FloatTensor | None = None


@dataclass
class CausalLMOutputWithPastAndValue(CausalLMOutputWithPast):
    """:class:`~transformers.modeling_outputs.CausalLMOutputWithPast` plus the value head's output.

    Attributes:
        value: ``(batch, seq_len)`` float32, one value per position.
    """

    value: torch.FloatTensor | None = None


# LM output class -> the same output with a `value` field, and where it keeps the last decoder
# hidden state; most specific first.
_OUTPUT_WITH_VALUE: list[tuple[type[ModelOutput], type[ModelOutput], str]] = [
    (Seq2SeqLMOutput, Seq2SeqLMOutputWithValue, "decoder_hidden_states"),
    (CausalLMOutputWithPast, CausalLMOutputWithPastAndValue, "hidden_states"),
]

# hidden-state fields that the value head asks for and drops again unless the caller asked too
_HIDDEN_STATE_FIELDS = ("hidden_states", "decoder_hidden_states", "encoder_hidden_states")


def _value_output_class(output: ModelOutput) -> tuple[type[ModelOutput], str]:
    for lm_cls, value_cls, hidden_field in _OUTPUT_WITH_VALUE:
        if isinstance(output, lm_cls):
            return value_cls, hidden_field
    raise ValueError(
        f"the value head does not know the LM output type {type(output).__name__}; "
        "add it to t5lab.models.value_head._OUTPUT_WITH_VALUE"
    )


def cache_argument_name(forward: Any) -> str | None:
    """The name under which ``forward`` takes the KV cache: ``cache`` (transformers >= 5.24),
    ``past_key_values`` (older), or None when it takes neither."""
    params = inspect.signature(forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def rename_cache_argument(kwargs: dict[str, Any], name: str | None) -> dict[str, Any]:
    """``kwargs`` with the cache under ``name`` whichever of ``cache`` / ``past_key_values`` the caller
    used, so that neither transformers version sees a name it deprecates or does not know.

    Raises:
        ValueError: both names were given.
    """
    if name is None or ("cache" not in kwargs and "past_key_values" not in kwargs):
        return kwargs
    if "cache" in kwargs and "past_key_values" in kwargs:
        raise ValueError("pass the KV cache once, as cache= or past_key_values=, not both")
    other = "past_key_values" if name == "cache" else "cache"
    if other in kwargs:
        kwargs = dict(kwargs)
        kwargs[name] = kwargs.pop(other)
    return kwargs


# ---------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------


@dataclass(repr=False)
class ValueHeadConfigMixin:
    """Config fields of the value head, mixed into a ``T5Config`` subclass (a ``@strict`` dataclass).

    Attributes:
        value_head_dropout: dropout on the hidden state before the value head; ``None`` uses the
            model's ``dropout_rate``.
        value_head_init_scale: the value head's weight is drawn from
            ``N(0, (initializer_factor * value_head_init_scale)**2 / d_model)`` with a zero bias. The
            decoder output is RMS-normalised (unit RMS at init with ``initializer_factor=1``), so
            the initial values have an RMS of about ``value_head_init_scale``: 0.1 keeps them near
            0, so early PPO advantages are driven by the rewards rather than by a random critic.
    """

    value_head_dropout: float | None = None
    value_head_init_scale: float = 0.1

    def __post_init__(self, **kwargs: Any) -> None:
        # `T5Config.to_dict()` (and a plain LM checkpoint's config.json) carries the base model_type;
        # `from_dict` would set it as an instance attribute and hide the subclass's own model_type.
        kwargs.pop("model_type", None)
        # Checked here too so that a bad value raises a plain one-line ValueError at construction;
        # `@strict` wraps errors of its class validators in its own exception type.
        self.validate_value_head()
        super().__post_init__(**kwargs)  # type: ignore[misc]

    @classmethod
    def from_lm_config(cls, config: T5Config, **overrides: Any) -> Any:
        """The value-head config with every field of a plain LM config (and ``overrides``).

        Args:
            config: the LM's config, e.g. a ``T5Config`` for :class:`T5WithValueHeadConfig`.
            **overrides: value-head (or any other) fields to set.

        Returns:
            An instance of ``cls`` with ``cls.model_type``.
        """
        values = config.to_dict()
        for key in ("model_type", "architectures", "transformers_version"):
            values.pop(key, None)
        values.update(overrides)
        new = cls.from_dict(values)  # type: ignore[attr-defined]
        # to_dict() leaves out the attention back-end chosen at run time (sdpa/eager/flex)
        new._attn_implementation_internal = config._attn_implementation_internal
        return new

    def validate_value_head(self) -> None:
        """``@strict`` class validator (also run at construction): the value-head fields are in range.

        Raises:
            ValueError: dropout outside [0, 1) or a negative init scale.
        """
        if self.value_head_dropout is not None and not 0.0 <= self.value_head_dropout < 1.0:
            raise ValueError(
                f"value_head_dropout={self.value_head_dropout} is not a probability; "
                "use a value in [0, 1) or None to reuse dropout_rate"
            )
        if self.value_head_init_scale < 0:
            raise ValueError(
                f"value_head_init_scale={self.value_head_init_scale} is negative; use a value >= 0 "
                "(0 starts every value at exactly 0)"
            )


@typed_fields
@strict
class T5WithValueHeadConfig(ValueHeadConfigMixin, T5Config):
    """``T5Config`` with the value-head fields of :class:`ValueHeadConfigMixin`."""

    model_type = "t5_with_value_head"


@typed_fields
@strict
class T5PseudoDecWithValueHeadConfig(ValueHeadConfigMixin, T5PseudoDecConfig):
    """``T5PseudoDecConfig`` with the value-head fields of :class:`ValueHeadConfigMixin`."""

    model_type = "t5_pseudo_dec_with_value_head"


@typed_fields
@strict
class T5DecoderOnlyWithValueHeadConfig(ValueHeadConfigMixin, T5DecoderOnlyConfig):
    """``T5DecoderOnlyConfig`` with the value-head fields of :class:`ValueHeadConfigMixin`."""

    model_type = "t5_decoder_only_with_value_head"


# ---------------------------------------------------------------------------------------------------------
# Head
# ---------------------------------------------------------------------------------------------------------


class T5ValueHead(nn.Module):
    """Dropout + ``Linear(d_model, 1)`` on the last decoder hidden state, computed in float32.

    Args:
        config: a T5-family config; ``value_head_dropout`` is used when the config has it (and it is
            not ``None``), else ``dropout_rate``.

    Attributes:
        detach_input: when True the hidden state is detached before the head, so a value loss trains
            the head but sends no gradient into the body (see ``detach_head``).
    """

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        p = getattr(config, "value_head_dropout", None)
        self.dropout = nn.Dropout(config.dropout_rate if p is None else p)
        # fp32 even when built under a bf16/fp16 default dtype (`_from_config(dtype=...)`)
        self.summary = nn.Linear(config.d_model, 1, dtype=torch.float32)
        self.detach_input = False

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Values for every position.

        Args:
            hidden_states: ``(batch, len, d_model)``, any float dtype.

        Returns:
            ``(batch, len)`` float32.
        """
        if self.detach_input:
            hidden_states = hidden_states.detach()
        # The head's weights are fp32 (built so, and `_keep_in_fp32_modules_strict` when loading), so
        # a bf16 body does not quantise the values that feed GAE and the value loss. The Linear is
        # called, not its weight read, so accelerate's offload hooks on it run (device_map loads).
        h = self.dropout(hidden_states.to(self.summary.weight.dtype))  # (B, T, D)
        return self.summary(h).squeeze(-1).float()  # (B, T) fp32


# ---------------------------------------------------------------------------------------------------------
# Mixin
# ---------------------------------------------------------------------------------------------------------


class ValueHeadMixin:
    """Adds ``v_head`` to a transformers LM class; put it first in the bases: ``(ValueHeadMixin, LM)``.

    The subclass's ``forward`` is the LM's forward (same signature, so ``generate`` validates its
    kwargs as for the LM) that also returns ``value``. The last decoder hidden state is the LM's
    own ``output_hidden_states`` (transformers ties its last entry to the stack's output, after the
    final layer norm); the hidden states are dropped from the output again unless the caller asked
    for them. No hooks and no per-call state, so ``torch.compile(fullgraph=True)`` and
    ``torch.export`` trace it.
    """

    v_head: T5ValueHead

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a class attribute, so that from_pretrained/_from_config see it before the instance exists
        strict = getattr(cls, "_keep_in_fp32_modules_strict", None) or ()
        cls._keep_in_fp32_modules_strict = sorted({*strict, "v_head"})
        if "forward" in cls.__dict__:
            return
        lm_forward = _lm_base(cls).forward

        # functools.wraps keeps the LM forward's signature (via __wrapped__) and docstring:
        # GenerationMixin inspects `self.forward`'s parameters to validate and route kwargs.
        @functools.wraps(lm_forward)
        def forward(self: ValueHeadMixin, *args: Any, **kw: Any) -> ModelOutput | tuple:
            return self._forward_with_values(lm_forward, *args, **kw)

        cls.forward = forward  # type: ignore[method-assign]

    def __init__(self, config: T5Config, *args: Any, **kwargs: Any) -> None:
        # A plain LM config (e.g. `T5HeadWithValueModel(T5Config(...))`, or a base-class helper such
        # as `from_t5` that builds the LM's config) becomes the value-head config, so that
        # save_pretrained records the value-head model type and Auto classes load the head back.
        config_class = type(self).config_class  # type: ignore[attr-defined]
        if not isinstance(config, config_class) and isinstance(config, _lm_base(type(self)).config_class):
            config = config_class.from_lm_config(config)
        super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]  # the LM's post_init ran
        # transformers picks the loss from the class name's suffix (ForCausalLM, ...); the value-head
        # class names have none, and an unknown loss type logs a warning in every loss call, which
        # torch.compile cannot trace: use the LM class's
        match = re.search(r"For[A-Za-z]+$", _lm_base(type(self)).__name__)
        if getattr(self, "loss_type", None) is None and match is not None:
            self.loss_type = match.group(0)
        self.v_head = T5ValueHead(config)
        # A second post_init initialises only the new head: modules initialised by the first one are
        # flagged `_is_hf_initialized` and skipped; it also re-collects tied/fp32 keys.
        self.post_init()  # type: ignore[attr-defined]

    # -- weights ------------------------------------------------------------------------------------

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Dispatch on the head's Linear itself, not on T5ValueHead: transformers skips modules without
        # parameters of their own when initialising custom-code models. `init.*` leaves tensors that
        # were loaded from a checkpoint alone.
        v_head = self._modules.get("v_head")  # type: ignore[attr-defined]
        if v_head is None or module is not v_head.summary:
            super()._init_weights(module)  # type: ignore[misc]
            return
        cfg = self.config  # type: ignore[attr-defined]
        scale = getattr(cfg, "value_head_init_scale", 0.1)
        std = cfg.initializer_factor * scale * cfg.d_model**-0.5
        init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)

    # Overridden to report what a load did: starting from a plain LM checkpoint is the usual case and
    # the fresh head (plus anything else that was not in the checkpoint) should be visible.
    # Covered by tests/models/test_value_head.py::test_from_plain_lm_checkpoint*.
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """``from_pretrained`` of the LM class; also builds a :class:`~t5lab.models.loading.LoadReport`.

        Works on a plain LM checkpoint (the head is new and freshly initialised) and on a value-head
        checkpoint (the head is loaded). The report is attached as ``model.load_report`` and logged
        (``logging.getLogger("t5lab")``): INFO when only the head is new, WARNING when body tensors
        were missing from the checkpoint too.
        """
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(  # type: ignore[misc]
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        report = LoadReport.from_loading_info(model, info, source=str(pretrained_model_name_or_path))
        model.load_report = report
        new_body = [n for n in report.new if not n.startswith("v_head.")]
        logger.log(logging.WARNING if new_body else logging.INFO, report.summary())
        return (model, info) if want_info else model

    # -- head control -------------------------------------------------------------------------------

    def detach_head(self) -> None:
        """Stop gradients from the value head into the body (the head itself still trains)."""
        self.v_head.detach_input = True

    def attach_head(self) -> None:
        """Let gradients of a value loss flow into the body again (the default)."""
        self.v_head.detach_input = False

    @property
    def head_detached(self) -> bool:
        """Whether :meth:`detach_head` is in effect."""
        return self.v_head.detach_input

    # -- forward ------------------------------------------------------------------------------------

    def _forward_with_values(self, lm_forward: Any, *args: Any, **kwargs: Any) -> ModelOutput | tuple:
        config = self.config  # type: ignore[attr-defined]
        return_dict = kwargs.pop("return_dict", None)
        if return_dict is None:
            return_dict = getattr(config, "return_dict", True)
        want_hidden = kwargs.pop("output_hidden_states", None)
        if want_hidden is None:
            want_hidden = getattr(config, "output_hidden_states", False)
        kwargs = rename_cache_argument(kwargs, cache_argument_name(lm_forward))
        output, last_hidden_state = self._lm_outputs(lm_forward, want_hidden, *args, **kwargs)
        value_cls, _ = _value_output_class(output)
        value = self.v_head(last_hidden_state)  # (B, T) fp32 from the last decoder hidden state
        fields = dict(output)  # only the fields that are set, so None fields stay None
        if not want_hidden:
            for name in _HIDDEN_STATE_FIELDS:
                fields.pop(name, None)
        output = value_cls(**fields, value=value)
        return output if return_dict else output.to_tuple()

    def _lm_outputs(
        self, lm_forward: Any, want_hidden: bool, *args: Any, **kwargs: Any
    ) -> tuple[ModelOutput, torch.Tensor]:
        """The LM's output (a dict output) and its last decoder hidden state ``(B, T, d_model)``.

        The default asks the LM for ``output_hidden_states``, whose last entry transformers ties to
        the stack's output; a subclass whose LM records hidden states in a way a trace cannot follow
        overrides this.
        """
        output = lm_forward(self, *args, return_dict=True, output_hidden_states=True, **kwargs)
        _, hidden_field = _value_output_class(output)
        return output, output[hidden_field][-1]


def _lm_base(cls: type) -> type:
    """The first class in ``cls``'s MRO that is not a value-head class and defines ``forward``."""
    for base in cls.__mro__[1:]:
        if not issubclass(base, ValueHeadMixin) and "forward" in base.__dict__:
            return base
    raise TypeError(f"{cls.__name__} needs an LM base class with a forward, e.g. (ValueHeadMixin, LMClass)")


# ---------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------


class T5HeadWithValueModel(ValueHeadMixin, T5ForConditionalGeneration):
    """transformers' ``T5ForConditionalGeneration`` with a value head; ``value``: ``(B, decoder_len)``."""

    config_class = T5WithValueHeadConfig
    config: T5WithValueHeadConfig

    def _lm_outputs(
        self, lm_forward: Any, want_hidden: bool, *args: Any, **kwargs: Any
    ) -> tuple[Seq2SeqLMOutput, torch.Tensor]:
        """``T5ForConditionalGeneration.forward`` spelled out with its modules (encoder, decoder,
        ``lm_head``), so that the decoder's output is at hand without ``output_hidden_states``:
        transformers' T5 records hidden states through hooks it installs on the first call that asks
        for them, which ``torch.compile`` cannot trace. Same logits and loss (tested against the
        plain LM)."""
        if args:  # positional arguments, in the LM forward's order
            names = [n for n in inspect.signature(lm_forward).parameters if n != "self"]
            kwargs.update(zip(names, args))
        cache = kwargs.pop("cache", None)
        cache = kwargs.pop("past_key_values", None) if cache is None else cache
        attention_mask = kwargs.pop("attention_mask", None)
        labels = kwargs.pop("labels", None)
        decoder_input_ids = kwargs.pop("decoder_input_ids", None)
        decoder_inputs_embeds = kwargs.pop("decoder_inputs_embeds", None)
        encoder_outputs = kwargs.pop("encoder_outputs", None)
        use_cache = kwargs.pop("use_cache", None)
        flags = {"output_hidden_states": want_hidden}
        if kwargs.get("output_attentions") is not None:
            flags["output_attentions"] = kwargs.pop("output_attentions")
        kwargs.pop("output_attentions", None)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=kwargs.pop("input_ids", None),
                attention_mask=attention_mask,
                inputs_embeds=kwargs.pop("inputs_embeds", None),
                return_dict=True,
                **flags,
                # decoding positions (transformers < 5.24 passes cache_position) are the decoder's
                **{k: v for k, v in kwargs.items() if k != "cache_position"},
            )
        elif not isinstance(encoder_outputs, ModelOutput):  # a tuple: (last, hidden states, attentions)
            encoder_outputs = BaseModelOutput(*encoder_outputs[:3])
        kwargs.pop("input_ids", None)
        kwargs.pop("inputs_embeds", None)
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self._shift_right(labels)  # teacher forcing, as T5 does
        decoder_cache = {cache_argument_name(self.decoder.forward) or "cache": cache} if cache is not None else {}
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=kwargs.pop("decoder_attention_mask", None),
            inputs_embeds=decoder_inputs_embeds,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            use_cache=use_cache,
            return_dict=True,
            **decoder_cache,
            **flags,
            **kwargs,
        )
        last_hidden_state = decoder_outputs.last_hidden_state  # (B, T, d_model)
        # the tied LM head reads the decoder output scaled by d_model**-0.5 (Mesh TF's T5); the
        # config field says so on transformers >= 5.24, tie_word_embeddings before
        scale = getattr(self.config, "scale_decoder_outputs", self.config.tie_word_embeddings)
        logits = self.lm_head(last_hidden_state * self.model_dim**-0.5 if scale else last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.to(logits.device).view(-1), ignore_index=-100)
        output = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            **{CACHE_FIELD: getattr(decoder_outputs, CACHE_FIELD, None)},
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )
        return output, last_hidden_state


AutoConfig.register(T5WithValueHeadConfig.model_type, T5WithValueHeadConfig, exist_ok=True)
AutoModelForSeq2SeqLM.register(T5WithValueHeadConfig, T5HeadWithValueModel, exist_ok=True)


class T5PseudoDecWithValueHead(ValueHeadMixin, T5PseudoDecForConditionalGeneration):
    """:class:`~t5lab.models.pseudo_decoder.T5PseudoDecForConditionalGeneration` with a value head.

    ``value``: ``(B, decoder_len)``, in both the seq2seq and the causal-LM mode.
    """

    config_class = T5PseudoDecWithValueHeadConfig
    config: T5PseudoDecWithValueHeadConfig


AutoConfig.register(T5PseudoDecWithValueHeadConfig.model_type, T5PseudoDecWithValueHeadConfig, exist_ok=True)
AutoModelForSeq2SeqLM.register(T5PseudoDecWithValueHeadConfig, T5PseudoDecWithValueHead, exist_ok=True)


class T5DecoderOnlyWithValueHead(ValueHeadMixin, T5DecoderOnlyForCausalLM):
    """:class:`~t5lab.models.decoder_only.T5DecoderOnlyForCausalLM` with a value head; ``value``: ``(B, seq_len)``."""

    config_class = T5DecoderOnlyWithValueHeadConfig
    config: T5DecoderOnlyWithValueHeadConfig


AutoConfig.register(T5DecoderOnlyWithValueHeadConfig.model_type, T5DecoderOnlyWithValueHeadConfig, exist_ok=True)
AutoModelForCausalLM.register(T5DecoderOnlyWithValueHeadConfig, T5DecoderOnlyWithValueHead, exist_ok=True)
